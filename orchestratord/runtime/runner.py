"""One dispatched task: relay the worker's stream into the task log, retry or fail on errors.

A worker that fails before the first token is marked failed (until its next heartbeat says
otherwise) and the task goes back to the head of its lane, for another worker, up to
`--retry-attempts` times. After a token reached the log, a worker that breaks (its connection
lost or silent, `WORKER_RESET`, marked dead) hands the task over: a `failover` event, the head
of its lane again, and the next worker is given the ids of the tokens relayed so far to
prefill after the prompt (ORCH-380..ORCH-384), up to `--failover-max` times; past that, or
with failover off, the task ends with `error{WORKER_RESET}`. Every wait has a timeout (connect,
and silence between events), so a dead worker can delay a task but never hang it; anything
else that goes wrong in the relay ends the task with `error{INTERNAL}` rather than leaving it
open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Literal

from orchestratord.domain.embeddings import vectors_of
from orchestratord.domain.registry import Worker
from orchestratord.domain.reservations import Reservation
from orchestratord.runtime.core import ActiveTask, Core
from orchestratord.worker_client.http1 import TooLarge
from orchestratord.worker_client.relay import (
    StreamBroken,
    WorkerLost,
    WorkerRefused,
    embed,
    execute,
)
from shared.wire import (
    FailoverData,
    FailoverReason,
    JobEndData,
    JobErrorData,
    JobStartedData,
    StartedData,
)

log = logging.getLogger("llorch.orchestratord.runtime.runner")
Outcome = Literal["done", "retry", "failover"]
# Where a token event's ids begin (WRK-161: always its last member); `,"` cannot occur
# unescaped inside a JSON string, so the last match is the member.
_IDS = b',"ids":['
RETRY_CODES = frozenset({"WORKER_RESET", "BUSY", "DRAINING"})


def start_runner(service: Core, active: ActiveTask, reservation: Reservation) -> None:
    """Start the task's runner. The reservation is released, and the task ended, by the
    runner's done callback too: a task cancelled before its first step never runs the
    `finally` inside it, and would otherwise hold its slot and running count for ever."""
    runner = asyncio.create_task(run_task(service, active, reservation))
    active.runner = runner

    def done(task: asyncio.Task[None]) -> None:
        if reservation.release():
            used = service.registry.get(reservation.worker_id)
            if used is not None:
                used.last_used_ms = service.clock()
            service.wake(active.req.model)
        if active.runner is task:
            active.runner = None
        if not active.log.closed and task.cancelled():
            if active.cancelling:
                service.finish_cancelled(active)
            else:
                service.fail(
                    active, "WORKER_RESET", "orchestratord is shutting down", retriable=True
                )

    runner.add_done_callback(done)


async def run_task(service: Core, active: ActiveTask, reservation: Reservation) -> None:
    """Run one attempt on the worker the scheduler reserved; requeue or finish afterwards."""
    rec = active.record
    worker_id = reservation.worker_id
    with reservation:
        try:
            worker = service.registry.get(worker_id)
            outcome: Outcome = (
                "retry" if worker is None else await _attempt(service, active, worker)
            )
        except asyncio.CancelledError:
            reason, active.broken = active.broken, None
            me = asyncio.current_task()
            if reason is not None and not active.cancelling and me is not None:
                # break_streams cancelled this attempt, not orchestratord's shutdown (ORCH-381).
                me.uncancel()
                why = "drained with migrate" if reason == "drained" else "marked dead"
                outcome = _broken(service, active, worker_id, reason, f"the worker was {why}")
            else:
                if active.cancelling:
                    service.finish_cancelled(active)
                else:
                    service.fail(
                        active, "WORKER_RESET", "orchestratord is shutting down", retriable=True
                    )
                raise
        except Exception as e:
            # Whatever went wrong, the task must end: left open, its client would wait forever.
            log.exception("relaying task %s to worker %s failed", rec.id, worker_id)
            service.fail(
                active,
                "INTERNAL",
                f"orchestratord could not relay the task: {_describe(e)}",
                retriable=False,
            )
            outcome = "done"
        finally:
            active.job_id = None
    service.wake(active.req.model)
    if outcome == "done" or active.log.closed:
        return
    if active.cancelling:
        service.finish_cancelled(active)
    elif outcome == "failover":  # ORCH-381: the head of its lane, for the policy to place again
        rec.status, rec.worker_id = "queued", None
        service.save(rec)
        service.queue.push_front(active.entry)
        service.wake(active.req.model)
    elif rec.attempts - active.failovers > service.settings.retry_attempts:
        where = "while resuming" if active.failovers else "before its first token"
        service.fail(
            active,
            "WORKER_RESET",
            f"the task failed on {rec.attempts - active.failovers} worker(s) {where}",
            retriable=True,
        )
    else:
        service.metrics.retries.inc()
        rec.status, rec.worker_id = "queued", None
        service.queue.push_front(active.entry)
        service.wake(active.req.model)


async def _attempt(service: Core, active: ActiveTask, worker: Worker) -> Outcome:
    rec = active.record
    rec.attempts += 1
    rec.status = "running"
    now = service.clock()
    if rec.started_ms is None:
        rec.started_ms = now
        service.metrics.queue_time.observe(max(0.0, time.perf_counter() - active.submitted))
    active.job_id = f"{rec.id}.{rec.attempts}"
    service.save(rec)
    if active.req.embed_input is not None:
        return await _embed(service, active, worker)
    tlog = active.log
    body = active.req.worker_body(active.job_id)
    ids = active.ids
    want_ids = _resumable(service, active)
    if want_ids:  # ORCH-380: the worker sends each token's id, for a failover
        body["token_ids"] = True
        if ids:  # a failover: the next worker continues the generation (WRK-160)
            body["resume_tokens"] = list(ids)
            body["resume_index"] = active.tokens
            body["max_tokens"] = active.req.max_tokens - len(ids)
    active.resumed = len(ids)
    warm_every = service.settings.failover_warm_every if want_ids else 0
    outcome: list[Outcome] = []

    def on_event(name: str, raw: bytes) -> bool:
        """One event of the worker's stream, in the socket's read callback; True: the end."""
        if name == "token":
            if want_ids:
                cut = raw.rfind(_IDS)
                if cut >= 0:  # `...,"ids":[1,2]}`: kept here, and not passed on (ORCH-380)
                    inner = raw[cut + len(_IDS) : -2]
                    if inner:
                        ids.extend(map(int, inner.split(b",")))
                    raw = raw[:cut] + b"}"
                    if warm_every and len(ids) - active.warmed >= warm_every:
                        _warm(service, active, worker)
            if active.first_token is None:
                active.first_token = time.perf_counter()
                service.metrics.ttft.observe(active.first_token - active.submitted)
            active.tokens += 1
            rec.tokens_out = active.tokens  # the batch writer saves it now and then (ORCH-065)
            worker.tokens_relayed += 1
            tlog.append("token", raw=raw)
        elif name == "started":
            if active.failovers:  # the client has its `started`; a `failover` says the rest
                return False
            job: JobStartedData = json.loads(raw)
            prompt_tokens = job.get("prompt_tokens")
            if isinstance(prompt_tokens, int):
                active.prompt_tokens = rec.prompt_tokens = prompt_tokens
            started: StartedData = {"worker_id": worker.id, "queue_ms": now - rec.created_ms}
            if active.prompt_tokens is not None:
                started["prompt_tokens"] = active.prompt_tokens
            if active.entry.predicted is not None:  # ORCH-404
                started["cached_tokens_predicted"] = active.entry.predicted
            tlog.append("started", started)
        elif name == "end":
            end: JobEndData = json.loads(raw)
            _end(service, active, worker, end)
            outcome.append("done")
        elif name == "error":
            data: JobErrorData = json.loads(raw)
            code = str(data.get("code") or "INTERNAL")
            if active.tokens == 0 and code in RETRY_CODES and not active.cancelling:
                outcome.append("retry")
            elif code == "WORKER_RESET" and _can_fail_over(service, active):
                message = str(data.get("message") or code)
                outcome.append(_fail_over(service, active, worker.id, "worker_reset", message))
            else:
                service.fail(
                    active,
                    code,
                    str(data.get("message") or code),
                    retriable=code in RETRY_CODES or code == "DECODE_TIMEOUT",
                )
                outcome.append("done")
        return bool(outcome)

    settings = service.settings
    try:
        await execute(
            worker.url,
            settings.cluster_token,
            body,
            on_event,
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            pool=service.connections,
        )
    except WorkerRefused as e:
        return _refused(service, active, worker, e)
    except (WorkerLost, StreamBroken) as e:
        return _lost(service, active, worker, e)
    return outcome[0]


async def _embed(service: Core, active: ActiveTask, worker: Worker) -> Outcome:
    """An embeddings task: one POST /embeddings, its vectors in the task's `end` event
    (ORCH-230). Refusals and lost workers take the same paths as a generation's."""
    rec = active.record
    started: StartedData = {"worker_id": worker.id, "queue_ms": service.clock() - rec.created_ms}
    active.log.append("started", started)
    settings = service.settings
    try:
        raw = await embed(
            worker.url,
            settings.cluster_token,
            active.req.embed_body(),
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            pool=service.connections,
        )
        reply = json.loads(raw)
        vectors = vectors_of(reply)
        prompt_tokens = int(reply.get("usage", {}).get("prompt_tokens", 0))
    except WorkerRefused as e:
        return _refused(service, active, worker, e)
    except WorkerLost as e:
        return _lost(service, active, worker, e)
    except ValueError as e:
        service.fail(active, "INTERNAL", str(e), retriable=False)
        return "done"
    active.prompt_tokens = rec.prompt_tokens = prompt_tokens
    end: JobEndData = {
        "tokens_out": 0,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_cached": 0,
        "ttft_ms": None,
        "decode_time_ms": 0.0,
        "stop_reason": "EOS",
    }
    service.finish_end(active, end, vectors)
    return "done"


