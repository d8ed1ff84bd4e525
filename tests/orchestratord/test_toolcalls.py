"""Tool calls read from model output, per family, whole and streamed (ORCH-253..ORCH-255)."""

from __future__ import annotations

import json
import re

import pytest

from orchestratord.domain.toolcalls import ToolStream, parse_forced_call, parse_tool_calls

NAMES = ("get_weather", "get_time")
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")


def _calls(text: str) -> tuple[str, list[tuple[str, object]]]:
    content, calls = parse_tool_calls(text, NAMES)
    assert all(CALL_ID.match(c.id) for c in calls)
    return content, [(c.name, json.loads(c.arguments)) for c in calls]


PARIS: tuple[str, object] = ("get_weather", {"city": "Paris"})
TIME: tuple[str, object] = ("get_time", {})


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        # Hermes / Qwen 2.5 / Qwen 3 (and the fallback prompt's format)
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            "",
            [PARIS],
        ),
        (
            'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
            "Let me check.",
            [PARIS, TIME],
        ),
        ('<tool_call>{"name": "get_time", "arguments": "{}"}', "", [TIME]),  # no closing tag
        # Mistral (v3 JSON list; v11 name[ARGS])
        (
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, '
            '"id": "a1b2c3d4e"}]',
            "",
            [PARIS],
        ),
        (
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
            "",
            [PARIS, TIME],
        ),
        # Llama 3.x: python tag, and the bare JSON the Llama 3.1/3.2 JSON tool prompt asks for
        ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
        (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "get_time", "parameters": {}}',
            "",
            [PARIS, TIME],
        ),
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
        ('{"type": "function", "function": {"name": "get_time", "parameters": {}}}', "", [TIME]),
        # generic JSON: a list, a code fence
        (
            '[{"name": "get_time", "arguments": {}}, '
            '{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            "",
            [TIME, PARIS],
        ),
        ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', "", [PARIS]),
    ],
)
def test_orch_253_each_family_parses(text: str, content: str, calls: list[object]) -> None:
    """ORCH-253: golden outputs of each family give their content and calls."""
    assert _calls(text) == (content, calls)


@pytest.mark.parametrize(
    "text",
    [
        "The weather is fine.",
        '{"name": "rm_rf", "arguments": {}}',  # not an offered function
        '{"name": "get_time", "arguments": [1]}',  # arguments not an object
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # cut off
        "I would use <tool_call> here.",
        '{"name": "get_time"} and then some',
        "[TOOL_CALLS] nothing",
    ],
)
def test_orch_253_no_call_leaves_the_text(text: str) -> None:
    """ORCH-253: output that is not a well-formed call of an offered function stays content."""
    assert _calls(text) == (text, [])


def test_orch_252_forced_call() -> None:
    """ORCH-252: a forced output is one call's JSON; a cut one is no call."""
    call = parse_forced_call('{"name": "get_weather", "arguments": {"city": "Paris"}}', NAMES)
    assert call is not None and (call.name, json.loads(call.arguments)) == PARIS
    assert parse_forced_call('{"name": "get_weather", "arguments": {"ci', NAMES) is None


def _stream(pieces: list[str], forced: bool = False) -> tuple[str, list[dict[str, object]]]:
    s = ToolStream(NAMES, forced=forced)
    passed, deltas = [], []
    for p in pieces:
        text, more = s.feed(p)
        passed.append(text)
        deltas += more
    content, more = s.finish()
    assert s.called == bool(s.calls)
    return "".join(passed) + content, deltas + more


def _assemble(deltas: list[dict[str, object]]) -> list[tuple[str, object]]:
    """What OpenAI clients do with tool_calls deltas: merge by index, concatenating arguments."""
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        index = d["index"]
        assert isinstance(index, int)
        fn = d["function"]
        assert isinstance(fn, dict)
        entry = calls.setdefault(index, {"name": "", "arguments": ""})
        if "id" in d:
            assert CALL_ID.match(str(d["id"])) and d["type"] == "function"
            entry["name"] = fn["name"]
        entry["arguments"] += fn["arguments"]
    return [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]


