"""Task values: the validated request, the record, and the per-task event log.

`parse_task_request` is the one place a client body becomes a `TaskRequest` (validation at the
HTTP edge). `TaskLog` keeps a task's events in memory so an SSE reader that reconnects with
`Last-Event-ID` gets everything it missed; event ids are the index in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from shared.params import FieldReader

Priority = Literal["interactive", "batch"]
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_EVENTS = frozenset({"end", "error"})

_TASK_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class TaskRequest:
    """A validated client task. Sampling fields left as None take the worker's defaults."""

    model: str
    prompt: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    max_tokens: int = 128
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    priority: Priority = "interactive"
    session_id: str | None = None
    deadline_ms: int | None = None
    task_id: str | None = None
    tenant: str | None = None
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks, tests)

    @cached_property
    def prompt_hash(self) -> str:
        """sha256 of the prompt or messages: what the database keeps instead of the text."""
        text = self.prompt if self.prompt is not None else _dumps(list(self.messages or ()))
        return hashlib.sha256(text.encode()).hexdigest()

    @cached_property
    def prefix_hash(self) -> str:
        """Hash of the first 256 characters: lets a policy group tasks that share a prefix."""
        if self.prompt is not None:
            text = self.prompt[:256]
        else:
            text = _dumps(list(self.messages or ())[:1])[:256]
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def prompt_tokens_estimate(self) -> int:
        if self.prompt is not None:
            chars = len(self.prompt)
        else:
            chars = sum(len(m.get("content", "")) for m in self.messages or ())
        return max(1, chars // 4)

    def worker_body(self, job_id: str) -> dict[str, Any]:
        """The worker's POST /execute body; unset sampling fields are left to the worker."""
        body: dict[str, Any] = {"job_id": job_id, "max_tokens": self.max_tokens}
        if self.prompt is not None:
            body["prompt"] = self.prompt
        else:
            body["messages"] = [dict(m) for m in self.messages or ()]
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.stop:
            body["stop"] = list(self.stop)
        if self.ignore_eos:
            body["ignore_eos"] = True
        return body


@dataclass
class TaskRecord:
    """What `GET /v2/tasks/{id}` returns and the database keeps (never the prompt)."""

    id: str
    model: str
    priority: Priority
    status: TaskStatus
    prompt_hash: str
    created_ms: int
    max_tokens: int = 128
    tenant: str | None = None
    session_id: str | None = None
    worker_id: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    tokens_out: int = 0
    ttft_ms: float | None = None
    stop_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class TaskEvent:
    """One event of a task's stream. `raw` is the JSON data as received, passed through as is.

    Token events relayed from a worker are never decoded: `data` decodes lazily for the few
    consumers (the OpenAI adapter) that need a dict, and `frame` is built once per event.
    """

    __slots__ = ("_data", "_frame", "event", "id", "raw")

    def __init__(
        self, id: int, event: str, data: Mapping[str, Any] | None = None, raw: bytes | None = None
    ) -> None:
        self.id = id
        self.event = event
        self._data: dict[str, Any] | None = dict(data) if data is not None else None
        self.raw = raw if raw is not None else _dumps(self._data or {}).encode()
        self._frame: bytes | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.raw)
        return self._data

    @property
    def frame(self) -> bytes:
        """The SSE frame: `id`, `event`, one `data` line."""
        if self._frame is None:
            self._frame = b"".join(
                (b"id: %d\nevent: " % self.id, self.event.encode(), b"\ndata: ", self.raw, b"\n\n")
            )
        return self._frame

    def __repr__(self) -> str:
        return f"TaskEvent({self.id}, {self.event!r}, {self.raw!r})"


class TaskLog:
    """A task's events in order, plus a wake-up for readers waiting on the next one.

    The wake-up event is made only when a reader waits, and dropped when set, so appending
    a token costs no allocation while readers are busy sending.
    """

    __slots__ = ("_changed", "_closing", "closed", "events", "readers")

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.closed = False
        self.readers = 0
        self._changed: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None

    def append(
        self, event: str, data: Mapping[str, Any] | None = None, raw: bytes | None = None
    ) -> TaskEvent:
        if self.closed:
            raise RuntimeError("task log is closed")
        ev = TaskEvent(len(self.events), event, data, raw)
        self.events.append(ev)
        if event in TERMINAL_EVENTS:
            self.closed = True
            if self._closing is not None:
                self._closing.set()
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()
        return ev

    async def linger(self, wait_s: float) -> None:
        """Sleep up to `wait_s`, waking early when the log closes (readers batching tokens
        must not hold back the final event)."""
        if self.closed:
            return
        if self._closing is None:
            self._closing = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._closing.wait()

    async def wait(self, index: int, wait_s: float | None = None) -> bool:
        """Wait until an event with id >= `index` exists or the log closed; False on timeout."""
        if index < len(self.events) or self.closed:
            return True
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            async with asyncio.timeout(wait_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True


# --- validation -----------------------------------------------------------------------------

_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "seed",
        "stop",
        "priority",
        "session_id",
        "deadline_ms",
        "task_id",
        "tenant",
        "ignore_eos",
    }
)


def parse_task_request(body: Mapping[str, Any], *, tenant: str | None) -> TaskRequest:
    """Validate a client body into a TaskRequest, or raise InvalidParams listing every bad field.

    Generation fields use the worker's own rules and limits (`shared.params`), so a task that
    is accepted here is never refused by the worker it lands on. `tenant` comes from the
    caller's credentials; when None the body's own `tenant` is used.
    """
    r = FieldReader(body, known=set(_FIELDS))
    model = r.string("model", max_len=256)
    if model is None and not any(e["field"] == "model" for e in r.errors):
        r.fail("model", "is required")
    gen = r.generation()
    priority = r.choice("priority", "interactive", ("interactive", "batch"))
    ignore_eos = r.boolean("ignore_eos", False)
    task_id = r.string("task_id", max_len=128)
    if task_id is not None and not _TASK_ID.match(task_id):
        r.fail("task_id", "must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
    session_id = r.string("session_id", max_len=256)
    deadline_ms = r.integer("deadline_ms", None, 1, 86_400_000)
    body_tenant = r.string("tenant", max_len=128)
    r.raise_if_failed()
    assert model is not None

    def given(name: str, value: Any) -> Any:
        # Sampling fields the client left out stay None: the worker applies its own defaults.
        return value if name in r.body else None

    return TaskRequest(
        model=model,
        prompt=gen.prompt,
        messages=gen.messages,
        max_tokens=gen.max_tokens,
        temperature=given("temperature", gen.temperature),
        top_p=given("top_p", gen.top_p),
        top_k=given("top_k", gen.top_k),
        min_p=given("min_p", gen.min_p),
        repeat_penalty=given("repeat_penalty", gen.repeat_penalty),
        seed=gen.seed,
        stop=gen.stop,
        priority=priority,  # type: ignore[arg-type]
        session_id=session_id,
        deadline_ms=deadline_ms,
        task_id=task_id,
        tenant=tenant if tenant is not None else body_tenant,
        ignore_eos=ignore_eos,
    )