def _lost(service: Core, active: ActiveTask, worker: Worker, e: Exception) -> Outcome:
    rec = active.record
    # A connection that breaks says more than a heartbeat: no new work until it reports.
    worker.reported = "failed"
    log.warning("worker %s failed on task %s: %s", worker.id, rec.id, _describe(e))
    if active.cancelling:
        service.finish_cancelled(active)
        return "done"
    return _broken(service, active, worker.id, _reason(e), _describe(e))


def _reason(e: Exception) -> FailoverReason | None:
    """Why a worker's stream broke, as a failover names it; None: it broke a cap (ORCH-054),
    which another worker would not mend."""
    cause = e.__cause__
    if isinstance(cause, TooLarge):
        return None
    if isinstance(cause, TimeoutError):
        return "read_timeout"
    return "connection_lost"


def _broken(
    service: Core,
    active: ActiveTask,
    worker_id: str,
    reason: FailoverReason | None,
    message: str,
) -> Outcome:
    """The worker's stream broke: retry before the first token, fail over after it when the
    task may (ORCH-384), else end it WORKER_RESET."""
    if active.log.closed:
        return "done"
    if active.tokens == 0 or (active.failovers and len(active.ids) == active.resumed):
        # Nothing came from this worker (a resumed attempt that never started): a retry from
        # the same point, under --retry-attempts, not another failover.
        return "retry"
    if reason is not None and _can_fail_over(service, active):
        return _fail_over(service, active, worker_id, reason, message)
    moved = f" and {active.failovers} failover(s)" if active.failovers else ""
    service.fail(
        active,
        "WORKER_RESET",
        f"worker {worker_id} failed after {active.tokens} tokens{moved}: {message}",
        retriable=True,
    )
    return "done"