def test_orch_255_text_streams_at_once_and_markers_are_held() -> None:
    """ORCH-255: plain text passes at once; a suffix that may start a marker is held, then
    passed on when it turns out not to be one."""
    s = ToolStream(NAMES)
    assert s.feed("Hello") == ("Hello", [])
    assert s.feed(" wor") == (" wor", [])
    assert s.feed("ld <tool") == ("ld ", [])
    assert s.feed("box>") == ("<toolbox>", [])
    assert s.feed(" [TOOL") == (" ", [])
    assert s.feed("_CALLS]") == ("", [])  # a marker: the rest is held to the end
    assert s.finish() == ("[TOOL_CALLS]", [])
    assert not s.called


def test_orch_255_hermes_call_after_text_streams_as_deltas() -> None:
    """ORCH-255: text, then a call split across pieces: the text streams, the call arrives as
    deltas that assemble into it, with no marker text in the content."""
    pieces = [
        "Checking",
        ".\n<tool",
        '_call>\n{"name": "get_',
        'weather", "arguments": {"city"',
        ': "Paris"}}\n</tool_call>',
    ]
    content, deltas = _stream(pieces)
    assert content == "Checking.\n"
    assert _assemble(deltas) == [PARIS]
    first = deltas[0]
    assert set(first) == {"index", "id", "type", "function"}


def test_orch_255_leading_json_is_held_and_forced_streams() -> None:
    """ORCH-255: a leading '{' is held (Llama JSON / generic); a forced call streams as deltas;
    held text that is no call is content at the end."""
    assert _assemble(_stream(["  {", '"name": "get_time", "parameters": {}}'])[1]) == [TIME]
    forced = _stream(['{"name": "get_weather",', ' "arguments": {"city": "Paris"}}'], forced=True)
    assert forced[0] == "" and _assemble(forced[1]) == [PARIS]
    assert _stream(["{not json"]) == ("{not json", [])
    assert _stream(['{"name": "rm", "arguments": {}}'], forced=True) == (
        '{"name": "rm", "arguments": {}}',
        [],
    )


def test_orch_255_a_forced_call_streams_its_arguments_as_they_come() -> None:
    """ORCH-255: a forced call's name goes out once complete, then its arguments in fragments
    as they are written, never the call object's own closing brace."""
    s = ToolStream(NAMES, forced=True)
    assert s.feed('{ "name" :"get_wea') == ("", [])
    text, (head, first) = s.feed('ther", "arguments": {"ci')
    assert head["function"] == {"name": "get_weather", "arguments": ""} and head["index"] == 0
    assert CALL_ID.match(head["id"]) and text == ""
    assert first == {"index": 0, "function": {"arguments": '{"ci'}}
    assert s.feed('ty": "Paris"}') == (
        "",
        [{"index": 0, "function": {"arguments": 'ty": "Paris"'}}],
    )
    assert s.feed(" } ") == ("", [{"index": 0, "function": {"arguments": "}"}}])
    assert s.finish() == ("", [])
    assert s.called and s.calls[0].id == head["id"] and s.calls[0].arguments == '{"city": "Paris"}'
    # Nested objects: the held brace is the arguments' own when more follows.
    nested = ['{"name": "get_time", "arguments": {"a": {}', "}", "}"]
    content, deltas = _stream(nested, forced=True)
    assert content == "" and _assemble(deltas) == [("get_time", {"a": {}})]
    # Cut by max_tokens after the name: what was sent stays, it is not a complete call.
    s = ToolStream(NAMES, forced=True)
    sent = s.feed('{"name": "get_time", "arguments": {"a": ')[1]
    assert [d["function"].get("arguments") for d in sent] == ["", '{"a":']
    assert s.finish() == ("", []) and not s.called
