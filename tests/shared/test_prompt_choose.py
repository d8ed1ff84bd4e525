"""choose_template: the template name from GGUF metadata."""

from __future__ import annotations

import pytest

from shared.prompt_constructor import build_prompt, choose_template
from shared.testmodel import CHATML_TEMPLATE
from tests.shared.test_prompt_constructor import USER


def llama(name: str, **extra: str) -> dict[str, str]:
    return {"general.architecture": "llama", "general.name": name, **extra}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, "raw"),
        ({}, "raw"),
        # An embedded template wins over everything the architecture or name suggests.
        ({"tokenizer.chat_template": CHATML_TEMPLATE, **llama("Llama-2-7b-chat")}, "embedded"),
        ({"tokenizer.chat_template": "{{ x }}", "general.architecture": "phi3"}, "embedded"),
        # A blank template is no template.
        ({"tokenizer.chat_template": " \n", "general.architecture": "phi3"}, "phi3"),
        ({"general.architecture": "qwen2", "general.name": "Qwen2.5 7B Instruct"}, "qwen"),
        ({"general.architecture": "qwen3moe"}, "qwen"),
        ({"general.architecture": "phi3", "general.name": "Phi 3 Mini 4k Instruct"}, "phi3"),
        (llama("Meta Llama 3.1 8B Instruct"), "llama3"),
        (llama("Meta-Llama-3-8B-Instruct"), "llama3"),
        (llama("llama3-finetune"), "llama3"),
        (llama("my-model", **{"tokenizer.ggml.pre": "llama-bpe"}), "llama3"),
        (llama("Llama-2-7b-chat-hf"), "llama2"),
        (llama("LLaMA v2"), "llama2"),
        (llama("Mistral-7B-Instruct-v0.2"), "mistral"),
        (llama("mistralai_mixtral-8x7b-instruct-v0.1"), "mistral"),
        # Version numbers must stand alone: LLaMA 1 30B is neither Llama 3 nor Llama 2.
        (llama("llama-30b"), "raw"),
        (llama("llorch-tiny"), "raw"),
        ({"general.architecture": "gemma2", "general.name": "gemma-2-9b-it"}, "raw"),
        # Only llama-architecture models are read by name.
        ({"general.architecture": "gpt2", "general.name": "llama-3-lookalike"}, "raw"),
    ],
)
def test_choose_template(metadata: dict[str, str] | None, expected: str) -> None:
    """PC-022, PC-023: an embedded template wins, then architecture, then name; else raw."""
    assert choose_template(metadata) == expected


def test_non_string_values_are_ignored() -> None:
    """PC-024: metadata values that are not strings are treated as absent."""
    metadata = {"tokenizer.chat_template": 7, "general.architecture": "phi3", "general.name": None}
    assert choose_template(metadata) == "phi3"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"general.architecture": "qwen2"}, "qwen"),
        (llama("Meta Llama 3 8B Instruct"), "llama3"),
        ({"tokenizer.chat_template": CHATML_TEMPLATE}, "embedded"),
        (llama("unknown"), "raw"),
    ],
)
def test_build_prompt_follows_the_metadata(metadata: dict[str, str], expected: str) -> None:
    """PC-021: without a name, build_prompt uses choose_template(metadata)."""
    prompt = build_prompt(USER, metadata=metadata)
    assert prompt.template == expected
    named = expected if expected != "embedded" else "qwen"
    assert prompt.text == build_prompt(USER, named).text
