"""The Response object and its stream events for one task, pure (ORCH-264..ORCH-266).

`ResponseWriter` turns a task's output, as it comes, into the Responses API's typed stream
events (each with its `sequence_number`) and keeps the `output` items they describe, so a
streamed reply and one that is not are the same by construction: the route that does not
stream runs the writer too and sends only `response()`. Tool calls are read from the output
by the chat path's `ToolStream` (ORCH-253..ORCH-255) and become `function_call` items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestratord.domain.toolcalls import ToolStream
from orchestratord.http.openai_tools import ToolMode

Event = dict[str, Any]


class ResponseWriter:
    """One task's Response: events out as its text comes in, and the final object."""

    def __init__(
        self, task_id: str, created_at: int, echo: Mapping[str, Any], tools: ToolMode | None
    ) -> None:
        self.id = "resp_" + task_id
        self.task_id = task_id
        self.created_at = created_at
        self.echo = dict(echo)  # the request's settings the Response repeats
        self.seq = 0
        self.status = "in_progress"
        self.incomplete: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the message item being written
        self.call: dict[str, Any] | None = None  # the function_call item being written
        self.calls = ToolStream(tools.names, forced=tools.forced) if tools else None

    def response(self) -> dict[str, Any]:
        """The Response object as it stands."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "error": None,
            "incomplete_details": self.incomplete,
            "output": [dict(item) for item in self.output],
            "usage": self.usage,
            "previous_response_id": None,
            "store": False,
            "background": False,
            "metadata": {},
            **self.echo,
        }

    def _event(self, kind: str, **fields: Any) -> Event:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def error(self, code: str, message: str, param: str | None) -> Event:
        """The `error` event of a stream that fails after it started."""
        return self._event("error", code=code, message=message, param=param)

    def text(self, piece: str) -> list[Event]:
        """Events for a piece of the task's output."""
        if self.calls is None:
            return self._content(piece)
        content, deltas = self.calls.feed(piece)  # what may be a call is held (ORCH-255)
        return self._content(content) + self._deltas(deltas)

    def end(
        self, stop_reason: Any, input_tokens: int, output_tokens: int, cached: int | None
    ) -> list[Event]:
        """Events for the end of the task: the last output, the items closed, the Response."""
        out: list[Event] = []
        if self.calls is not None:
            content, deltas = self.calls.finish()
            out += self._content(content) + self._deltas(deltas)
        if stop_reason == "MAX_TOKENS":
            self.status, self.incomplete = "incomplete", {"reason": "max_output_tokens"}
        elif stop_reason == "CANCELLED":
            self.status = "cancelled"
        else:
            self.status = "completed"
        out += self._close_message() + self._close_call()
        self.usage = {
            "input_tokens": input_tokens,
            # llorch writes no cache on request (OpenAI's prompt caching is implicit too).
            "input_tokens_details": {"cached_tokens": cached or 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        kind = "response.completed" if self.status == "completed" else "response.incomplete"
        return [*out, self._event(kind, response=self.response())]

    def _item_status(self) -> str:
        return "completed" if self.status in ("in_progress", "completed") else "incomplete"

    def _content(self, text: str) -> list[Event]:
        if not text:
            return []
        out = self._close_call()
        if self.message is None:
            index = len(self.output)
            self.message = {
                "id": f"msg_{self.task_id}_{index}",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            self.output.append(self.message)
            out.append(self._added(index, self.message))
            out.append(self._part("response.content_part.added", index, ""))
        index = len(self.output) - 1
        self.message["content"] = [_text_part(_text(self.message) + text)]
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self.message["id"],
                output_index=index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _part(self, kind: str, index: int, text: str) -> Event:
        assert self.message is not None
        return self._event(
            kind,
            item_id=self.message["id"],
            output_index=index,
            content_index=0,
            part=_text_part(text),
        )

    def _added(self, index: int, item: dict[str, Any]) -> Event:
        return self._event("response.output_item.added", output_index=index, item=dict(item))

    def _close_message(self) -> list[Event]:
        message, self.message = self.message, None
        if message is None:
            return []
        index = self.output.index(message)
        text = _text(message)
        message["status"] = self._item_status()
        self.message = message  # for _part
        out = [
            self._event(
                "response.output_text.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._part("response.content_part.done", index, text),
            self._event("response.output_item.done", output_index=index, item=dict(message)),
        ]
        self.message = None
        return out

    def _deltas(self, deltas: list[dict[str, Any]]) -> list[Event]:
        """Events for the chat `tool_calls` deltas of ToolStream: a delta with an `id` opens a
        function_call item, one with `arguments` adds to the open item's."""
        out: list[Event] = []
        for d in deltas:
            fn = d.get("function", {})
            if "id" in d:
                out += self._close_message() + self._close_call()
                index = len(self.output)
                self.call = {
                    "id": f"fc_{self.task_id}_{index}",
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": d["id"],
                    "name": fn.get("name", ""),
                    "arguments": "",
                }
                self.output.append(self.call)
                out.append(self._added(index, self.call))
            args = fn.get("arguments", "")
            if args and self.call is not None:
                self.call["arguments"] += args
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=self.call["id"],
                        output_index=len(self.output) - 1,
                        delta=args,
                    )
                )
        return out

    def _close_call(self) -> list[Event]:
        call, self.call = self.call, None
        if call is None:
            return []
        index = self.output.index(call)
        done = self.calls is not None and any(c.id == call["call_id"] for c in self.calls.calls)
        # A call still being written when the output ends was cut short (max_output_tokens).
        call["status"] = "completed" if done or self.status == "in_progress" else "incomplete"
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=call["id"],
                output_index=index,
                arguments=call["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=dict(call)),
        ]


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _text(message: Mapping[str, Any]) -> str:
    content = message["content"]
    return str(content[0]["text"]) if content else ""
