"""Bad input to build_prompt: each case raises PromptError naming the field and the problem."""

from __future__ import annotations

import pytest

from shared.prompt_constructor import PromptError, build_prompt
from tests.shared.test_prompt_constructor import USER

HELLO = {"role": "user", "content": "Hello!"}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages: must hold at least one message"),
        ((), "messages: must hold at least one message"),
        ("Hello!", "messages: expected a list of messages, got str"),
        (b"Hello!", "messages: expected a list of messages, got bytes"),
        (None, "messages: expected a list of messages, got null"),
        (HELLO, "messages: expected a list of messages, got dict"),
        (["Hello!"], "messages[0]: expected an object with role and content, got str"),
        ([HELLO, None], "messages[1]: expected an object with role and content, got null"),
        ([{"content": "x"}], "messages[0].role: missing"),
        ([HELLO, {"role": 1, "content": "x"}], "messages[1].role: expected a string, got int"),
        (
            [HELLO, {"role": "assistant", "content": "Hi"}, {"role": "robot", "content": "x"}],
            "messages[2].role: unknown role 'robot'; expected system, user, assistant, tool",
        ),
        (
            [{"role": "function", "content": "42"}],
            "messages[0].role: unknown role 'function'; expected system, user, assistant, tool",
        ),
        (
            [{"role": "User", "content": "x"}],
            "messages[0].role: unknown role 'User'; expected system, user, assistant, tool",
        ),
        ([{"role": "user"}], "messages[0].content: missing"),
        ([{"role": "user", "content": None}], "messages[0].content: expected a string, got null"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
            "messages[0].content: expected a string, got list",
        ),
        ([{"role": "user", "content": 3}], "messages[0].content: expected a string, got int"),
    ],
)
@pytest.mark.parametrize("template", ["qwen", "llama2", "raw"])
def test_bad_messages(messages: object, message: str, template: str) -> None:
    """PC-010, PC-011, PC-070, PC-071, PC-092: each bad-message case raises PromptError with its
    field and reason: not a non-empty sequence, not a mapping, role or content missing or not a
    string, a role other than system/user/assistant/tool (PC-102; function included,
    case-sensitive)."""
    with pytest.raises(PromptError) as err:
        build_prompt(messages, template)  # type: ignore[arg-type]
    assert str(err.value) == message
    field, _, reason = message.partition(": ")
    assert (err.value.field, err.value.reason) == (field, reason)


def test_prompt_error_is_a_value_error() -> None:
    """PC-070: PromptError is a ValueError."""
    with pytest.raises(ValueError, match="must hold at least one message"):
        build_prompt([], "qwen")


def test_empty_content_is_allowed() -> None:
    """PC-012: empty content is accepted."""
    assert build_prompt([{"role": "user", "content": ""}], "raw").text == ""


def test_unknown_template_name() -> None:
    """PC-070: an unknown template name is a PromptError on field template."""
    with pytest.raises(PromptError) as err:
        build_prompt(USER, "gpt5")
    assert str(err.value) == (
        "template: unknown template 'gpt5'; expected one of "
        "embedded, qwen, chatml, llama3, llama2, mistral, phi3, raw"
    )
    assert err.value.field == "template"


def test_template_name_must_be_a_string() -> None:
    with pytest.raises(PromptError, match=r"^template: expected a template name, got int$"):
        build_prompt(USER, 3)  # type: ignore[arg-type]


def test_names_are_exact() -> None:
    """PC-003: template names are case-sensitive."""
    with pytest.raises(PromptError, match="unknown template 'Llama3'"):
        build_prompt(USER, "Llama3")


SYSTEM = {"role": "system", "content": "S"}
ASSISTANT = {"role": "assistant", "content": "A"}


@pytest.mark.parametrize("family", ["llama2", "mistral"])
@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([SYSTEM], "messages: {f} needs a user message after the system message"),
        (
            [HELLO, SYSTEM],
            "messages[1].role: {f} accepts a system message only as the first message",
        ),
        (
            [SYSTEM, SYSTEM, HELLO],
            "messages[1].role: {f} accepts a system message only as the first message",
        ),
        (
            [ASSISTANT, HELLO],
            "messages[0].role: {f} needs user and assistant turns to alternate, starting with "
            "user; expected user, got assistant",
        ),
        (
            [SYSTEM, HELLO, HELLO],
            "messages[2].role: {f} needs user and assistant turns to alternate, starting with "
            "user; expected assistant, got user",
        ),
        (
            [HELLO, ASSISTANT, ASSISTANT],
            "messages[2].role: {f} needs user and assistant turns to alternate, starting with "
            "user; expected user, got assistant",
        ),
    ],
)
def test_llama2_and_mistral_need_alternating_turns(
    family: str, messages: list[dict[str, str]], message: str
) -> None:
    """PC-014: llama2 and mistral reject a misplaced system message or non-alternating turns,
    naming the message."""
    with pytest.raises(PromptError) as err:
        build_prompt(messages, family)
    assert str(err.value) == message.format(f=family)


@pytest.mark.parametrize("family", ["qwen", "chatml", "llama3", "phi3", "raw"])
def test_free_order_formats_accept_any_order(family: str) -> None:
    """PC-013: the role-tagged formats accept roles in any order."""
    # These formats tag every message with its role, so no order is ambiguous.
    roles = ["user", "system", "assistant", "assistant"]
    words = ["one", "two", "three", "four"]
    msgs = [{"role": r, "content": w} for r, w in zip(roles, words, strict=True)]
    text = build_prompt(msgs, family).text
    positions = [text.index(w) for w in words]
    assert positions == sorted(positions)


def test_template_checked_before_messages() -> None:
    """PC-072: an unknown template is reported before problems in the messages."""
    with pytest.raises(PromptError, match=r"^template: unknown template"):
        build_prompt([], "nope")
