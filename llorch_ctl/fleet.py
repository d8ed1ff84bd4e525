"""`llorch fleet apply [--watch] [--dry-run]`: carry out orchestratord's plan over SSH (FLT-040..).

No decisions here: orchestratord's `GET /v2/fleet/plan` lists the actions, each one becomes the
precise command an operator would type (`llorch-pool models import|download`, `worker spawn`,
`worker stop`) or the drain call, run in the plan's order. Each action is leased from
orchestratord first, so two applies at once never run the same action; each is printed with
its reason and its result. A failed action is reported back (the next plan offers it again)
and makes the exit status 1. An action `after` another runs only when this pass did that one:
the actions that depend on a failed one, or on one another apply holds, are skipped.

    plan = FleetApi(url, admin_token).plan()
    results = apply_plan(plan, api, runner, holder=..., dry_run=False, echo=print)
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from llorch_ctl.errors import ApiFailed, CtlError, HttpUnreachable

Outcome = Literal["done", "failed", "skipped", "would"]
LEASE_TTL_S = 600  # longer than the slowest spawn (llorch-pool waits 120 s for ready) or download


@dataclass(frozen=True)
class Result:
    action_id: str
    outcome: Outcome
    detail: str
    pool: str | None = None  # where a spawn or stop that was done changed the free memory


class FleetApi:
    """orchestratord's admin endpoints (fleet, drain, policy), with the admin token; failures
    are CtlErrors, a 401/403 naming the flag and variable that give the token (CTL-090)."""

    def __init__(self, url: str, admin_token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            r = self._http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise HttpUnreachable(f"cannot reach orchestratord at {self.url}: {e}") from None
        if r.status_code >= 400:
            code: str | None = None
            try:
                problem = r.json()
                if isinstance(problem.get("code"), str):
                    code = problem["code"]
                detail = f"{problem.get('code', r.status_code)}: {problem.get('detail', '')}"
            except (ValueError, AttributeError):
                detail = f"HTTP {r.status_code}"
            if r.status_code in (401, 403):
                raise ApiFailed(
                    f"orchestratord {method} {path}: {detail}; this command takes "
                    "--admin-token or LLORCH_ADMIN_TOKEN",
                    status=r.status_code,
                    code=code,
                )
            raise ApiFailed(
                f"orchestratord {method} {path}: {detail}", status=r.status_code, code=code
            )
        return r.json() if r.content else None

    def plan(self, *, replace_misplaced: bool = False) -> dict[str, Any]:
        body = self._call("GET", "/v2/fleet/plan" + _misplaced_query(replace_misplaced))
        if not isinstance(body, dict) or not isinstance(body.get("actions"), list):
            raise ApiFailed("orchestratord returned a plan without an actions list")
        return body

    def lease(self, action_id: str, holder: str, *, replace_misplaced: bool = False) -> bool:
        """True when leased to us; False when another apply holds it or the plan moved on."""
        try:
            self._call(
                "POST",
                f"/v2/fleet/actions/{_quote(action_id)}/lease"
                + _misplaced_query(replace_misplaced),
                {"holder": holder, "ttl_s": LEASE_TTL_S},
            )
        except ApiFailed as e:
            # Told apart by the answer's status and problem code, never its text (CTL-111): the
            # text names the action, whose pool or worker may be called anything.
            if (e.status, e.code) in ((409, "CONFLICT"), (404, "NOT_FOUND")):
                return False
            raise
        return True

    def report(self, action_id: str, holder: str, ok: bool, detail: str) -> None:
        self._call(
            "POST",
            f"/v2/fleet/actions/{_quote(action_id)}/result",
            {"holder": holder, "ok": ok, "detail": detail[:1000]},
        )

    def drain(self, worker_id: str) -> Any:
        """The worker as GET /v2/workers lists it, now draining (or drained)."""
        return self._call("POST", f"/v2/workers/{_quote(worker_id)}/drain")

    def undrain(self, worker_id: str) -> Any:
        return self._call("POST", f"/v2/workers/{_quote(worker_id)}/undrain")

    def policy(self) -> Any:
        return self._call("GET", "/v2/admin/policy")

    def set_policy(self, source: str, name: str) -> Any:
        return self._call("POST", "/v2/admin/policy", {"source": source, "name": name})

    def check_policy(self, source: str, name: str) -> Any:
        return self._call("POST", "/v2/admin/policy/check", {"source": source, "name": name})

    def fleet(self) -> Any:
        return self._call("GET", "/v2/fleet")

    def put_fleet(self, body: Mapping[str, Any]) -> Any:
        return self._call("PUT", "/v2/fleet", body)

    def report_pool(self, pool: str, facts: Mapping[str, Any]) -> None:
        """A pool's memory and model sizes, for the plan's placement (FLT-065)."""
        self._call("PUT", f"/v2/fleet/pools/{_quote(pool)}", facts)


def _misplaced_query(replace: bool) -> str:
    return "?replace_misplaced=true" if replace else ""


def _quote(segment: str) -> str:
    return httpx.URL("/" + segment).raw_path.decode()[1:].replace("/", "%2F")


PoolRunner = Callable[[str, Sequence[str]], tuple[int, str, str]]
"""Runs `llorch-pool ARGV` on a pool: (exit status, stdout, stderr)."""


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def spawn_argv(action: Mapping[str, Any], orchestrator_url: str, bind_host: str) -> list[str]:
    """`llorch-pool worker spawn ...` for a spawn action: the worker listens on the address the
    pool is reached at, registers with the orchestrator URL apply uses, and reports the
    inventory's pool name, which the plan places replicas by."""
    # ctx 0 is the worker's own default; anything else is the desired state's context length.
    ctx = int(action.get("ctx") or 0)
    return [
        "worker",
        "spawn",
        str(action["backend"]),
        "--model",
        str(action["model"]),
        "--slots",
        str(action["slots"]),
        "--worker-id",
        str(action["worker_id"]),
        "--host",
        bind_host,
        "--orchestrator-url",
        orchestrator_url,
        *(["--n-ctx", str(ctx)] if ctx > 0 else []),
        "--pool",
        str(action["pool"]),
        "--json",
    ]


