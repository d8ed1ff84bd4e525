"""Choosing a chat template from GGUF metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

# Version numbers must stand alone: "llama-30b" (LLaMA 1) is not Llama 3.
_LLAMA3 = re.compile(r"llama[\s_-]*v?3(?!\d)")
_LLAMA2 = re.compile(r"llama[\s_-]*v?2(?!\d)")
_MISTRAL = re.compile(r"mi[sx]tral")


def _text(metadata: Mapping[str, str], key: str) -> str:
    value = metadata.get(key)
    return value.strip().lower() if isinstance(value, str) else ""


def choose_template(metadata: Mapping[str, str] | None) -> str:
    """The template name for a model, from its GGUF metadata (llama_cpp.Llama.metadata).

    An embedded ``tokenizer.chat_template`` wins ("embedded"). Otherwise the family is read from
    ``general.architecture`` and ``general.name`` (and ``tokenizer.ggml.pre``, which llama.cpp
    sets to "llama-bpe" for Llama 3). A model that matches no family gets "raw": no chat
    markup is invented for a model whose vocabulary may not have it.
    """
    if not metadata:
        return "raw"
    embedded = metadata.get(CHAT_TEMPLATE_KEY)
    if isinstance(embedded, str) and embedded.strip():
        return "embedded"
    arch = _text(metadata, "general.architecture")
    name = _text(metadata, "general.name")
    if arch.startswith("qwen"):
        return "qwen"
    if arch == "phi3":
        return "phi3"
    if arch == "llama":
        if _MISTRAL.search(name):
            return "mistral"
        if _LLAMA3.search(name) or _text(metadata, "tokenizer.ggml.pre") == "llama-bpe":
            return "llama3"
        if _LLAMA2.search(name):
            return "llama2"
    return "raw"
