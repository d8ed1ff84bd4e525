"""A worker SIGKILLed mid-answer (ORCH-380..ORCH-384, WRK-160..WRK-162): the task resumes on
another worker from the token where it stopped, and the client's stream goes on as if nothing
happened. Real orchestratord, real llorch-workerd processes (tiny F32 GGUF) on loopback.

RUNS kill runs per sampling mode here; `bench/failover.py --exact 20` runs the issue's 20 each
(every run starts a worker to replace the one it killed: about 3 s each on a shared machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.orchestratord.cluster import (
    ADMIN,
    MODEL,
    orchestratord,
    stream_task,
    wait_for,
    workers,
)
from tests.orchestratord.failover import (
    LONG_PROMPT,
    Fleet,
    Run,
    check_continuous,
    iter_events,
    killed_run,
    prime,
)

pytestmark = pytest.mark.e2e
RUNS = 3
N_TOKENS = 200
# Tests that need a break but not at a chosen token: a longer answer, broken early, so the
# kill surely lands while it runs.
N_LONG = 800
# A kill lands some tokens after the token event the client read (the worker runs on
# meanwhile): kill points stop this many events short of the end, so the task still runs.
MARGIN = 25


@contextlib.contextmanager
def fleet(tmp: Path, model: Path, *orch_args: str, workers: int = 2) -> Iterator[Fleet]:
    with contextlib.ExitStack() as stack:
        orch = stack.enter_context(orchestratord(tmp, *orch_args))
        f = Fleet(tmp, model, stack, orch)
        for _ in range(workers):
            f.start()
        yield f


def body(sampling: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": LONG_PROMPT,
        "max_tokens": N_TOKENS,
        "ignore_eos": True,
        **sampling,
        **extra,
    }


def reference(url: str, task: dict[str, Any]) -> tuple[str, int]:
    """The uninterrupted run's text and its number of token events."""
    evs = stream_task(url, task)
    assert evs[-1].event == "end", evs[-1]
    toks = [e for e in evs if e.event == "token"]
    return "".join(str(e.data["t"]) for e in toks), len(toks)


def check_failed_over(
    run: Run, want_text: str, failovers: int = 1, reason: str = "connection_lost"
) -> None:
    check_continuous(run)
    assert run.last.event == "end", run.last
    assert run.last.data.get("failovers") == failovers, run.last.data
    fo = run.named("failover")
    assert [e.data["failovers"] for e in fo] == list(range(1, failovers + 1))
    assert [e.data["worker_id"] for e in fo] == run.killed
    assert all(e.data["reason"] == reason for e in fo), fo
    assert run.text == want_text


def sampling_of(mode: str, rng: random.Random) -> dict[str, Any]:
    if mode == "greedy":
        return {"temperature": 0}
    return {"temperature": 1.0, "seed": rng.randrange(2**32)}


