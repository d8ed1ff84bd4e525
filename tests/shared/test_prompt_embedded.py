"""The embedded-template path: a GGUF's tokenizer.chat_template rendered in the Jinja sandbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pytest

from shared.prompt_constructor import PromptError, build_prompt
from shared.testmodel import CHATML_TEMPLATE
from tests.shared.test_prompt_constructor import (
    ENDS_WITH_ASSISTANT,
    MULTI_TURN,
    NO_SYSTEM_MULTI_TURN,
    SYSTEM_USER,
    USER,
    Messages,
)

# meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json "chat_template", verbatim.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# meta-llama/Llama-2-7b-chat-hf tokenizer_config.json "chat_template", verbatim.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
# mistralai/cookbook concept-deep-dive/tokenization/chat_templates.md, Tokenizer V1 template.
MISTRAL_V1_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
# microsoft/Phi-3-mini-4k-instruct tokenizer_config.json "chat_template", verbatim.
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

SPACED: Messages = [
    {"role": "system", "content": " Be brief. "},
    {"role": "user", "content": "\n Hi there \n"},
    {"role": "assistant", "content": "  Hello. "},
    {"role": "user", "content": "Bye"},
]
ALL = [USER, SYSTEM_USER, MULTI_TURN, NO_SYSTEM_MULTI_TURN, ENDS_WITH_ASSISTANT, SPACED]
NO_SYSTEM = [USER, NO_SYSTEM_MULTI_TURN, ENDS_WITH_ASSISTANT]


def meta(source: str) -> dict[str, str]:
    return {"tokenizer.chat_template": source, "general.architecture": "llama"}


def embedded(source: str, messages: Sequence[Mapping[str, str]], **kw: object) -> str:
    prompt = build_prompt(messages, metadata=meta(source), **kw)  # type: ignore[arg-type]
    assert prompt.template == "embedded"
    return prompt.text


@pytest.mark.parametrize(
    ("family", "source", "bos", "eos", "conversations"),
    [
        ("qwen", CHATML_TEMPLATE, "<s>", "</s>", ALL),
        ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", ALL),
        ("llama2", LLAMA2_TEMPLATE, "<s>", "</s>", ALL),
        ("mistral", MISTRAL_V1_TEMPLATE, "<s>", "</s>", NO_SYSTEM),
        ("phi3", PHI3_TEMPLATE, "<s>", "<|endoftext|>", ALL),
    ],
)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_published_template_renders_like_the_builtin_format(
    family: str,
    source: str,
    bos: str,
    eos: str,
    conversations: list[Messages],
    add_generation_prompt: bool,
) -> None:
    """PC-091: each family's published Jinja template, rendered through the embedded path,
    gives the built-in format's text."""
    for messages in conversations:
        got = embedded(
            source,
            messages,
            bos_token=bos,
            eos_token=eos,
            add_generation_prompt=add_generation_prompt,
        )
        builtin = build_prompt(messages, family, add_generation_prompt=add_generation_prompt)
        assert got == builtin.text, messages


def test_embedded_chatml_golden() -> None:
    assert embedded(CHATML_TEMPLATE, SYSTEM_USER) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )


def test_leading_bos_removed_once_inner_bos_kept() -> None:
    text = embedded(LLAMA2_TEMPLATE, NO_SYSTEM_MULTI_TURN, bos_token="<s>", eos_token="</s>")
    assert text == "[INST] What is 2+2? [/INST] 4 </s><s>[INST] And 3+3? [/INST]"
    text = embedded(LLAMA3_TEMPLATE, USER, bos_token="<|begin_of_text|>")
    assert text.startswith("<|start_header_id|>user")


def test_text_starting_like_bos_is_kept_when_no_bos_given() -> None:
    # Without a BOS string nothing is removed, even if the text starts with "<s>".
    assert embedded("<s>{{ messages[0]['content'] }}", USER) == "<s>Hello!"