def source_argv(action: Mapping[str, Any]) -> list[str] | None:
    """The command that puts the model into a pool's catalog, or None for a catalog source."""
    kind, _, value = str(action["source"]).partition(":")
    if kind == "hf":
        return ["models", "download", value, "--id", str(action["model"]), "--json"]
    if kind == "file":
        return ["models", "import", value, "--id", str(action["model"]), "--json"]
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _ensure_model(
    action: Mapping[str, Any], run: PoolRunner, catalogs: Mapping[str, Collection[str]]
) -> tuple[bool, str]:
    pool, model = str(action["pool"]), str(action["model"])
    if model in catalogs.get(pool, ()):
        # This pass's memory report listed the pool's catalog: one SSH round trip fewer.
        return True, f"{model} is already in {pool}'s catalog"
    status, out, err = run(pool, ["models", "list", "--json"])
    if status != 0:
        return False, f"models list exited {status}: {_last_line(err)}"
    try:
        present = {m.get("id") for m in json.loads(out).get("models", [])}
    except (ValueError, AttributeError):
        return False, "models list printed no JSON catalog"
    if model in present:
        return True, f"{model} is already in {pool}'s catalog"
    argv = source_argv(action)
    if argv is None:
        return False, f"{model} is not in {pool}'s catalog and its source is the catalog"
    status, out, err = run(pool, argv)
    if status != 0:
        return False, f"{' '.join(argv[:2])} exited {status}: {_last_line(err)}"
    return True, f"{argv[1]}ed {model} from {action['source']}"


def execute(
    action: Mapping[str, Any],
    api: FleetApi,
    run: PoolRunner,
    orchestrator_url: str,
    bind_host: Callable[[str], str],
    catalogs: Mapping[str, Collection[str]] | None = None,
) -> tuple[bool, str]:
    """Run one action; (ok, what happened). `catalogs`: the model ids each pool's memory
    report of this pass listed."""
    kind = action["kind"]
    if kind == "ensure_model":
        return _ensure_model(action, run, catalogs or {})
    if kind == "drain":
        api.drain(str(action["worker_id"]))
        return True, f"drain of {action['worker_id']} requested"
    if kind == "spawn":
        argv = spawn_argv(action, orchestrator_url, bind_host(str(action["pool"])))
        status, out, err = run(str(action["pool"]), argv)
        if status != 0:
            return False, f"worker spawn exited {status}: {_last_line(err)}"
        try:
            url = json.loads(out).get("url", "?")
        except (ValueError, AttributeError):
            url = "?"
        return True, f"spawned {action['worker_id']} at {url}"
    if kind == "stop":
        status, _, err = run(str(action["pool"]), ["worker", "stop", str(action["worker_id"])])
        if status != 0:
            return False, f"worker stop exited {status}: {_last_line(err)}"
        return True, f"stopped {action['worker_id']}"
    return False, f"unknown action kind {kind!r} (a newer orchestratord?)"