def _resumable(service: Core, active: ActiveTask) -> bool:
    """A task that can move to another worker mid-stream: one generation (not n > 1 choices,
    not embeddings) with failover on (ORCH-384)."""
    req = active.req
    return service.settings.failover_max > 0 and req.n == 1 and req.embed_input is None


def _can_fail_over(service: Core, active: ActiveTask) -> bool:
    """ORCH-384: not after the client's cancel, not past `--failover-max`, and only when the
    worker sent the ids of what was relayed (the task asked for them)."""
    return (
        not active.cancelling
        and not active.log.closed
        and _resumable(service, active)
        and active.failovers < service.settings.failover_max
    )


def _fail_over(
    service: Core, active: ActiveTask, worker_id: str, reason: FailoverReason, message: str
) -> Outcome:
    """Say so in the task's stream and count it; the caller puts the task back in its lane."""
    if len(active.ids) >= active.req.max_tokens:
        # Every token was relayed; only the worker's `end` was lost.
        end: JobEndData = {
            "tokens_out": len(active.ids),
            "prompt_tokens": active.prompt_tokens or 0,
            "prompt_tokens_cached": 0,
            "ttft_ms": None,
            "decode_time_ms": 0.0,
            "stop_reason": "MAX_TOKENS",
        }
        service.finish_end(active, end)
        return "done"
    active.failovers += 1
    service.metrics.failovers.labels(reason).inc()
    data: FailoverData = {
        "worker_id": worker_id,
        "reason": reason,
        "message": message,
        "tokens_out": len(active.ids),
        "failovers": active.failovers,
    }
    active.log.append("failover", data)
    log.warning(
        "task %s: worker %s broke after %d tokens (%s); failover %d",
        active.record.id,
        worker_id,
        len(active.ids),
        reason,
        active.failovers,
    )
    return "failover"


