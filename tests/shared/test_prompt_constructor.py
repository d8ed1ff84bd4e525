"""Golden tests: each built-in format, pinned literally as its model family documents it.

Expected strings are written out in full, copied from each family's published format:
- qwen/chatml: Qwen docs, "Key Concepts: chat template" (qwen.readthedocs.io) and Qwen3's
  tokenizer_config.json chat_template (no default system message).
- llama3: Meta "Llama 3 prompt format" model card and meta-llama/Meta-Llama-3-8B-Instruct
  tokenizer_config.json (contents trimmed).
- llama2: meta-llama/Llama-2-7b-chat-hf tokenizer_config.json and facebookresearch/llama
  llama/generation.py chat_completion() (B_SYS "<<SYS>>\\n", E_SYS "\\n<</SYS>>\\n\\n").
- mistral: mistralai/cookbook concept-deep-dive/tokenization/chat_templates.md, "Tokenizer V1"
  and its "System Prompt" section.
- phi3: microsoft/Phi-3-mini-4k-instruct model card and tokenizer_config.json.

The documents show the BOS string first; Prompt.text leaves it out because the tokenizer adds
it (PC-030), so each test checks BOS + text against the documented string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import pytest

from shared.prompt_constructor import TEMPLATES, Prompt, build_prompt

Messages = Sequence[Mapping[str, str]]

BOS = {"qwen": "", "chatml": "", "llama3": "<|begin_of_text|>", "llama2": "<s>", "mistral": "<s>"}
BOS |= {"phi3": "", "raw": ""}

USER: Messages = [{"role": "user", "content": "Hello!"}]
SYSTEM_USER: Messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
]
MULTI_TURN: Messages = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]
NO_SYSTEM_MULTI_TURN: Messages = MULTI_TURN[1:]
ENDS_WITH_ASSISTANT: Messages = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
]


def documented(template: str, messages: Messages, *, add_generation_prompt: bool = True) -> str:
    prompt = build_prompt(messages, template, add_generation_prompt=add_generation_prompt)
    assert prompt.template == template
    return BOS[template] + prompt.text


@pytest.mark.parametrize("template", ["qwen", "chatml"])
class TestChatML:
    """PC-090: golden strings for qwen and chatml (PC-040, PC-041): single user message,
    system message, multi-turn, and without a generation prompt."""

    def test_user(self, template: str) -> None:
        assert documented(template, USER) == (
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
        )

    def test_system(self, template: str) -> None:
        assert documented(template, SYSTEM_USER) == (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello!<|im_end|>\n"
            "<|im_start|>assistant\n"
        )

    def test_multi_turn(self, template: str) -> None:
        assert documented(template, MULTI_TURN) == (
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n"
        )

    def test_without_generation_prompt(self, template: str) -> None:
        assert documented(template, ENDS_WITH_ASSISTANT, add_generation_prompt=False) == (
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        )

    def test_content_kept_verbatim(self, template: str) -> None:
        msgs = [{"role": "user", "content": "  spaced \n"}]
        assert documented(template, msgs) == (
            "<|im_start|>user\n  spaced \n<|im_end|>\n<|im_start|>assistant\n"
        )


class TestLlama3:
    """PC-090: golden strings for llama3 (PC-042): single user message, system message,
    multi-turn, and without a generation prompt."""

    def test_user(self) -> None:
        assert documented("llama3", USER) == (
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def test_system(self) -> None:
        # The model card's own example.
        assert documented("llama3", SYSTEM_USER) == (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "You are a helpful assistant.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def test_multi_turn(self) -> None:
        assert documented("llama3", MULTI_TURN) == (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "You are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def test_without_generation_prompt(self) -> None:
        assert documented("llama3", ENDS_WITH_ASSISTANT, add_generation_prompt=False) == (
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        )

    def test_contents_trimmed(self) -> None:
        msgs = [{"role": "user", "content": "\n  Hello!  \n"}]
        assert documented("llama3", msgs) == documented("llama3", USER)


class TestLlama2:
    """PC-090: golden strings for llama2 (PC-043): single user message, system message,
    multi-turn, and without a generation prompt."""

    def test_user(self) -> None:
        assert documented("llama2", USER) == "<s>[INST] Hello! [/INST]"

    def test_system_inside_first_inst(self) -> None:
        assert documented("llama2", SYSTEM_USER) == (
            "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST]"
        )

    def test_multi_turn(self) -> None:
        assert documented("llama2", MULTI_TURN) == (
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4 </s>"
            "<s>[INST] And 3+3? [/INST]"
        )

    def test_multi_turn_without_system(self) -> None:
        assert documented("llama2", NO_SYSTEM_MULTI_TURN) == (
            "<s>[INST] What is 2+2? [/INST] 4 </s><s>[INST] And 3+3? [/INST]"
        )

    def test_generation_prompt_changes_nothing(self) -> None:
        # The format has no assistant header: a prompt ending in [/INST] is the generation cue.
        assert documented("llama2", USER, add_generation_prompt=False) == documented("llama2", USER)
        assert documented("llama2", ENDS_WITH_ASSISTANT, add_generation_prompt=False) == (
            "<s>[INST] Hi [/INST] Hello. </s>"
        )

    def test_turns_stripped(self) -> None:
        msgs = [
            {"role": "user", "content": "  Hi \n"},
            {"role": "assistant", "content": " Hello. "},
            {"role": "user", "content": "\tBye\n"},
        ]
        assert documented("llama2", msgs) == "<s>[INST] Hi [/INST] Hello. </s><s>[INST] Bye [/INST]"


class TestMistral:
    """PC-090: golden strings for mistral (PC-044): single user message, system message,
    multi-turn, and without a generation prompt."""

    def test_user(self) -> None:
        assert documented("mistral", USER) == "<s> [INST] Hello! [/INST]"

    def test_system_prepended_to_first_user_message(self) -> None:
        assert documented("mistral", SYSTEM_USER) == (
            "<s> [INST] You are a helpful assistant.\n\nHello! [/INST]"
        )

    def test_multi_turn(self) -> None:
        # The system prompt goes into the first user message only, not the last.
        assert documented("mistral", MULTI_TURN) == (
            "<s> [INST] You are terse.\n\nWhat is 2+2? [/INST] 4</s> [INST] And 3+3? [/INST]"
        )

    def test_multi_turn_without_system(self) -> None:
        assert documented("mistral", NO_SYSTEM_MULTI_TURN) == (
            "<s> [INST] What is 2+2? [/INST] 4</s> [INST] And 3+3? [/INST]"
        )

    def test_without_generation_prompt(self) -> None:
        assert documented("mistral", ENDS_WITH_ASSISTANT, add_generation_prompt=False) == (
            "<s> [INST] Hi [/INST] Hello.</s>"
        )


class TestPhi3:
    """PC-090: golden strings for phi3 (PC-045): single user message, system message,
    multi-turn, and without a generation prompt."""

    def test_user(self) -> None:
        assert documented("phi3", USER) == "<|user|>\nHello!<|end|>\n<|assistant|>\n"

    def test_system(self) -> None:
        # The model card's example layout.
        assert documented("phi3", SYSTEM_USER) == (
            "<|system|>\nYou are a helpful assistant.<|end|>\n"
            "<|user|>\nHello!<|end|>\n<|assistant|>\n"
        )

    def test_multi_turn(self) -> None:
        assert documented("phi3", MULTI_TURN) == (
            "<|system|>\nYou are terse.<|end|>\n"
            "<|user|>\nWhat is 2+2?<|end|>\n"
            "<|assistant|>\n4<|end|>\n"
            "<|user|>\nAnd 3+3?<|end|>\n"
            "<|assistant|>\n"
        )

    def test_without_generation_prompt_ends_with_eos(self) -> None:
        assert documented("phi3", ENDS_WITH_ASSISTANT, add_generation_prompt=False) == (
            "<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n<|endoftext|>"
        )


class TestRaw:
    """PC-090: golden strings for raw (PC-046): single user message, system message,
    multi-turn, and without a generation prompt."""

    def test_one_message_is_its_content(self) -> None:
        assert documented("raw", [{"role": "user", "content": "Once upon a time"}]) == (
            "Once upon a time"
        )

    def test_contents_joined_by_blank_lines(self) -> None:
        assert documented("raw", MULTI_TURN) == "You are terse.\n\nWhat is 2+2?\n\n4\n\nAnd 3+3?"
        assert documented("raw", MULTI_TURN, add_generation_prompt=False) == (
            "You are terse.\n\nWhat is 2+2?\n\n4\n\nAnd 3+3?"
        )


@pytest.mark.parametrize(
    ("template", "stop"),
    [
        ("qwen", ("<|im_end|>", "<|endoftext|>")),
        ("chatml", ("<|im_end|>",)),
        ("llama3", ("<|eot_id|>",)),
        ("llama2", ("</s>",)),
        ("mistral", ("</s>",)),
        ("phi3", ("<|end|>", "<|endoftext|>")),
        ("raw", ()),
    ],
)
def test_stop_strings_are_the_end_of_turn_markers(template: str, stop: tuple[str, ...]) -> None:
    """PC-032: Prompt.stop holds each built-in template's end-of-turn strings."""
    assert build_prompt(USER, template).stop == stop