def describe(action: Mapping[str, Any]) -> str:
    what = {
        "ensure_model": f"ensure model {action['model']} on {action['pool']}",
        "spawn": f"spawn {action['worker_id']} ({action['model']}) on {action['pool']}",
        "drain": f"drain {action['worker_id']} on {action['pool']}",
        "stop": f"stop {action['worker_id']} on {action['pool']}",
    }.get(str(action["kind"]), f"{action['kind']} {action['id']}")
    return f"{what}: {action['reason']}"


def apply_plan(
    plan: Mapping[str, Any],
    api: FleetApi,
    run: PoolRunner,
    *,
    holder: str,
    orchestrator_url: str,
    bind_host: Callable[[str], str],
    dry_run: bool,
    echo: Callable[[str], None],
    known_pools: Collection[str] | None = None,
    replace_misplaced: bool = False,
    catalogs: Mapping[str, Collection[str]] | None = None,
) -> list[Result]:
    """Lease, run and report each action of `plan` in order; print one line per action.

    A stop on a pool the inventory does not know (`known_pools`) is skipped, not failed: the
    worker was spawned by hand where this apply cannot reach (CTL-101)."""
    results: list[Result] = []
    succeeded: set[str] = set()
    for action in plan["actions"]:
        aid = str(action["id"])
        line = describe(action)
        if dry_run:
            echo(f"would {line}")
            results.append(Result(aid, "would", line))
            continue
        pool = str(action["pool"])
        if action["kind"] == "stop" and known_pools is not None and pool not in known_pools:
            detail = f"pool {pool!r} is not in the inventory: stop {action['worker_id']} there"
            echo(f"skip {line} ({detail})")
            results.append(Result(aid, "skipped", detail))
            continue
        lease = action.get("lease")
        if lease and (lease.get("done") or lease.get("holder") != holder):
            why = "done" if lease.get("done") else "in progress"
            detail = f"{why} by {lease.get('holder')}"
            echo(f"skip {line} ({detail})")
            results.append(Result(aid, "skipped", detail))
            continue
        after = action.get("after")
        if after and after not in succeeded:
            # Only what this pass itself did is known to be done: another apply may still be
            # running it (a spawn before its model is imported would fail), or it failed.
            detail = f"{after} was not done by this apply"
            echo(f"skip {line} ({detail})")
            results.append(Result(aid, "skipped", detail))
            continue
        if not api.lease(aid, holder, replace_misplaced=replace_misplaced):
            echo(f"skip {line} (leased by another apply)")
            results.append(Result(aid, "skipped", "leased by another apply"))
            continue
        echo(f"run  {line}")
        try:
            ok, detail = execute(action, api, run, orchestrator_url, bind_host, catalogs)
        except CtlError as e:
            ok, detail = False, e.message
        api.report(aid, holder, ok, detail)
        if ok:
            succeeded.add(aid)
        echo(f"{'ok  ' if ok else 'FAIL'} {aid}: {detail}")
        changed = pool if ok and action["kind"] in ("spawn", "stop") else None
        results.append(Result(aid, "done" if ok else "failed", detail, changed))
    return results


def _placement_notes(plan: Mapping[str, Any], replace_misplaced: bool) -> list[str]:
    """One line per misplaced replica and per model the plan could not place (FLT-060,
    FLT-066), as `fleet apply` prints them."""
    out: list[str] = []
    for m in plan.get("models", []):
        pools = ", ".join(
            plan.get("fleet", {}).get("models", {}).get(m["model"], {}).get("pools", [])
        )
        for wid in m.get("misplaced", []):
            then = "being replaced" if replace_misplaced else "--replace-misplaced replaces it"
            out.append(f"misplaced {wid} ({m['model']}): not on its pools [{pools}]; {then}")
        for why in m.get("unplaced", []):
            out.append(f"unplaced {m['model']}: {why}")
    return out


PROBE_FRESH_S = 30.0
"""A pool's memory report younger than this is placed by as is: a cold start does not wait
for a probe that an idle pass of --watch made a moment ago."""


@dataclass
class Probes:
    """The memory reports this apply made: when, and the catalog each listed."""

    at: dict[str, float] = field(default_factory=dict)
    catalogs: dict[str, set[str]] = field(default_factory=dict)

    def forget(self, pool: str) -> None:
        """A replica started or stopped there: its free memory is no longer what was said."""
        self.at.pop(pool, None)
        self.catalogs.pop(pool, None)


