"""Compare runs: one job run at once on two or more workers or pools, its figures side by side.

Pure: parsing the request's targets, a run's figures from its finished task records, and the
run record that the store keeps and `GET /v2/compare/{id}` exports. Each target's job is an
ordinary task pinned to the target (so admission, queueing and slot accounting are the same as
for any task); the service adapter submits them together and saves the run when all ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from shared.names import POOL_NAME, WORKER_ID
from shared.problem import InvalidParams

TargetKind = Literal["worker", "pool"]
RunStatus = Literal["running", "done"]
MIN_TARGETS = 2
MAX_TARGETS = 8


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_targets(value: object) -> tuple[Target, ...]:
    """`["worker:ID" | "pool:NAME" | "ID", ...]`, 2 to 8 distinct; InvalidParams otherwise."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad('must be a list of "worker:ID" or "pool:NAME" strings')
    if not MIN_TARGETS <= len(value) <= MAX_TARGETS:
        raise _bad(f"must name {MIN_TARGETS} to {MAX_TARGETS} workers or pools")
    out: list[Target] = []
    for i, raw in enumerate(value):
        kind, sep, name = raw.partition(":")
        if not sep or kind not in ("worker", "pool"):
            kind, name = "worker", raw  # a bare name is a worker id
        rule = POOL_NAME if kind == "pool" else WORKER_ID
        if not rule.matches(name):  # not repeated: it may be anything (ORCH-045)
            raise _bad(f"item {i} names no {rule.what}: a {rule.what} {rule.problem(name)}")
        t = Target("pool" if kind == "pool" else "worker", name)
        if t in out:
            raise _bad(f"{raw!r} is named twice")
        out.append(t)
    return tuple(out)


def _bad(message: str) -> InvalidParams:
    return InvalidParams(f"targets {message}", errors=[{"field": "targets", "message": message}])


class RunFigures(TypedDict):
    """One target's outcome: the task's figures as measured by orchestratord."""

    target: str
    task_id: str
    worker_id: str | None
    status: str
    tokens_out: int
    ttft_ms: float | None
    total_ms: int | None
    tokens_per_s: float | None
    error_code: str | None


def figures(target: str, record: Mapping[str, Any]) -> RunFigures:
    """Figures from a task record (`GET /v2/tasks/{id}`): total is submit to end; tok/s is
    the decode rate after the first token, (tokens_out - 1) / (total - TTFT)."""
    created, finished = record.get("created_ms"), record.get("finished_ms")
    total = finished - created if isinstance(created, int) and isinstance(finished, int) else None
    ttft = record.get("ttft_ms")
    tokens = int(record.get("tokens_out") or 0)
    tps: float | None = None
    if total is not None and isinstance(ttft, int | float) and tokens > 1 and total > ttft:
        tps = round((tokens - 1) * 1000.0 / (total - ttft), 2)
    return {
        "target": target,
        "task_id": str(record["id"]),
        "worker_id": record.get("worker_id"),
        "status": str(record.get("status")),
        "tokens_out": tokens,
        "ttft_ms": ttft if isinstance(ttft, int | float) else None,
        "total_ms": total,
        "tokens_per_s": tps,
        "error_code": record.get("error_code"),
    }


@dataclass
class CompareRun:
    """A compare run as stored and exported (the prompt is kept: a run is worth comparing
    again only with the job it ran)."""

    id: str
    created_ms: int
    model: str
    job: dict[str, Any]
    targets: list[str]
    task_ids: list[str]
    tenant: str | None = None
    label: str | None = None
    status: RunStatus = "running"
    finished_ms: int | None = None
    results: list[RunFigures] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
            "status": self.status,
            "tenant": self.tenant,
            "label": self.label,
            "model": self.model,
            "job": self.job,
            "runs": [
                {"target": t, "task_id": tid}
                for t, tid in zip(self.targets, self.task_ids, strict=True)
            ],
            "results": list(self.results),
        }

    def finish(self, now_ms: int, records: Sequence[Mapping[str, Any]]) -> None:
        """Record the figures of every target's finished task (in target order)."""
        self.results = [figures(t, r) for t, r in zip(self.targets, records, strict=True)]
        self.status, self.finished_ms = "done", now_ms


def job_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The job part of a compare request: everything but `targets` and `label`."""
    return {k: v for k, v in body.items() if k not in ("targets", "label")}
