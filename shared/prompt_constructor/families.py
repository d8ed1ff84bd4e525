"""The built-in chat formats, each written to match its model family's published template.

Each renderer reproduces the family's documented format character for character, including the
leading BOS string the documents show (``<s>``, ``<|begin_of_text|>``); `build_prompt` removes
that leading BOS because llama.cpp's tokenizer adds it (see specs/prompt_constructor.md, PC-030).
The sources are cited at each renderer and the golden tests pin the output literally.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from shared.prompt_constructor.errors import PromptError
from shared.prompt_constructor.messages import Message

Renderer = Callable[[Sequence[Message], bool], str]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    description: str
    bos: str  # what the documented format starts with; removed from Prompt.text
    stop: tuple[str, ...]  # end-of-turn strings a worker stops on
    render: Renderer


def _chatml(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # ChatML as Qwen documents it (qwen.readthedocs.io "Key Concepts: chat template"; Qwen3's
    # tokenizer_config.json chat_template without tools or thinking). No default system message
    # is injected: Qwen3 injects none; Qwen2/2.5 GGUFs carry their own template (see embedded).
    parts = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _llama3(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template and Meta's
    # "Llama 3 prompt format" model card: each content is trimmed.
    parts = ["<|begin_of_text|>"]
    parts += [
        f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{m.content.strip()}<|eot_id|>"
        for m in messages
    ]
    if add_generation_prompt:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def _split_system(messages: Sequence[Message], family: str) -> tuple[str | None, list[Message]]:
    """The optional leading system message, and the user/assistant turns that must alternate."""
    system = messages[0].content if messages[0].role == "system" else None
    turns = list(messages[1:] if system is not None else messages)
    offset = 1 if system is not None else 0
    if not turns:
        raise PromptError("messages", f"{family} needs a user message after the system message")
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role == "system":
            raise PromptError(
                f"messages[{i + offset}].role",
                f"{family} accepts a system message only as the first message",
            )
        if m.role != expected:
            raise PromptError(
                f"messages[{i + offset}].role",
                f"{family} needs user and assistant turns to alternate, starting with user; "
                f"expected {expected}, got {m.role}",
            )
    return system, turns


def _llama2(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # meta-llama/Llama-2-7b-chat-hf tokenizer_config.json chat_template, which matches
    # facebookresearch/llama llama/generation.py chat_completion(): the system prompt sits in
    # <<SYS>> inside the first [INST]; every turn is stripped; each exchange is <s>...</s>.
    # The format has no separate assistant header, so add_generation_prompt changes nothing.
    system, turns = _split_system(messages, "llama2")
    parts: list[str] = []
    for i, m in enumerate(turns):
        content = m.content
        if i == 0 and system is not None:
            content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
        if m.role == "user":
            parts.append(f"<s>[INST] {content.strip()} [/INST]")
        else:
            parts.append(f" {content.strip()} </s>")
    return "".join(parts)


def _mistral(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # Mistral's "tokenizer V1" instruct format (Mistral 7B Instruct v0.1/v0.2, Mixtral 8x7B
    # Instruct v0.1), from mistralai/cookbook concept-deep-dive/tokenization/chat_templates.md:
    # "<s> [INST] system prompt\n\nuser message [/INST] assistant message</s> [INST] ...".
    # The system prompt is prepended to the first user message, followed by two newlines.
    # Contents are not stripped; add_generation_prompt changes nothing.
    system, turns = _split_system(messages, "mistral")
    parts = ["<s>"]
    for i, m in enumerate(turns):
        content = m.content
        if i == 0 and system is not None:
            content = f"{system}\n\n{content}"
        if m.role == "user":
            parts.append(f" [INST] {content} [/INST]")
        else:
            parts.append(f" {content}</s>")
    return "".join(parts)


def _phi3(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # microsoft/Phi-3-mini-4k-instruct tokenizer_config.json chat_template and its model card:
    # "<|system|>\n...<|end|>\n<|user|>\n...<|end|>\n<|assistant|>\n". Without a generation
    # prompt the template closes with the EOS token, <|endoftext|>.
    parts = [f"<|{m.role}|>\n{m.content}<|end|>\n" for m in messages]
    parts.append("<|assistant|>\n" if add_generation_prompt else "<|endoftext|>")
    return "".join(parts)


def _raw(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # For base models with no chat format: the contents in order, a blank line between them.
    # Roles are dropped and nothing is added, so one message gives exactly its content.
    return "\n\n".join(m.content for m in messages)


FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        f.name: f
        for f in (
            Family(
                "qwen",
                "Qwen ChatML (<|im_start|>role ... <|im_end|>)",
                "",
                ("<|im_end|>", "<|endoftext|>"),
                _chatml,
            ),
            Family(
                "chatml", "ChatML, as qwen, for other ChatML models", "", ("<|im_end|>",), _chatml
            ),
            Family(
                "llama3",
                "Llama 3 (<|start_header_id|>role<|end_header_id|> ... <|eot_id|>)",
                "<|begin_of_text|>",
                ("<|eot_id|>",),
                _llama3,
            ),
            Family(
                "llama2",
                "Llama 2 chat ([INST] <<SYS>> ... <</SYS>> ... [/INST])",
                "<s>",
                ("</s>",),
                _llama2,
            ),
            Family(
                "mistral",
                "Mistral instruct v1 ([INST] ... [/INST], system in the first turn)",
                "<s>",
                ("</s>",),
                _mistral,
            ),
            Family("phi3", "Phi-3 (<|role|> ... <|end|>)", "", ("<|end|>", "<|endoftext|>"), _phi3),
            Family("raw", "no chat format: the contents joined by blank lines", "", (), _raw),
        )
    }
)