def _probe(
    pool: str, api: FleetApi, run: PoolRunner, echo: Callable[[str], None]
) -> set[str] | None:
    try:
        status, out, err = run(pool, ["backends", "--memory"])
    except CtlError as e:
        echo(f"skip memory of {pool}: {e.message}")
        return None
    if status != 0:
        echo(f"skip memory of {pool}: backends --memory exited {status}: {_last_line(err)}")
        return None
    try:
        body = json.loads(out)
        facts = {**body["memory"], "models": body["models"]}
    except (ValueError, KeyError, TypeError):
        echo(f"skip memory of {pool}: backends --memory printed no memory report")
        return None
    api.report_pool(pool, {k: v for k, v in facts.items() if v is not None})
    return {str(m) for m in body["models"]}


def probe_pools(
    plan: Mapping[str, Any],
    api: FleetApi,
    run: PoolRunner,
    known_pools: Collection[str] | None,
    echo: Callable[[str], None],
    probes: Probes | None = None,
    *,
    now: Callable[[], float] = time.monotonic,
    refresh_one: bool = False,
) -> tuple[bool, dict[str, set[str]]]:
    """Before a replica is placed (a spawn planned, or one the plan could not place), report
    the memory and model sizes of the model's desired pools, as `llorch-pool backends
    --memory` prints them, so the plan places by them (FLT-065, CTL-102); a report younger
    than PROBE_FRESH_S is not made again. With `refresh_one` and nothing to place, the
    stalest of the fleet's pools is probed (--watch keeps the reports fresh when idle, so
    a cold start rarely waits for one). Returns (whether a report was sent, each probed
    pool's catalog); a pool that cannot be asked is said and skipped."""
    probes = probes if probes is not None else Probes()
    wanted = {str(a["model"]) for a in plan["actions"] if a["kind"] == "spawn"}
    wanted |= {str(m["model"]) for m in plan.get("models", []) if m.get("unplaced")}
    fleet_models = plan.get("fleet", {}).get("models", {})

    def reachable(models: Collection[str]) -> list[str]:
        out: list[str] = []
        for model in sorted(models):
            for pool in fleet_models.get(model, {}).get("pools", []):
                if pool not in out and (known_pools is None or pool in known_pools):
                    out.append(pool)
        return out

    t = now()
    stale = [p for p in reachable(wanted) if t - probes.at.get(p, -1e18) >= PROBE_FRESH_S]
    if not wanted and refresh_one:
        idle = [p for p in reachable(fleet_models) if t - probes.at.get(p, -1e18) >= PROBE_FRESH_S]
        stale = sorted(idle, key=lambda p: probes.at.get(p, -1e18))[:1]
    sent = False
    for pool in stale:
        catalog = _probe(pool, api, run, echo)
        if catalog is not None:
            probes.at[pool], probes.catalogs[pool] = now(), catalog
            sent = True
    return sent, {p: probes.catalogs[p] for p in reachable(wanted) if p in probes.catalogs}


def apply_loop(
    api: FleetApi,
    run: PoolRunner,
    *,
    orchestrator_url: str,
    bind_host: Callable[[str], str],
    dry_run: bool,
    watch: bool,
    interval_s: float,
    echo: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    known_pools: Collection[str] | None = None,
    replace_misplaced: bool = False,
    probe_memory: bool = True,
) -> int:
    """One pass, or with `watch` one pass every interval until interrupted. Exit status: 1
    when an action of the (last) pass failed, else 0."""
    holder = holder_id()
    said: set[str] = set()
    probes = Probes()
    while True:
        plan = api.plan(replace_misplaced=replace_misplaced)
        catalogs: dict[str, set[str]] = {}
        if probe_memory and not dry_run:
            sent, catalogs = probe_pools(
                plan, api, run, known_pools, echo, probes, refresh_one=watch
            )
            if sent:
                plan = api.plan(replace_misplaced=replace_misplaced)
        notes = _placement_notes(plan, replace_misplaced)
        for note in notes:
            if note not in said:  # --watch says each once, not every pass
                echo(note)
        said = set(notes)
        if not plan["actions"]:
            echo("nothing to do: the fleet matches the plan")
        results = apply_plan(
            plan,
            api,
            run,
            holder=holder,
            orchestrator_url=orchestrator_url,
            bind_host=bind_host,
            dry_run=dry_run,
            echo=echo,
            known_pools=known_pools,
            replace_misplaced=replace_misplaced,
            catalogs=catalogs,
        )
        for r in results:
            if r.outcome == "done" and r.pool is not None:
                probes.forget(r.pool)  # a spawn or stop changed its free memory
        status = 1 if any(r.outcome == "failed" for r in results) else 0
        if not watch:
            return status
        sleep(interval_s)
