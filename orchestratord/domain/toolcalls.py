"""Tool calls in a model's output, per model family; pure (ORCH-253..ORCH-255).

`parse_tool_calls` splits a finished output into its text and its calls, trying each known
format: Hermes/Qwen ``<tool_call>{json}</tool_call>`` (any number, what the fallback prompt
asks for, PC-103), Mistral ``[TOOL_CALLS][{...}]`` (and v11's ``[TOOL_CALLS]name[ARGS]{...}``),
Llama 3.x ``<|python_tag|>{...}`` or a bare ``{"name": ..., "parameters": ...}``, and a generic
JSON object or list of objects (possibly in a Markdown code fence). A call names one of the
offered functions and carries a JSON object of arguments; anything else stays text.
`ToolStream` does the same on a stream, holding text back only while a call might be starting.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
MARKERS = (HERMES_OPEN, MISTRAL, PYTHON_TAG)
_decoder = json.JSONDecoder()
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_MISTRAL_V11 = re.compile(r"\s*([A-Za-z0-9_.-]{1,64})(?:\[CALL_ID\][A-Za-z0-9]+)?\[ARGS\]")


@dataclass(frozen=True, slots=True)
class ParsedCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's `function.arguments`)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _call(obj: Any, names: Collection[str]) -> ParsedCall | None:
    """`obj` as a call when it is `{"name": <offered>, "arguments"|"parameters": {...}}`."""
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("function"), Mapping):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or name not in names or not isinstance(args, Mapping):
        return None
    return ParsedCall(new_call_id(), name, json.dumps(args, ensure_ascii=False))


def _calls(value: Any, names: Collection[str]) -> list[ParsedCall] | None:
    items = value if isinstance(value, list) else [value]
    calls = [_call(v, names) for v in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _json_at(text: str, pos: int) -> tuple[Any, int] | None:
    """The JSON value starting at `pos` (after whitespace) and where it ends, or None."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    try:
        return _decoder.raw_decode(text, pos)
    except ValueError:
        return None


def _whole_json(text: str) -> Any:
    """`text` as one JSON value (a code fence around it allowed), else None."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    found = _json_at(text, 0)
    if found is None or text[found[1] :].strip():
        return None
    return found[0]


def _hermes(text: str, names: Collection[str]) -> tuple[str, list[ParsedCall]] | None:
    calls: list[ParsedCall] = []
    content: list[str] = []
    pos = 0
    while (start := text.find(HERMES_OPEN, pos)) >= 0:
        found = _json_at(text, start + len(HERMES_OPEN))
        if found is None:
            return None
        call = _call(found[0], names)
        if call is None:
            return None
        calls.append(call)
        content.append(text[pos:start])
        end = found[1]
        rest = text[end:].lstrip()
        # The closing tag may be missing when it was a stop string or generation ended.
        end = len(text) - len(rest) + len(HERMES_CLOSE) if rest.startswith(HERMES_CLOSE) else end
        pos = end
    if not calls:
        return None
    content.append(text[pos:])
    return "".join(content).strip(), calls


def _mistral(text: str, names: Collection[str]) -> tuple[str, list[ParsedCall]] | None:
    start = text.find(MISTRAL)
    if start < 0:
        return None
    calls: list[ParsedCall] = []
    pos = start
    while text.startswith(MISTRAL, pos):
        pos += len(MISTRAL)
        v11 = _MISTRAL_V11.match(text, pos)
        if v11:
            found = _json_at(text, v11.end())
            value: Any = {"name": v11.group(1), "arguments": found[0] if found else None}
        else:
            found = _json_at(text, pos)
            value = found[0] if found else None
        more = _calls(value, names) if found else None
        if found is None or more is None:
            return None
        calls += more
        pos = found[1]
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if text[pos:].strip():
        return None
    return text[:start].strip(), calls


def _llama(text: str, names: Collection[str]) -> tuple[str, list[ParsedCall]] | None:
    start = text.find(PYTHON_TAG)
    if start < 0:
        return None
    # Llama 3.1 separates several JSON calls with ';' after the python tag.
    calls: list[ParsedCall] = []
    for part in text[start + len(PYTHON_TAG) :].split(";"):
        if not part.strip():
            continue
        more = _calls(_whole_json(part), names)
        if more is None:
            return None
        calls += more
    return (text[:start].strip(), calls) if calls else None


def parse_tool_calls(text: str, names: Collection[str]) -> tuple[str, list[ParsedCall]]:
    """`text`'s content and calls to the functions `names`; ([text], []) when none parse.

    A format that is found but does not parse (cut off, an unknown function) leaves the whole
    text as content, as a model's answer that only mentions a marker does."""
    for parse in (_hermes, _mistral, _llama):
        found = parse(text, names)
        if found is not None:
            return found
    calls = _calls(_whole_json(text), names)  # Llama 3.x JSON, or any JSON call
    if calls:
        return "", calls
    return text, []