def _warm(service: Core, active: ActiveTask, serving: Worker) -> None:
    """ORCH-386: have a standby worker of the model prefill the prompt and the tokens so far
    (a job of one token, its output dropped), so that its prefix cache holds them and a
    failover there prefills only what came since. One at a time per task; none when no other
    worker has a free slot."""
    if active.warming:
        return
    now = service.clock()
    registry = service.registry
    standby = next(
        (
            w
            for w in registry.candidates(active.req.model, now)
            if w.id != serving.id and w.free_slots > 0
        ),
        None,
    )
    if standby is None:
        return
    active.warming, active.warmed = True, len(active.ids)
    body = active.req.worker_body(f"{active.record.id}.w{active.warmed}")
    body.update(resume_tokens=list(active.ids), max_tokens=1)
    settings = service.settings

    async def warm() -> None:
        try:
            await execute(
                standby.url,
                settings.cluster_token,
                body,
                lambda name, raw: name in ("end", "error"),
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                pool=service.connections,
            )
            # The policy's prefix affinity (POL-045) now sends a failover there.
            registry.served(standby.id, active.req.session_id, active.req.prefix_hash)
        except (WorkerRefused, WorkerLost, StreamBroken) as e:
            log.info("warming worker %s for task %s: %s", standby.id, active.record.id, e)
        finally:
            active.warming = False

    service.spawn(warm())


def break_streams(service: Core, worker_id: str, reason: FailoverReason = "worker_dead") -> None:
    """The worker was marked dead (ORCH-041): the streams still open to it would wait out
    their read timeout; break them now, for their tasks to fail over (ORCH-381). Or it is
    drained with `migrate` (ORCH-385): its tasks move on instead of finishing there."""
    for active in list(service.tasks.values()):
        if (
            active.runner is not None
            and active.record.worker_id == worker_id
            and not active.log.closed
            and not active.cancelling
        ):
            active.broken = reason
            if not active.runner.cancel():  # it has just ended: nothing to break
                active.broken = None


def _end(service: Core, active: ActiveTask, worker: Worker, data: JobEndData) -> None:
    own = int(data.get("tokens_out", 0))  # this worker's; a resumed task had more before
    if active.resumed:
        data = {**data, "tokens_out": own + active.resumed}
    service.finish_end(active, data)
    # Its prefix cache now holds this conversation: the policy may send the next turn here.
    service.registry.served(worker.id, active.req.session_id, active.req.prefix_hash)
    tokens = active.record.tokens_out
    service.metrics.tokens.inc(tokens)
    decode_ms = data.get("decode_time_ms")
    if tokens > 1 and active.first_token is not None:
        service.metrics.tpot.observe((time.perf_counter() - active.first_token) / (tokens - 1))
    if isinstance(decode_ms, int | float) and decode_ms > 0 and own > 1:
        service.registry.observe_speed(worker.id, own * 1000.0 / decode_ms)


def _refused(service: Core, active: ActiveTask, worker: Worker, e: WorkerRefused) -> Outcome:
    if e.status in (400, 422):
        detail = _problem_detail(e.body) or "the worker refused the task's parameters"
        service.fail(active, "INVALID_PARAMS", detail, retriable=False)
        return "done"
    if e.status == 503:
        # Full or draining: nothing more goes there until its next heartbeat.
        worker.foreign = worker.slots_total + service.registry.prefetch
    elif e.status == 409:
        # The job id runs there already (ORCH-055): no fault of the worker's; the next
        # attempt has a new job id.
        log.warning("worker %s already runs job %s", worker.id, active.job_id)
    else:
        worker.reported = "failed"
        log.warning(
            "worker %s refused task %s with %d%s",
            worker.id,
            active.record.id,
            e.status,
            " (check --cluster-token)" if e.status in (401, 403) else "",
        )
    return "retry"


def _problem_detail(body: bytes) -> str | None:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return None
    return str(detail) if detail else None


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