def test_templates_lists_every_name() -> None:
    """PC-003: TEMPLATES lists every name build_prompt accepts."""
    assert set(TEMPLATES) == {"embedded", "qwen", "chatml", "llama3", "llama2", "mistral"} | {
        "phi3",
        "raw",
    }
    for name in TEMPLATES:
        assert TEMPLATES[name]


def test_prompt_is_frozen() -> None:
    """PC-002: Prompt is a frozen dataclass."""
    prompt = build_prompt(USER, "qwen")
    assert isinstance(prompt, Prompt)
    with pytest.raises(AttributeError):
        prompt.text = "other"  # type: ignore[misc]


def test_extra_message_keys_are_ignored() -> None:
    """PC-010: keys other than role and content are ignored; any sequence of mappings will do."""
    msgs = [{"role": "user", "content": "Hello!", "name": "alice"}]
    assert build_prompt(msgs, "qwen") == build_prompt(USER, "qwen")
    as_tuple = (MappingProxyType({"role": "user", "content": "Hello!", "tool_calls": "[]"}),)
    assert build_prompt(as_tuple, "qwen") == build_prompt(USER, "qwen")


def test_unicode_content_kept() -> None:
    msgs = [{"role": "user", "content": "日本語 🙂 é"}]
    assert build_prompt(msgs, "phi3").text == "<|user|>\n日本語 🙂 é<|end|>\n<|assistant|>\n"