def parse_forced_call(text: str, names: Collection[str]) -> ParsedCall | None:
    """The single call a `json_schema`-forced output holds (ORCH-252), or None if it is cut."""
    calls = _calls(_whole_json(text), names)
    return calls[0] if calls and len(calls) == 1 else None


class ToolStream:
    """Content deltas and OpenAI `tool_calls` deltas from a stream of output text (ORCH-255).

    Text is passed on at once except for what may be the start of a call: a suffix that is a
    prefix of a marker, and, while nothing but whitespace was written, an opening ``{``,
    ``[`` or code fence. From a marker on, the rest is held and parsed when the output ends;
    if it holds no call, it is passed on as content then. A forced call (ORCH-252) streams as
    it is written: its name once complete, then its arguments as they come, holding back only
    what may be the closing brace of the call object.
    """

    def __init__(self, names: Collection[str], *, forced: bool = False) -> None:
        self.names = names
        self.forced = forced
        self.pending = ""  # text not passed on yet
        self.started = False  # some non-whitespace content was passed on
        self.holding = forced  # a call (may have) begun: hold everything to the end
        self.calls: list[ParsedCall] = []
        # A forced call being streamed: its id and name, where its arguments start in
        # `pending`, and how much of them was sent.
        self.forced_call: tuple[str, str] | None = None
        self.args_at = 0
        self.args_sent = 0

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Pass `text` in; returns the content and the `tool_calls` deltas to pass on now."""
        self.pending += text
        if self.forced:
            return "", self._forced_deltas()
        if self.holding:
            return "", []
        if not self.started:
            head = self.pending.lstrip()
            if not head:
                return "", []
            if head[0] in "{[`":
                self.holding = True
                return "", []
        cut = min((i for m in MARKERS if (i := self.pending.find(m)) >= 0), default=-1)
        if cut >= 0:
            self.holding = True
            out, self.pending = self.pending[:cut], self.pending[cut:]
        else:
            keep = len(self.pending) - _partial_marker(self.pending)
            out, self.pending = self.pending[:keep], self.pending[keep:]
        self.started = self.started or bool(out.strip())
        return out, []

    def _forced_deltas(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.forced_call is None:
            head = _FORCED_HEAD.match(self.pending)
            if head is None:
                return out
            try:
                name = json.loads(head.group(1))
            except ValueError:
                return out
            if name not in self.names:
                return out  # not a valid call: finish() reports it as content
            self.forced_call = (new_call_id(), name)
            self.args_at = head.end()
            out.append(_name_delta(0, *self.forced_call))
        args = self.pending[self.args_at :]
        upto = len(_without_close(args))
        if upto > self.args_sent:
            out.append({"index": 0, "function": {"arguments": args[self.args_sent : upto]}})
            self.args_sent = upto
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end: the content still held, and the `tool_calls` deltas still to send."""
        text, self.pending = self.pending, ""
        if not self.forced:
            content, self.calls = parse_tool_calls(text, self.names)
            return content, call_deltas(self.calls)
        call = parse_forced_call(text, self.names)
        if self.forced_call is None:  # nothing was sent: all of it is content unless a call
            if call is None:
                return text, []
            self.calls = [call]
            return "", call_deltas(self.calls)
        args = _without_close(text[self.args_at :])
        if call is not None:  # complete: the arguments as sent
            self.calls = [ParsedCall(self.forced_call[0], self.forced_call[1], args)]
        rest = args[self.args_sent :]
        return "", [{"index": 0, "function": {"arguments": rest}}] if rest else []

    @property
    def called(self) -> bool:
        """Whether the output held complete calls (finish_reason `tool_calls`)."""
        return bool(self.calls)


# The start of a forced call up to its arguments, as the forcing schema's grammar writes it.
_FORCED_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


def _without_close(args: str) -> str:
    """`args` without what may be the call object's closing brace (and whitespace) after it."""
    body = args.rstrip()
    return body[:-1].rstrip() if body.endswith("}") else body


def _name_delta(index: int, call_id: str, name: str) -> dict[str, Any]:
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }


def _partial_marker(text: str) -> int:
    """The length of the longest suffix of `text` that a marker starts with."""
    for n in range(min(len(text), max(map(len, MARKERS)) - 1), 0, -1):
        if any(m.startswith(text[-n:]) for m in MARKERS):
            return n
    return 0


def call_deltas(calls: list[ParsedCall]) -> list[dict[str, Any]]:
    """OpenAI's streamed `tool_calls` entries: per call, one with its index, id, type and name
    (arguments empty), then one with its arguments."""
    out: list[dict[str, Any]] = []
    for i, c in enumerate(calls):
        out.append(_name_delta(i, c.id, c.name))
        out.append({"index": i, "function": {"arguments": c.arguments}})
    return out
