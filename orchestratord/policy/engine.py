"""orchestratord's admission and scheduling policies, written in Starlark (specs/policy.md).

    engine = PolicyEngine.from_file(path)            # None: the built-in policies/default.star
    engine.admit(task, cluster) -> AdmitDecision      # never raises
    engine.schedule(task, workers, cluster) -> worker id | None   # never raises
    engine.plan(fleet, cluster) -> PlanDecision       # never raises (specs/fleet.md)
    holder = PolicyHolder(engine); holder.reload()    # SIGHUP / POST /v2/admin/policy

One engine is one read of the policy file: its admit, schedule and plan (each the file's own
or the built-in one) always come from the same version. Loading validates (parse, lint,
signatures, a dry run); a file that fails raises PolicyError and the running policy stays.
At run time every call has a time budget; an error, an overrun or a bad return value falls
back to the built-in policy for that call, is reported to the observer, and is logged once per
distinct problem. The engine is pure: no I/O after loading, the clock is passed in. It does
not choose its thread: the runtime runs the policy's own code off the event loop
(runtime/policy_calls.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import json.encoder
import logging
import operator
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TypeVar

from orchestratord.policy.checks import (
    CallFailed,
    admit_decision,
    dry_run_inputs,
    worker_choice,
)
from orchestratord.policy.compile import (
    SIGNATURES,
    CompiledPolicy,
    call_budgeted,
    compile_policy,
)
from orchestratord.policy.fleet_plan import (
    ClusterInput,
    FleetInput,
    PlanDecision,
    check_decision,
    dry_run_input,
    keep_current,
)
from orchestratord.policy.types import (
    ACCEPT,
    CLUSTER_KEYS,
    TASK_KEYS,
    WORKER_KEYS,
    AdmitDecision,
    ClusterView,
    FallbackReason,
    PolicyError,
    PolicyFunction,
    PolicyObserver,
    TaskView,
    WorkerView,
)

__all__ = [
    "AdmitDecision",
    "ClusterView",
    "PolicyEngine",
    "PolicyError",
    "PolicyHolder",
    "PolicyObserver",
    "TaskView",
    "WorkerView",
    "builtin_source",
]

log = logging.getLogger("llorch.policy")
Clock = Callable[[], float]
T = TypeVar("T")
_MAX_LOGGED = 64  # distinct fallback messages logged per engine; a policy can't flood the log


def _compact_encoder() -> Callable[[object], str]:
    """Compact JSON without NaN: JSONEncoder.encode, less what it rebuilds on every call (the
    C encoder and the circular check's memo; a cycle raises RecursionError instead)."""
    python = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)  # CPython's _json; not in typeshed
    if make is None:  # pragma: no cover - CPython always has it
        return python.encode
    c_encode = make(
        None,
        python.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
    return lambda value: "".join(c_encode(value, 0))


_encode = _compact_encoder()


def _task_and_cluster(task: TaskView, cluster: ClusterView) -> str:
    """The JSON of `[task, cluster]`: admit's whole payload, and the head of schedule's."""
    return _encode([_task_row(task), _cluster_row(cluster)])


# What a caller's inputs may raise when encoded: a missing field, a value JSON cannot hold.
_BAD_INPUT = (KeyError, TypeError, ValueError, RecursionError)
# The rows the adapter turns back into dicts (compile._adapter_source): exactly the documented
# fields, whatever else the caller's mappings hold (POL-024).
_task_row = operator.itemgetter(*TASK_KEYS)
_worker_row = operator.itemgetter(*WORKER_KEYS)
_cluster_row = operator.itemgetter(*CLUSTER_KEYS)
_LISTS = ("recent_sessions", "recent_prefixes")
assert WORKER_KEYS[-len(_LISTS) :] == _LISTS  # the row cache's key relies on it
_END = object()  # ends the first list in a row's key; no policy input is this object
_MAX_CACHED_ROWS = 4096  # the encoded-row cache is emptied when it grows past this


def builtin_source() -> str:
    """The text of the built-in policy (orchestratord/policies/default.star)."""
    return (resources.files("orchestratord") / "policies" / "default.star").read_text("utf-8")


def builtin_plan_source() -> str:
    """The text of the built-in plan() (orchestratord/policies/plan.star, specs/fleet.md)."""
    return (resources.files("orchestratord") / "policies" / "plan.star").read_text("utf-8")


def _compile_builtin_plan(clock: Clock) -> CompiledPolicy:
    return compile_policy(builtin_plan_source(), "plan.star", clock=clock, budget_s=10.0)


class _NoObserver:
    def observe(self, fn: str, seconds: float) -> None:
        pass

    def fallback(self, fn: str, reason: str) -> None:
        pass


class PolicyEngine:
    """A loaded, validated policy plus the built-in one it falls back to. Immutable."""

    def __init__(
        self,
        policy: CompiledPolicy,
        builtin: CompiledPolicy,
        *,
        builtin_plan: CompiledPolicy | None = None,
        path: Path | None,
        sha256: str,
        budget_ms: float,
        observer: PolicyObserver | None,
        clock: Clock,
    ) -> None:
        self._policy = policy
        self._builtin = builtin
        self._builtins: dict[PolicyFunction, CompiledPolicy] = {
            "admit": builtin,
            "schedule": builtin,
            "plan": builtin_plan or _compile_builtin_plan(clock),
        }
        self.path = path
        self.sha256 = sha256
        self.source = ""  # the Starlark text installed (ORCH-371), set by from_source
        self.loaded_ms = 0  # wall clock of the load, unix ms (ORCH-371)
        self.budget_ms = budget_ms
        self.observer: PolicyObserver = observer or _NoObserver()
        self.clock = clock
        self._logged: set[tuple[str, str, str]] = set()
        # A worker row's key (_schedule_payload) -> its JSON text: a cache of encodings, which never
        # changes what a policy sees, so the engine still keeps no state of consequence.
        self._encoded_rows: dict[tuple[object, ...], str] = {}
        # POL-041: the built-in admit accepts every task, so for the built-in policy itself and
        # for a policy without an admit of its own the answer is known without encoding the
        # inputs and calling Starlark. Checked here on the dry-run inputs: a built-in that
        # stopped accepting everything is called again.
        builtin_admit = policy.adapter is builtin.adapter or "admit" not in policy.defines
        self._builtin_accepts = self._builtin_accepts_all()
        self._accepts_all = builtin_admit and self._builtin_accepts

    @property
    def name(self) -> str:
        return self._policy.name

    @property
    def defines(self) -> frozenset[PolicyFunction]:
        """The functions the policy file itself defines; the rest come from the built-in."""
        return self._policy.defines

    @property
    def warnings(self) -> tuple[str, ...]:
        """Lint warnings found while loading (errors are fatal and raise PolicyError)."""
        return self._policy.warnings

    @classmethod
    def from_file(
        cls,
        path: Path | None,
        *,
        budget_ms: float = 50.0,
        observer: PolicyObserver | None = None,
        clock: Clock = time.perf_counter,
    ) -> PolicyEngine:
        """Load and validate a policy file; None loads the built-in default policy."""
        if path is None:
            source, name = builtin_source(), "default.star"
        else:
            try:
                source = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise PolicyError(str(path), [f"cannot read the file: {e}"]) from None
            name = str(path)
        engine = cls.from_source(
            source, name=name, budget_ms=budget_ms, observer=observer, clock=clock
        )
        engine.path = path
        return engine

    @classmethod
    def from_source(
        cls,
        src: str,
        *,
        name: str = "<inline>",
        budget_ms: float = 50.0,
        observer: PolicyObserver | None = None,
        clock: Clock = time.perf_counter,
    ) -> PolicyEngine:
        """Compile and validate Starlark source: parse, lint, signatures, dry run.

        Raises PolicyError listing what is wrong; lint warnings are kept in `.warnings`.
        """
        if not budget_ms > 0:
            raise PolicyError(name, [f"budget_ms must be > 0, got {budget_ms}"])
        # Loading may take longer than one call (compiling, a cold first run); it checks
        # that the policy works, while the latency histogram shows how fast it is.
        load_budget_s = max(1.0, budget_ms / 100)
        builtin = compile_policy(builtin_source(), "default.star", clock=clock, budget_s=10.0)
        if src == builtin_source():  # the built-in itself (`from_file(None)`): one compile
            policy = dataclasses.replace(builtin, name=name)
        else:
            policy = compile_policy(src, name, clock=clock, budget_s=load_budget_s)
        engine = cls(
            policy,
            builtin,
            path=None,
            sha256=hashlib.sha256(src.encode()).hexdigest(),
            budget_ms=budget_ms,
            observer=observer,
            clock=clock,
        )
        engine._dry_run(load_budget_s)
        engine.source, engine.loaded_ms = src, int(time.time() * 1000)
        for warning in policy.warnings:
            log.warning("policy lint: %s", warning)
        return engine

    # -- calls ---------------------------------------------------------------------------

    def own(self, fn: PolicyFunction) -> bool:
        """Whether calls of `fn` run the policy file's own code, which may be slow: the
        built-in functions are ours and bounded, and an admit known to accept everything is
        not called at all (POL-041)."""
        if fn == "admit":
            return not self._accepts_all
        # The built-in policy defines its functions too, but they are the built-in ones: the
        # default policy answers inline, with no thread hop per scheduling pass (POL-090).
        return fn in self._policy.defines and self._policy.adapter is not self._builtin.adapter

    def admit(self, task: TaskView, cluster: ClusterView) -> AdmitDecision:
        """Decide whether to queue `task`. Never raises."""
        return self.admit_checked(task, cluster)[0]

    def schedule(
        self, task: TaskView, workers: Sequence[WorkerView], cluster: ClusterView
    ) -> str | None:
        """The id of the worker to run `task` on, or None to keep it queued. Never raises."""
        return self.schedule_checked(task, workers, cluster)[0]

    def admit_checked(
        self, task: TaskView, cluster: ClusterView, *, builtin: bool = False
    ) -> tuple[AdmitDecision, FallbackReason | None]:
        """admit(), and why the policy's own admit fell back (None: it did not). `builtin`
        asks the built-in admit only (the runtime's breaker is open)."""
        start = self.clock()
        try:
            return self._admit(task, cluster, not builtin)
        except Exception:  # a bug of ours must not fail the request either
            log.exception("policy engine failed in admit(); accepting the task")
            return ACCEPT, None
        finally:
            self.observer.observe("admit", self.clock() - start)

    def schedule_checked(
        self,
        task: TaskView,
        workers: Sequence[WorkerView],
        cluster: ClusterView,
        *,
        builtin: bool = False,
    ) -> tuple[str | None, FallbackReason | None]:
        """schedule(), and why the policy's own schedule fell back (None: it did not)."""
        start = self.clock()
        try:
            return self._schedule(task, workers, cluster, not builtin)
        except Exception:  # a bug of ours must not stop scheduling either
            log.exception("policy engine failed in schedule(); keeping the task queued")
            return None, None
        finally:
            self.observer.observe("schedule", self.clock() - start)

    def plan(self, fleet: FleetInput, cluster: ClusterInput) -> PlanDecision:
        """Replicas per model of the fleet, with reasons (specs/fleet.md FLT-010, FLT-011).
        Never raises: when even the built-in plan fails (a bug of ours), every model keeps its
        current count."""
        start = self.clock()
        try:
            payload = _encode([fleet, cluster])
            (replicas, reasons), reason = self._decide(
                "plan", payload, lambda v: check_decision(v, fleet), True
            )
            return PlanDecision(
                replicas, reasons, "policy" if self.own("plan") and reason is None else "builtin"
            )
        except (CallFailed, *_BAD_INPUT) as e:
            self._log_once("plan", "builtin", f"built-in plan failed: {e}")
            return keep_current(fleet, cluster)
        finally:
            self.observer.observe("plan", self.clock() - start)

    def _decide(
        self, fn: PolicyFunction, payload: str, check: Callable[[object], T], use_policy: bool
    ) -> tuple[T, FallbackReason | None]:
        """The policy's answer, checked; on an error, an overrun or a bad value the built-in
        function's answer and why. Raises CallFailed only when the built-in fails too."""
        reason: FallbackReason | None = None
        if use_policy and fn in self._policy.defines:
            try:
                return check(self._call(self._policy, fn, payload, self.budget_ms)), None
            except CallFailed as failed:
                self._fall_back(fn, failed.reason, failed.message)
                reason = failed.reason
        return check(self._call(self._builtins[fn], fn, payload, None)), reason

    def _admit(
        self, task: TaskView, cluster: ClusterView, use_policy: bool
    ) -> tuple[AdmitDecision, FallbackReason | None]:
        if self._accepts_all or (not use_policy and self._builtin_accepts):
            return ACCEPT, None
        try:
            payload = _task_and_cluster(task, cluster)
        except _BAD_INPUT as e:
            self._fall_back("admit", "bad_input", f"cannot pass the task to the policy: {e!r}")
            return ACCEPT, "bad_input"
        try:
            return self._decide("admit", payload, admit_decision, use_policy)
        except CallFailed as failed:
            self._log_once("admit", "builtin", f"built-in admit failed: {failed.message}")
            return ACCEPT, None

    def _schedule(
        self,
        task: TaskView,
        workers: Sequence[WorkerView],
        cluster: ClusterView,
        use_policy: bool,
    ) -> tuple[str | None, FallbackReason | None]:
        try:
            payload = self._schedule_payload(task, workers, cluster)
        except _BAD_INPUT as e:
            self._fall_back("schedule", "bad_input", f"cannot pass the inputs to the policy: {e!r}")
            return None, "bad_input"
        try:
            return self._decide(
                "schedule", payload, lambda v: worker_choice(v, task, workers), use_policy
            )
        except CallFailed as failed:
            self._log_once("schedule", "builtin", f"built-in schedule failed: {failed.message}")
            return None, None

    def _schedule_payload(
        self, task: TaskView, workers: Sequence[WorkerView], cluster: ClusterView
    ) -> str:
        """The JSON of schedule()'s inputs. A worker's row is encoded once and its text reused
        while the row stays the same: most of a fleet does not change from one decision to the
        next, and encoding the rows is most of the Python side of a decision (POL-080)."""
        cached = self._encoded_rows
        if len(cached) > _MAX_CACHED_ROWS:
            cached.clear()
        encoded = []
        for w in workers:
            row = _worker_row(w)
            try:
                # What decides the row's JSON: its scalars, the types of all its fields (1,
                # 1.0 and True are equal but encode differently), the strings of its two
                # lists with a marker between them. (Inline: this loop is the hot path.)
                key = (row[:-2], *map(type, row), *row[-2], _END, *row[-1])
                text = cached.get(key)
            except TypeError:  # an unhashable value where the policy expects a string
                key, text = None, None
            if text is None:
                text = _encode(row)
                if key is not None:
                    cached[key] = text
            encoded.append(text)
        # [task, cluster, workers]: the first two encoded in one go, the rows spliced in.
        head = _task_and_cluster(task, cluster)
        return f"{head[:-1]},[{','.join(encoded)}]]"

    def _call(
        self, policy: CompiledPolicy, fn: PolicyFunction, payload: str, budget_ms: float | None
    ) -> object:
        """Run one adapter function; raise CallFailed on an error or an overrun."""
        return call_budgeted(policy.adapter, fn, payload, budget_ms, self.clock)

    def _fall_back(self, fn: PolicyFunction, reason: FallbackReason, message: str) -> None:
        self.observer.fallback(fn, reason)
        self._log_once(fn, reason, f"{self.name}: {fn}() {message}; used the built-in {fn}")

    def _log_once(self, fn: str, reason: str, message: str) -> None:
        key = (fn, reason, message)
        if key in self._logged or len(self._logged) > _MAX_LOGGED:
            return
        self._logged.add(key)
        if len(self._logged) > _MAX_LOGGED:
            log.warning("policy %s: too many distinct fallbacks; no more are logged", self.name)
        else:
            log.warning("policy fallback (%s): %s", reason, message)

    # -- validation ----------------------------------------------------------------------

    def _builtin_accepts_all(self) -> bool:
        for task, _workers, cluster in dry_run_inputs().values():
            payload = _task_and_cluster(task, cluster)
            try:
                decision = admit_decision(self._call(self._builtin, "admit", payload, None))
            except CallFailed:
                return False
            if decision != ACCEPT:
                return False
        return True

    def _dry_run(self, budget_s: float) -> None:
        """Call each function the policy defines on synthetic inputs; PolicyError if one fails."""
        problems = []
        cases = dry_run_inputs()
        budget_ms = budget_s * 1000
        for fn in sorted(self._policy.defines):
            call = f"{fn}({', '.join(SIGNATURES[fn])})"
            if fn == "plan":
                fleet, load = dry_run_input()
                try:
                    value = self._call(self._policy, fn, _encode([fleet, load]), budget_ms)
                    check_decision(value, fleet)
                except CallFailed as failed:
                    problems.append(f"dry run of {call} failed: {failed.message}")
                continue
            for case, (task, workers, cluster) in cases.items():
                try:
                    if fn == "admit":
                        payload = _task_and_cluster(task, cluster)
                        admit_decision(self._call(self._policy, fn, payload, budget_ms))
                    else:
                        payload = self._schedule_payload(task, workers, cluster)
                        value = self._call(self._policy, fn, payload, budget_ms)
                        worker_choice(value, task, workers)
                except CallFailed as failed:
                    problems.append(f"dry run of {call} with {case} failed: {failed.message}")
                    break  # one failure per function says enough
        if problems:
            raise PolicyError(self.name, problems)


class PolicyHolder:
    """The running policy, swapped whole: a reload validates first and swaps only on success.

    Callers go through the holder (`holder.admit`, `holder.schedule`) or take
    `holder.engine` once per decision; an engine is immutable, so a call that started on the
    old policy finishes on it. The engine is the one reference to the running policy: its
    admit, schedule and plan change together (POL-074). Reloads run one at a time, each from
    its read of the file to its swap, so two reloads (SIGHUP, the admin endpoint) never
    interleave and the last to start is the one that stays (POL-075). They block: call them
    off the event loop.
    """

    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine
        self._path = engine.path  # the file reload() re-reads: --policy, or None (built-in)
        self._reloading = threading.Lock()

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    def replace(self, engine: PolicyEngine) -> PolicyEngine:
        """Install an already validated engine; returns the one it replaced."""
        old, self._engine = self._engine, engine
        return old

    def reload(self, path: Path | None = None) -> PolicyEngine:
        """Re-read the policy file and swap it in (SIGHUP).

        The file is `path` when given (it then becomes the one later reloads read), else the
        file the holder was started with, else the built-in policy; a policy installed with
        reload_source() is replaced. Raises PolicyError and keeps the running policy when the
        new one is not valid.
        """
        with self._reloading:
            current = self._engine
            engine = PolicyEngine.from_file(
                path if path is not None else self._path,
                budget_ms=current.budget_ms,
                observer=current.observer,
                clock=current.clock,
            )
            self.replace(engine)
            if path is not None:
                self._path = path
            return engine

    def reload_source(self, src: str, *, name: str = "<admin>") -> PolicyEngine:
        """Validate policy text (e.g. from POST /v2/admin/policy) and swap it in."""
        with self._reloading:
            current = self._engine
            engine = PolicyEngine.from_source(
                src,
                name=name,
                budget_ms=current.budget_ms,
                observer=current.observer,
                clock=current.clock,
            )
            self.replace(engine)
            return engine

    def admit(self, task: TaskView, cluster: ClusterView) -> AdmitDecision:
        return self._engine.admit(task, cluster)

    def schedule(
        self, task: TaskView, workers: Sequence[WorkerView], cluster: ClusterView
    ) -> str | None:
        return self._engine.schedule(task, workers, cluster)
