"""The prompt constructor's public interface, and that it is a pure function."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import shared.prompt_constructor as pc
from shared.prompt_constructor import (
    TEMPLATES,
    Prompt,
    PromptError,
    build_prompt,
    choose_template,
)
from shared.testmodel import CHATML_TEMPLATE
from tests.shared.test_prompt_constructor import MULTI_TURN, USER

P = inspect.Parameter


def test_package_exports_the_documented_interface() -> None:
    """PC-001: the package exports build_prompt, choose_template, TEMPLATES, Prompt and
    PromptError, with the documented signatures."""
    for name in ("build_prompt", "choose_template", "TEMPLATES", "Prompt", "PromptError"):
        assert name in pc.__all__
        assert hasattr(pc, name)
    assert dataclasses.is_dataclass(Prompt)
    assert issubclass(PromptError, ValueError)
    assert isinstance(TEMPLATES, Mapping)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in TEMPLATES.items())

    params = inspect.signature(build_prompt).parameters
    assert [(p.name, p.kind, p.default) for p in params.values()] == [
        ("messages", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("template", P.POSITIONAL_OR_KEYWORD, None),
        ("metadata", P.KEYWORD_ONLY, None),
        ("add_generation_prompt", P.KEYWORD_ONLY, True),
        ("bos_token", P.KEYWORD_ONLY, None),
        ("eos_token", P.KEYWORD_ONLY, None),
        ("now", P.KEYWORD_ONLY, datetime.now),
        ("tools", P.KEYWORD_ONLY, None),
    ]
    assert typing.get_type_hints(build_prompt) == {
        "messages": Sequence[Mapping[str, Any]],
        "template": str | None,
        "metadata": Mapping[str, str] | None,
        "add_generation_prompt": bool,
        "bos_token": str | None,
        "eos_token": str | None,
        "now": Callable[[], datetime],
        "tools": Sequence[Mapping[str, Any]] | None,
        "return": Prompt,
    }
    params = inspect.signature(choose_template).parameters
    assert [(p.name, p.kind, p.default) for p in params.values()] == [
        ("metadata", P.POSITIONAL_OR_KEYWORD, P.empty)
    ]
    assert typing.get_type_hints(choose_template) == {
        "metadata": Mapping[str, str] | None,
        "return": str,
    }


def clock() -> datetime:
    return datetime(2024, 7, 26, 12, 0)


DATED = CHATML_TEMPLATE + "{{ strftime_now('%d %b %Y') }}|{{ messages | tojson }}"


def meta(source: str) -> dict[str, str]:
    return {"tokenizer.chat_template": source}


def test_same_arguments_same_prompt_and_no_state_between_calls() -> None:
    """PC-004: the same arguments and the same now() give the same Prompt; calls in between,
    with other templates and messages, change nothing."""
    first = build_prompt(MULTI_TURN, metadata=meta(DATED), eos_token="</s>", now=clock)
    assert first.text.endswith("26 Jul 2024|" + json.dumps(list(MULTI_TURN)))
    # Other calls in between: another template source, other messages, a failing template.
    other = build_prompt(USER, metadata=meta("{{ messages[0]['content'] }}"), now=clock)
    assert other.text == "Hello!"
    assert build_prompt(USER, "llama2") != build_prompt(USER, "mistral")
    with pytest.raises(PromptError):
        build_prompt(USER, metadata=meta("{{ raise_exception('no') }}"))
    again = build_prompt(MULTI_TURN, metadata=meta(DATED), eos_token="</s>", now=clock)
    assert again == first
    for name in TEMPLATES:
        if name != "embedded":
            assert build_prompt(MULTI_TURN[1:], name) == build_prompt(MULTI_TURN[1:], name)


_NO_IO_SCRIPT = """
import json, sys
from datetime import datetime
from pathlib import Path
from shared.prompt_constructor import TEMPLATES, build_prompt, choose_template
from shared.testmodel import CHATML_TEMPLATE
from tests.shared.test_prompt_constructor import MULTI_TURN, USER

IO_EVENTS = ("open", "import", "socket.", "subprocess.", "os.", "shutil.", "sqlite3.")
DATED = CHATML_TEMPLATE + "{{ strftime_now('%d %b %Y') }}|{{ messages | tojson }}"
clock = lambda: datetime(2024, 7, 26, 12, 0)
meta = lambda source: {"tokenizer.chat_template": source}
# A first call lets the interpreter import, once, what Jinja loads lazily (a codec).
build_prompt(USER, metadata=meta(DATED + "{{ 'warm\\n' }}"), now=clock)
events = []
recording = True
sys.addaudithook(lambda e, a: recording and e.startswith(IO_EVENTS) and events.append(e))
build_prompt(MULTI_TURN, metadata=meta(DATED + "{{ 'fresh\\t' }}"), now=clock)
for name in TEMPLATES:
    if name != "embedded":
        build_prompt(MULTI_TURN[1:], name)
choose_template({"general.architecture": "llama", "general.name": "Llama 3"})
recording = False
print(json.dumps(events))
"""


def test_no_io() -> None:
    """PC-004: build_prompt does no I/O (files, sockets, processes, the OS), for every template,
    including compiling and rendering an embedded template it has not seen before. In a
    process of its own: an audit hook cannot be removed once added."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _NO_IO_SCRIPT], cwd=root, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