@pytest.mark.parametrize(
    ("source", "eos", "stop"),
    [
        (CHATML_TEMPLATE, "</s>", ("<|im_end|>", "</s>")),
        (CHATML_TEMPLATE, "<|im_end|>", ("<|im_end|>",)),
        (LLAMA3_TEMPLATE, "<|end_of_text|>", ("<|eot_id|>", "<|end_of_text|>")),
        (PHI3_TEMPLATE, "<|endoftext|>", ("<|end|>", "<|endoftext|>")),
        (LLAMA2_TEMPLATE, "</s>", ("</s>",)),
        (LLAMA2_TEMPLATE, None, ()),
        (LLAMA2_TEMPLATE, "", ()),
        # Every marker, mentioned in reverse: the stop strings follow the spec's order.
        (
            "{{ '<|endoftext|><|end_of_text|><|END_OF_TURN_TOKEN|><end_of_turn><|end|>"
            "<|eom_id|><|eot_id|><|im_end|>' }}",
            "<|eot_id|>",
            (
                "<|im_end|>",
                "<|eot_id|>",
                "<|eom_id|>",
                "<|end|>",
                "<end_of_turn>",
                "<|END_OF_TURN_TOKEN|>",
                "<|end_of_text|>",
                "<|endoftext|>",
            ),
        ),
    ],
)
def test_embedded_stop_strings(source: str, eos: str | None, stop: tuple[str, ...]) -> None:
    """PC-053: the well-known end-of-turn markers the template mentions, in the spec's order,
    then eos_token when given and not empty, without repeats."""
    prompt = build_prompt(USER, metadata=meta(source), bos_token="<s>", eos_token=eos)
    assert prompt.stop == stop


def test_explicit_name_beats_embedded_template() -> None:
    """PC-020: an explicit template name wins over the embedded template."""
    prompt = build_prompt(USER, "llama3", metadata=meta(CHATML_TEMPLATE))
    assert prompt.template == "llama3"
    assert prompt.text == build_prompt(USER, "llama3").text


def test_embedded_named_explicitly() -> None:
    prompt = build_prompt(USER, "embedded", metadata=meta(CHATML_TEMPLATE))
    assert prompt.text == build_prompt(USER, "qwen").text


def test_template_rejecting_messages() -> None:
    """PC-050: a template can call raise_exception(msg); the conversation is rejected with its
    message."""
    user_then_system = [{"role": "user", "content": "Hi"}, {"role": "system", "content": "x"}]
    with pytest.raises(PromptError) as err:
        embedded(MISTRAL_V1_TEMPLATE, user_then_system, bos_token="<s>", eos_token="</s>")
    assert err.value.field == "messages"
    assert str(err.value) == (
        "messages: the chat template rejected the messages: "
        "Only user and assistant roles are supported!"
    )
    with pytest.raises(PromptError, match="Conversation roles must alternate"):
        embedded(LLAMA2_TEMPLATE, [{"role": "assistant", "content": "x"}], bos_token="<s>")


def test_template_that_does_not_compile() -> None:
    with pytest.raises(PromptError) as err:
        embedded("{% for m in messages %}{{ m.content }}", USER)
    assert err.value.field == "template"
    assert str(err.value).startswith("template: the embedded chat template does not compile: ")
    assert "(line 1)" in str(err.value)


def test_missing_eos_token_fails_instead_of_rendering_without_it() -> None:
    with pytest.raises(PromptError) as err:
        embedded(LLAMA2_TEMPLATE, ENDS_WITH_ASSISTANT, bos_token="<s>")
    assert err.value.field == "template"
    assert "'eos_token' is undefined" in str(err.value)


def test_template_runtime_error() -> None:
    with pytest.raises(PromptError) as err:
        embedded("{{ messages[0]['content'] + 1 }}", USER)
    assert err.value.field == "template"
    assert str(err.value).startswith("template: the embedded chat template failed: TypeError")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
        ("{{ messages.append({}) }}", "access to attribute 'append' of 'list' object is unsafe"),
        ("{{ messages[0].update({}) }}", "access to attribute 'update' of 'dict' object is unsafe"),
        ("{{ 'a' * 100000000 }}", "repetition builds more than 1000000 items"),
        ("{{ [1] * 100000000 }}", "repetition builds more than 1000000 items"),
        ("{{ 10 ** 100000 }}", "exponent larger than 256"),
        (
            "{% for i in range(99999) %}{{ 'a' * 999999 }}{% endfor %}",
            "output longer than 16000006 characters",
        ),
        ("{% for i in range(1000000) %}{% endfor %}", "OverflowError: Range too big"),
    ],
)
def test_sandbox_refuses_unsafe_templates(source: str, reason: str) -> None:
    """PC-052: no Python internals, no mutation of the inputs, bounded `*`, `**`, `range` and
    rendered length (16,000,000 plus the contents' 6 characters)."""
    with pytest.raises(PromptError) as err:
        embedded(source, USER)
    assert err.value.field == "template"
    assert reason in err.value.reason