@pytest.mark.parametrize("mode", ["greedy", "seeded"])
def test_orch_381_a_sigkilled_worker_is_invisible_to_the_client(
    mode: str, tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-380, ORCH-381, ORCH-382, ORCH-383, WRK-160, WRK-162: RUNS generations of 200
    tokens, the serving worker SIGKILLed at a random token event: the client's text equals the
    uninterrupted run's byte for byte, event ids go on with no repeat or gap, one `failover`
    event, `end.failovers == 1`, `tokens_out` 200, the record succeeded; /metrics counts it."""
    rng = random.Random(f"orch-381-{mode}")
    with fleet(tmp_path, tiny_model) as f:
        for n in range(RUNS):
            task = body(sampling_of(mode, rng))
            want, events = reference(f.url, task)
            for _ in range(3):  # a kill that came after the last token: draw another point
                kill_at = rng.randint(1, events - MARGIN)
                run = killed_run(f.url, task, f.alive(), [kill_at])
                if run.named("failover"):
                    break
                f.start()
            check_failed_over(run, want)
            assert run.last.data["tokens_out"] == N_TOKENS
            rec = httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()
            assert (rec["status"], rec["tokens_out"], rec["stop_reason"]) == (
                "succeeded",
                N_TOKENS,
                "MAX_TOKENS",
            ), rec
            assert rec["worker_id"] != run.killed[0]
            f.start()  # the next run has two workers again
            assert n == RUNS - 1 or len(f.alive()) == 2
        metrics = httpx.get(f.url + "/metrics").text
        m = re.search(
            r'llorch_orchestrator_failovers_total\{reason="connection_lost"\} (\S+)', metrics
        )
        assert m and float(m.group(1)) == RUNS


def test_orch_382_v1_streams_continue_through_a_failover(tiny_model: Path, tmp_path: Path) -> None:
    """ORCH-382: the `openai` client reads a /v1 chat stream whose worker is SIGKILLed
    mid-answer: no exception, no odd chunk, the same text as an uninterrupted stream."""
    with fleet(tmp_path, tiny_model) as f:
        client = openai.OpenAI(base_url=f.url + "/v1", api_key="unused", max_retries=0)
        params: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "max_tokens": N_LONG,
            "temperature": 0.9,
            "seed": 77,
        }

        def read(kill_at: int | None) -> tuple[str, str | None, int]:
            text, finish, chunks = "", None, 0
            stream = client.chat.completions.create(stream=True, **params)
            for chunk in stream:
                assert len(chunk.choices) == 1, chunk
                choice = chunk.choices[0]
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                chunks += 1
                if kill_at is not None and chunks == kill_at:
                    task_id = stream.response.headers["x-llorch-task-id"]
                    wid = httpx.get(f"{f.url}/v2/tasks/{task_id}").json()["worker_id"]
                    f.workers[wid].kill()
            return text, finish, chunks

        want, finish, chunks = read(None)
        assert chunks > 20, "the reference answer is too short to kill it midway"
        got, got_finish, _ = read(min(60, chunks // 3))
        assert (got, got_finish) == (want, finish)
        metrics = httpx.get(f.url + "/metrics").text
        assert 'llorch_orchestrator_failovers_total{reason="connection_lost"} 1.0' in metrics


def test_orch_381_a_stop_string_after_the_break_still_ends_the_task(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-381, WRK-160: a task with a stop string is killed before the stop string: the
    resumed worker finds it, and the text equals the uninterrupted run's (the stop string
    straddling the resume point exactly is tests/worker/test_resume.py's)."""
    with fleet(tmp_path, tiny_model) as f:
        greedy = body({"temperature": 0}, max_tokens=N_LONG)
        plain, _ = reference(f.url, greedy)
        # A stop string that first occurs far enough in (greedy text repeats itself).
        at = next(k for k in range(1000, len(plain) - 8) if plain[k : k + 8] not in plain[: k + 7])
        stop = plain[at : at + 8]
        task = {**greedy, "stop": [stop]}
        want, _ = reference(f.url, task)
        assert want == plain[:at]
        for kill_at in (40, 100):  # long before the stop string, whatever the load
            run = killed_run(f.url, task, f.alive(), [kill_at])
            check_failed_over(run, want)
            assert run.last.data["stop_reason"] == "STOP_SEQUENCE"
            f.start()


def test_orch_384_killed_twice_and_the_cap(tiny_model: Path, tmp_path: Path) -> None:
    """ORCH-384: a task whose worker is killed, then the next one too, resumes on a third
    (`end.failovers == 2`); with `--failover-max 1` the second break ends it WORKER_RESET."""
    task = body({"temperature": 1.0, "seed": 4242}, max_tokens=N_LONG)
    with fleet(tmp_path, tiny_model, workers=3) as f:
        want, _ = reference(f.url, task)
        run = killed_run(f.url, task, f.alive(), [40, 150])
        check_failed_over(run, want, failovers=2)
        assert len(set(run.killed)) == 2
    (tmp_path / "cap").mkdir()
    with fleet(tmp_path / "cap", tiny_model, "--failover-max", "1", workers=3) as f:
        run = killed_run(f.url, task, f.alive(), [40, 150])
        check_continuous(run)
        assert run.last.event == "error", run.last
        assert run.last.data["code"] == "WORKER_RESET" and run.last.data["retriable"] is True
        assert "1 failover(s)" in run.last.data["message"]
        assert len(run.named("failover")) == 1


def test_orch_381_with_no_other_worker_the_task_waits_and_resumes(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-381: the only worker is killed: the task waits in its lane (queued, its stream
    open) and resumes when a worker registers; the text is the uninterrupted run's."""
    task = body({"temperature": 0.8, "seed": 31337}, max_tokens=N_LONG)
    with fleet(tmp_path, tiny_model, workers=1) as f:
        want, _ = reference(f.url, task)
        started: list[str] = []

        def replace(run: Run) -> None:
            rec = wait_for(
                lambda: (
                    httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()["status"] == "queued"
                    and httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()
                ),
                what="the task to wait in its lane",
            )
            assert rec["worker_id"] is None
            time.sleep(0.5)  # it keeps waiting: nothing else serves the model
            assert httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()["status"] == "queued"
            started.append(f.start())

        run = killed_run(f.url, task, f.alive(), [60], on_failover=replace)
        check_failed_over(run, want)
        assert httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()["worker_id"] == started[0]


def test_orch_384_cancel_while_the_task_waits_to_resume(tiny_model: Path, tmp_path: Path) -> None:
    """ORCH-384, ORCH-015: a task cancelled while it waits to resume ends `cancelled` (one
    path: `end{CANCELLED}`, `failovers` counted) and never resumes when a worker comes."""
    task = body({"temperature": 0}, max_tokens=N_LONG)
    with fleet(tmp_path, tiny_model, workers=1) as f:

        def cancel(run: Run) -> None:
            r = httpx.post(f"{f.url}/v2/tasks/{run.task_id}/cancel", timeout=10)
            assert r.status_code == 204

        run = killed_run(f.url, task, f.alive(), [60], on_failover=cancel)
        check_continuous(run)
        assert run.last.event == "end" and run.last.data["stop_reason"] == "CANCELLED"
        assert run.last.data["failovers"] == 1
        f.start()
        rec = httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()
        assert rec["status"] == "cancelled"
        time.sleep(0.5)  # a scheduling pass or two with a worker: nothing starts it again
        rec = httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()
        assert (rec["status"], rec["attempts"]) == ("cancelled", 1)


def test_pol_115_a_policy_may_refuse_a_failover(tiny_model: Path, tmp_path: Path) -> None:
    """POL-115, ORCH-384: the policy sees `task.failovers`; one that keeps failed-over tasks
    queued leaves them to their deadline (DEADLINE_UNMET), as any task it does not place."""
    refuse = (
        "def schedule(task, workers, cluster):\n"
        "    if task['failovers'] > 0:\n"
        "        return None\n"
        "    free = [w for w in workers if w['slots_busy'] < w['slots_total']]\n"
        "    return free[0]['id'] if free else None\n"
    )
    with fleet(tmp_path, tiny_model) as f:
        task = body({"temperature": 0}, max_tokens=N_LONG)
        r = httpx.post(f.url + "/v2/admin/policy", headers=ADMIN, json={"source": refuse})
        assert r.status_code == 200, r.text
        run = killed_run(f.url, {**task, "deadline_ms": 4000}, f.alive(), [60])
        check_continuous(run)
        assert run.last.event == "error", run.last
        assert run.last.data["code"] == "DEADLINE_UNMET", run.last
        assert len(run.named("failover")) == 1


def test_orch_381_a_worker_marked_dead_hands_its_stream_over(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-381: a frozen worker (SIGSTOP: its socket open, no bytes, no heartbeats) is marked
    dead after `--heartbeat-dead-ms`, long before the relay's read timeout: its task fails
    over then, reason `worker_dead`, and the text is the uninterrupted run's."""
    task = body({"temperature": 0.5, "seed": 5}, max_tokens=N_LONG)
    with fleet(tmp_path, tiny_model, "--read-timeout-s", "120") as f:
        want, _ = reference(f.url, task)
        run = killed_run(f.url, task, f.alive(), [60], sig=signal.SIGSTOP)
        check_failed_over(run, want, reason="worker_dead")
        f.workers[run.killed[0]].kill(signal.SIGKILL)


def test_ctl_110_llorch_infer_stats_counts_the_failovers(tiny_model: Path, tmp_path: Path) -> None:
    """CTL-110, ORCH-382: `llorch infer --model --stats` streams a task whose worker is killed
    midway to its end, and its `end` line says `failovers: 1`."""
    with fleet(tmp_path, tiny_model) as f:
        cmd = [sys.executable, "-m", "llorch_ctl", "--config", os.devnull, "infer"]
        args = ["--model", MODEL, "--prompt", LONG_PROMPT, "--max-tokens", str(N_LONG)]
        env = {**os.environ, "LLORCH_ORCHESTRATOR_URL": f.url}
        with subprocess.Popen(
            [*cmd, *args, "--temperature", "0", "--stats"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as p:
            assert p.stderr is not None
            task_id = json.loads(p.stderr.readline())["task_id"]

            def running_on() -> str | None:
                rec = httpx.get(f"{f.url}/v2/tasks/{task_id}").json()
                return rec["worker_id"] if rec["tokens_out"] > 0 else None

            f.workers[wait_for(running_on, what="the task's first tokens")].kill()
            rest = p.stderr.read()
            assert p.wait(timeout=60) == 0, rest
        end = json.loads(rest.strip().splitlines()[-1])
        assert (end["task_id"], end["failovers"]) == (task_id, 1), end


def test_orch_385_drain_with_migrate_moves_running_tasks_now(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-385: `POST /v2/workers/{id}/drain?migrate=true` (admin) hands the worker's running
    task to another worker at once (reason `drained`; the text is the uninterrupted run's) and
    the worker ends `drained`; a bad `migrate` is 400 before anything changes."""
    task = body({"temperature": 0.7, "seed": 385}, max_tokens=N_LONG)
    with fleet(tmp_path, tiny_model) as f:
        want, _ = reference(f.url, task)
        r = httpx.post(f"{f.url}/v2/workers/f1/drain?migrate=yes", headers=ADMIN)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "migrate"
        drained: list[str] = []
        with httpx.stream(
            "POST",
            f.url + "/v2/tasks",
            json=task,
            timeout=120,
            headers={"accept": "text/event-stream"},
        ) as resp:
            run = Run(resp.headers["x-llorch-task-id"], [])
            for ev in iter_events(resp.iter_lines()):
                run.events.append(ev)
                if ev.event == "token" and not drained:
                    wid = httpx.get(f"{f.url}/v2/tasks/{run.task_id}").json()["worker_id"]
                    d = httpx.post(f"{f.url}/v2/workers/{wid}/drain?migrate=true", headers=ADMIN)
                    assert d.status_code == 202, d.text
                    drained.append(wid)
                if ev.event in ("end", "error"):
                    break
        run.killed = drained
        check_failed_over(run, want, reason="drained")
        wait_for(
            lambda: workers(f.url)[drained[0]]["state"] == "drained",
            what="the worker to be listed drained",
        )


@pytest.mark.parametrize("warm_every", [0, 40])
def test_orch_386_a_warm_standby_resumes_from_its_cache(
    warm_every: int, tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-386: with `--failover-warm-every 40` the other worker prefilled the prompt and the
    tokens so far while the task ran, so the failover there takes generated tokens from its
    prefix cache (`end.prompt_tokens_cached`; all but the last few dozen on an idle machine);
    without it, none of them (the contrast run)."""
    task = body({"temperature": 0.9, "seed": 386}, max_tokens=N_LONG)
    with fleet(tmp_path, tiny_model, "--failover-warm-every", str(warm_every)) as f:
        for wid in f.workers:  # the conversation's earlier turns: its prompt is everywhere
            prime(f, wid, task)
        run = killed_run(f.url, task, f.alive(), [300])
        assert run.last.event == "end" and run.last.data["failovers"] == 1, run.last
        broke = int(run.named("failover")[0].data["tokens_out"])
        prompt = int(run.last.data["prompt_tokens"])
        cached = int(run.last.data["prompt_tokens_cached"])
        if warm_every:
            # How far the standby lags depends on the machine's load (its prefills compete with
            # the decode for the cores), so what is asserted is that it held generated tokens.
            assert prompt < cached <= prompt + broke, (cached, prompt, broke)
        else:
            assert cached <= prompt, (cached, prompt, broke)
