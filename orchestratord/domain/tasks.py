"""Task values: the validated request and the record; pure.

`parse_task_request` is the one place a client body becomes a `TaskRequest` (validation at the
HTTP edge).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from orchestratord.domain.structured import FIELDS as STRUCTURE_FIELDS
from orchestratord.domain.structured import read_structure
from orchestratord.domain.tenancy import Caller
from shared.names import MODEL_NAME
from shared.params import FieldReader
from shared.wire import Priority, TaskStatus

__all__ = [
    "Priority",
    "TaskQuery",
    "TaskRecord",
    "TaskRequest",
    "TaskStatus",
    "parse_task_request",
]

MAX_CHOICES = 8  # the worker's limit (WRK-140)
_TASK_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class TaskRequest:
    """A validated client task. Sampling fields left as None take the worker's defaults."""

    model: str
    prompt: str | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None
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
    # "worker:ID" or "pool:NAME": run only there. Set by compare runs, never by a client body.
    pin: str | None = None
    # An embeddings task (POST /v1/embeddings): the inputs to embed, instead of a generation.
    embed_input: tuple[str, ...] | None = None
    # OpenAI tool definitions the worker renders into the prompt (PC-100).
    tools: tuple[Mapping[str, Any], ...] | None = None
    # Output constraint (at most one) and logprobs, passed to the worker (ORCH-240).
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    # Choices of one prompt, one worker slot each (ORCH-270).
    n: int = 1
    # The id of the key that submitted it, for usage by key (ORCH-326); None for flag keys.
    key_id: str | None = None

    @property
    def constrained(self) -> bool:
        return self.grammar is not None or self.json_schema is not None

    @property
    def text(self) -> str:
        """The task's input as one string, for hashing and size estimates."""
        if self.embed_input is not None:
            return _dumps(list(self.embed_input))
        if self.prompt is not None:
            return self.prompt
        text = _dumps(list(self.messages or ()))
        return text + _dumps(list(self.tools)) if self.tools else text

    @cached_property
    def prompt_hash(self) -> str:
        """sha256 of the prompt or messages: what the database keeps instead of the text."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @cached_property
    def prefix_hash(self) -> str:
        """Hash of the first 256 characters: lets a policy group tasks that share a prefix."""
        if self.prompt is not None:
            text = self.prompt[:256]
        elif self.embed_input is not None:
            text = self.text[:256]
        else:
            text = _dumps(list(self.messages or ())[:1])[:256]
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def prompt_tokens_estimate(self) -> int:
        if self.prompt is not None:
            chars = len(self.prompt)
        elif self.embed_input is not None:
            chars = sum(len(t) for t in self.embed_input)
        else:
            chars = sum(len(m.get("content", "")) for m in self.messages or ())
        return max(1, chars // 4)

    def embed_body(self) -> dict[str, Any]:
        """The worker's POST /embeddings body (vectors as floats; the route re-encodes them)."""
        return {
            "model": self.model,
            "input": list(self.embed_input or ()),
            "encoding_format": "float",
        }

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
        if self.tools:
            body["tools"] = [dict(t) for t in self.tools]
        if self.grammar is not None:
            body["grammar"] = self.grammar
        if self.json_schema is not None:
            body["json_schema"] = self.json_schema
        if self.logprobs:
            body["logprobs"] = True
            if self.top_logprobs:
                body["top_logprobs"] = self.top_logprobs
        if self.n > 1:
            body["n"] = self.n
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
    prompt_tokens: int | None = None  # as the worker counted them, once it started the task
    # The client's own `task_id`, scoped to its tenant (ORCH-156); `id` is always server-made.
    client_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    def id_for(self, tenant: str | None) -> str:
        """The id a caller of `tenant` knows the task by: the client-chosen id for its own
        tenant's task, the server's id otherwise (what the admin sees of other tenants)."""
        if self.client_id is not None and self.tenant == tenant:
            return self.client_id
        return self.id

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class TaskQuery:
    """A page of `GET /v2/tasks`: filters, and the (created_ms, id) the page starts below."""

    restricted: bool  # only `tenant`'s tasks (a client key); False: every tenant's
    tenant: str | None = None
    status: str | None = None
    model: str | None = None
    since_ms: int | None = None
    before: tuple[int, str] | None = None
    limit: int = 50

    def matches(self, r: TaskRecord) -> bool:
        return (
            (not self.restricted or r.tenant == self.tenant)
            and (self.status is None or r.status == self.status)
            and (self.model is None or r.model == self.model)
            and (self.since_ms is None or r.created_ms >= self.since_ms)
            and (self.before is None or (r.created_ms, r.id) < self.before)
        )


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
        "tools",
        "n",
        *STRUCTURE_FIELDS,
    }
)


def parse_task_request(body: Mapping[str, Any], *, caller: Caller) -> TaskRequest:
    """Validate a client body into a TaskRequest, or raise InvalidParams listing every bad field.

    Generation fields use the worker's own rules and limits (`shared.params`), so a task that
    is accepted here is never refused by the worker it lands on. The task's tenant is the
    caller's key's, whatever the body says (`Caller.task_tenant`).
    """
    r = FieldReader(body, known=set(_FIELDS))
    model = r.name("model", MODEL_NAME)
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
    structure = read_structure(r)
    n = r.integer("n", 1, 1, MAX_CHOICES) or 1
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
        tenant=caller.task_tenant(body_tenant),
        key_id=caller.key_id,
        ignore_eos=ignore_eos,
        tools=gen.tools,
        grammar=structure.grammar,
        json_schema=structure.json_schema,
        logprobs=structure.logprobs,
        top_logprobs=structure.top_logprobs,
        n=n,
    )