def test_strftime_now_reads_the_clock_passed_in() -> None:
    """PC-050: strftime_now(fmt) formats the now() passed in."""
    source = "{{ strftime_now('%d %b %Y') }}|{{ messages[0]['content'] }}"
    text = embedded(source, USER, now=lambda: datetime(2024, 7, 26, 12, 0))
    assert text == "26 Jul 2024|Hello!"


def test_hugging_face_environment_features() -> None:
    """PC-050: trim_blocks, lstrip_blocks, loop controls and a tojson that does not HTML-escape,
    as transformers' apply_chat_template has them."""
    # tojson without HTML escaping; loop controls; attribute access to message keys;
    # trim_blocks/lstrip_blocks; tools defined as none, as transformers passes them.
    msgs = [{"role": "user", "content": "<b>&'é"}, {"role": "user", "content": "second"}]
    assert embedded("{{ messages[0]['content'] | tojson }}", msgs) == '"<b>&\'é"'
    source = (
        "{% for m in messages %}\n"
        "  {% if loop.index0 > 0 %}{% break %}{% endif %}\n"
        "{{ m.role }}:{{ m.content }}\n"
        "{% endfor %}"
        "{% if tools is none %}no tools{% endif %}"
    )
    assert embedded(source, msgs) == "user:<b>&'é\nno tools"


def test_tojson_takes_the_transformers_arguments() -> None:
    """PC-050: tojson takes ensure_ascii, indent, separators and sort_keys, with transformers'
    defaults (no ASCII escaping, no indent, default separators, keys unsorted)."""
    value = "{{ {'b': 'é', 'a': [1, 2]} | tojson"
    assert embedded(value + " }}", USER) == '{"b": "é", "a": [1, 2]}'
    assert embedded(value + "(ensure_ascii=True) }}", USER) == '{"b": "\\u00e9", "a": [1, 2]}'
    assert embedded(value + "(sort_keys=True) }}", USER) == '{"a": [1, 2], "b": "é"}'
    assert embedded(value + "(separators=(',', ':')) }}", USER) == '{"b":"é","a":[1,2]}'
    assert embedded(value + "(indent=1) }}", USER) == ('{\n "b": "é",\n "a": [\n  1,\n  2\n ]\n}')


RENDER_CONTEXT = (
    "{{ messages | tojson }}|{{ add_generation_prompt }}|{{ tools is none }}"
    "|{{ documents is none }}|{{ bos_token is defined }}:{{ bos_token | default('') }}"
    "|{{ eos_token is defined }}:{{ eos_token | default('') }}"
)


def test_render_context() -> None:
    """PC-051: messages as fresh {role, content} dicts (other keys left out),
    add_generation_prompt, tools and documents none, bos_token/eos_token only when given."""
    msgs = [{"role": "user", "content": "Hi", "name": "alice"}]
    assert embedded(RENDER_CONTEXT, msgs) == (
        '[{"role": "user", "content": "Hi"}]|True|True|True|False:|False:'
    )
    assert embedded(
        RENDER_CONTEXT, msgs, add_generation_prompt=False, bos_token="<s>", eos_token="</s>"
    ) == ('[{"role": "user", "content": "Hi"}]|False|True|True|True:<s>|True:</s>')
    # Given empty, they are defined (and empty), not left out.
    assert embedded(RENDER_CONTEXT, msgs, bos_token="", eos_token="").endswith("|True:|True:")
    # Without them, a template that concatenates them fails rather than rendering without.
    for source in ("{{ bos_token + 'x' }}", "{{ 'x' + eos_token }}"):
        with pytest.raises(PromptError, match=r"^template: .*_token' is undefined"):
            embedded(source, USER)


def test_messages_reach_the_template_unchanged() -> None:
    """PC-051: the template sees each message's role and content as given."""
    source = "{% for m in messages %}[{{ m['role'] }}={{ m['content'] }}]{% endfor %}"
    assert embedded(source, MULTI_TURN) == (
        "[system=You are terse.][user=What is 2+2?][assistant=4][user=And 3+3?]"
    )


@pytest.mark.parametrize("metadata", [None, {}, {"tokenizer.chat_template": "   "}])
def test_embedded_without_a_template_in_metadata(metadata: dict[str, str] | None) -> None:
    """PC-054: naming embedded without a non-blank chat template is rejected."""
    with pytest.raises(PromptError) as err:
        build_prompt(USER, "embedded", metadata=metadata)
    assert str(err.value) == (
        "template: 'embedded' needs metadata with a non-empty tokenizer.chat_template"
    )
