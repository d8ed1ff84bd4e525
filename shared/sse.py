"""Server-sent event framing on the hot path: one event is one small bytes object.

Encoding by hand (not through a generic event class) keeps the per-token cost to one
`json.dumps` and a bytes join; the relay and the worker call this once per token.
"""

from __future__ import annotations

import json
from typing import Any

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# JSON leaves these unescaped, but many SSE clients split lines with str.splitlines(), which
# breaks on them (the SSE spec itself splits only on CR and LF). Escaping keeps every client safe.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dumps(data: dict[str, Any]) -> str:
    """Compact JSON that is safe on one SSE `data:` line."""
    return _dumps(data).translate(_LINE_BREAKERS)


def encode_event(event: str, data: dict[str, Any], event_id: int | str | None = None) -> bytes:
    """Frame one SSE event. `data` is JSON without newlines, so one `data:` line suffices."""
    head = f"id: {event_id}\nevent: {event}\n" if event_id is not None else f"event: {event}\n"
    return (head + "data: " + dumps(data) + "\n\n").encode()


def encode_comment(text: str = "") -> bytes:
    """An SSE comment line, used as a keep-alive that clients ignore."""
    return f": {text}\n\n".encode()
