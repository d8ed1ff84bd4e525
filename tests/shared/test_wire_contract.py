"""shared/wire.py against specs/openapi/: a field, a required key or an enum value that one side
changes without the other fails here (ORCH-144, WRK-006)."""

from __future__ import annotations

import typing
from functools import cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, NotRequired, get_args, get_origin, get_type_hints, is_typeddict

import pytest
import yaml

from shared import wire

SPECS = Path(__file__).resolve().parents[2] / "specs" / "openapi"


@cache
def spec(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SPECS / f"{name}.yaml").read_text(encoding="utf-8"))
    return loaded


def schema(where: str) -> dict[str, Any]:
    """`worker:Health.prefix_cache` -> that property of that schema; a path starting with `/`
    is a route's: `worker:/cancel post 202`."""
    doc, _, path = where.partition(":")
    if path.startswith("/"):
        route, method, status = path.split(" ")
        response = spec(doc)["paths"][route][method]["responses"][status]
        found: dict[str, Any] = response["content"]["application/json"]["schema"]
        return found
    name, *props = path.split(".")
    node: dict[str, Any] = spec(doc)["components"]["schemas"][name]
    for prop in props:
        node = node["properties"][prop]
    return node


# Each TypedDict of the wire and the schema it must match.
BODIES: list[tuple[type, str]] = [
    # A job stream, worker -> orchestratord (WRK-023).
    (wire.JobStartedData, "worker:StartedEvent"),
    (wire.JobTokenData, "worker:TokenEvent"),
    (wire.JobEndData, "worker:EndEvent"),
    (wire.JobErrorData, "worker:ErrorEvent"),
    # The worker's own endpoints (WRK-050, WRK-060, WRK-103, WRK-111).
    (wire.Health, "worker:Health"),
    (wire.PrefixCacheStats, "worker:Health.prefix_cache"),
    (wire.EmbeddingsStatus, "worker:Health.embeddings"),
    (wire.CancelReply, "worker:/cancel post 202"),
    # A task stream, orchestratord -> client (ORCH-020, ORCH-022).
    (wire.QueuedData, "orchestrator:QueuedEvent"),
    (wire.StartedData, "orchestrator:StartedEvent"),
    (wire.TokenData, "orchestrator:TokenEvent"),
    (wire.EndData, "orchestrator:EndEvent"),
    (wire.ErrorData, "orchestrator:ErrorEvent"),
    (wire.FailoverData, "orchestrator:FailoverEvent"),
    # The registry, worker -> orchestratord (ORCH-040..).
    (wire.RegisterBody, "orchestrator:WorkerRegistration"),
    (wire.HeartbeatBody, "orchestrator:Heartbeat"),
]

# Literals that are an enum of some schema field besides the bodies' own.
LITERALS: list[tuple[Any, str]] = [
    (wire.WorkerState, "orchestrator:Worker.state"),
    (wire.TaskStatus, "orchestrator:TaskRecord.status"),
    (wire.Priority, "orchestrator:TaskRecord.priority"),
    (wire.Priority, "orchestrator:TaskRequest.priority"),
    (wire.WorkerStatus, "worker:Health.status"),
    (wire.StopReason, "worker:EndEvent.stop_reason"),
    (wire.StopReason, "orchestrator:EndEvent.stop_reason"),
    (wire.FailoverReason, "orchestrator:FailoverEvent.reason"),
]


def fields(body: type) -> dict[str, tuple[bool, Any]]:
    """name -> (required, type) of a TypedDict. Read from the annotations, not from
    `__required_keys__`: with postponed annotations Python 3.11 counts NotRequired keys as
    required."""
    out: dict[str, tuple[bool, Any]] = {}
    for name, hint in get_type_hints(body, include_extras=True).items():
        required = get_origin(hint) is not NotRequired
        out[name] = (required, get_args(hint)[0] if not required else hint)
    return out


def literal_values(tp: Any) -> set[object] | None:
    """The values of a Literal (None included for `Literal[...] | None`); None if it is not
    one."""
    if get_origin(tp) is Literal:
        return set(get_args(tp))
    if get_origin(tp) in (UnionType, typing.Union):
        parts = [literal_values(a) if a is not NoneType else {None} for a in get_args(tp)]
        if all(p is not None for p in parts) and any(
            get_origin(a) is Literal for a in get_args(tp)
        ):
            return set().union(*(p for p in parts if p is not None))
    return None


def enum_of(prop: dict[str, Any]) -> set[object] | None:
    if "enum" in prop:
        return set(prop["enum"])
    if "const" in prop:
        return {prop["const"]}
    return None


@pytest.mark.parametrize(("body", "where"), BODIES, ids=[f"{b.__name__}-{w}" for b, w in BODIES])
def test_orch_144_wrk_006_every_wire_body_matches_its_schema(body: type, where: str) -> None:
    """Same field names, the same ones required, and every Literal field's values are its
    enum (and an enum field is a Literal)."""
    s = schema(where)
    mine = fields(body)
    props: dict[str, Any] = s.get("properties", {})
    assert set(mine) == set(props), f"{body.__name__} vs {where}: field names differ"
    required = {name for name, (req, _) in mine.items() if req}
    assert required == set(s.get("required", [])), f"{body.__name__} vs {where}: required"
    for name, (_, tp) in mine.items():
        assert literal_values(tp) == enum_of(props[name]), f"{body.__name__}.{name} vs {where}"
        if is_typeddict(tp) and "properties" in props[name]:
            nested = fields(tp)
            assert set(nested) == set(props[name]["properties"]), f"{body.__name__}.{name}"


@pytest.mark.parametrize(("literal", "where"), LITERALS, ids=[w for _, w in LITERALS])
def test_orch_144_every_wire_literal_is_its_schema_enum(literal: Any, where: str) -> None:
    assert set(get_args(literal)) == enum_of(schema(where))


def test_orch_144_the_value_tuples_list_their_literal() -> None:
    """The tuples code iterates (metrics labels, capabilities, validation) are the Literals."""
    pairs: list[tuple[Any, Any]] = [
        (wire.PRIORITIES, wire.Priority),
        (wire.WORKER_STATES, wire.WorkerState),
        (wire.EVENT_NAMES, wire.EventName),
        (wire.STOP_REASONS, wire.StopReason),
        (wire.TASK_STATUSES, wire.TaskStatus),
    ]
    for values, literal in pairs:
        assert tuple(values) == get_args(literal)
    assert set(get_args(wire.WorkerStatus)) == wire.WORKER_STATUSES
    assert set(wire.TERMINAL_EVENTS) <= set(wire.EVENT_NAMES)
