"""Chat messages -> the prompt text a model was trained on.

    from shared.prompt_constructor import build_prompt, choose_template, TEMPLATES, PromptError
    prompt = build_prompt(messages, metadata=llm.metadata, bos_token=bos, eos_token=eos)
    prompt.text, prompt.template, prompt.stop

Built-in formats for Qwen (ChatML), Llama 3, Llama 2, Mistral and Phi-3, the GGUF's own
``tokenizer.chat_template`` rendered in a Jinja sandbox ("embedded"), and "raw". The normative
description is specs/prompt_constructor.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from shared.prompt_constructor.choose import CHAT_TEMPLATE_KEY, choose_template
from shared.prompt_constructor.embedded import embedded_stop, render_embedded
from shared.prompt_constructor.errors import PromptError
from shared.prompt_constructor.families import FAMILIES
from shared.prompt_constructor.messages import ROLES, Message, ToolCall, validate_messages
from shared.prompt_constructor.tools import lower_messages, template_takes_tools, validate_tools

__all__ = [
    "ROLES",
    "TEMPLATES",
    "Message",
    "Prompt",
    "PromptError",
    "ToolCall",
    "build_prompt",
    "choose_template",
]

EMBEDDED = "embedded"

#: Every template name `build_prompt` accepts, with a one-line description.
TEMPLATES: Mapping[str, str] = MappingProxyType(
    {EMBEDDED: "the GGUF's own tokenizer.chat_template, rendered in a Jinja sandbox"}
    | {name: f.description for name, f in FAMILIES.items()}
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered prompt.

    text: what to tokenize (special tokens parsed), without the leading BOS, which the
        tokenizer adds. template: the template name used. stop: the template's end-of-turn
        strings, for the worker to stop on.
    """

    text: str
    template: str
    stop: tuple[str, ...]


def build_prompt(
    messages: Sequence[Mapping[str, Any]],
    template: str | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
    now: Callable[[], datetime] = datetime.now,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> Prompt:
    """Render `messages` with `template`, or with the template `metadata` calls for.

    An explicit `template` name always wins; without one, `choose_template(metadata)` picks.
    `bos_token`/`eos_token` are the model's BOS/EOS strings, passed to an embedded template
    (the built-in formats know their own). `now` is the clock behind ``strftime_now``.
    `tools` (OpenAI tool definitions) go to an embedded template that reads ``tools``, with
    the messages' tool calls and results as its own; every other template gets them written
    as plain text by the documented fallback (`tools.lower_messages`, PC-103).
    Raises `PromptError` naming the bad message, field or template.
    """
    if template is not None and not isinstance(template, str):
        raise PromptError("template", f"expected a template name, got {type(template).__name__}")
    name = choose_template(metadata) if template is None else template
    if name != EMBEDDED and name not in FAMILIES:
        raise PromptError(
            "template", f"unknown template {name!r}; expected one of {', '.join(TEMPLATES)}"
        )
    msgs = validate_messages(messages)
    tool_defs = validate_tools(tools) if tools is not None else ()
    if name == EMBEDDED:
        source = (metadata or {}).get(CHAT_TEMPLATE_KEY)
        if not isinstance(source, str) or not source.strip():
            raise PromptError(
                "template", f"'embedded' needs metadata with a non-empty {CHAT_TEMPLATE_KEY}"
            )
        native = template_takes_tools(source)
        text = render_embedded(
            source,
            msgs if native else lower_messages(msgs, tool_defs),
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            now=now,
            tools=tool_defs if native else None,
        )
        return Prompt(_strip_bos(text, bos_token), EMBEDDED, embedded_stop(source, eos_token))
    family = FAMILIES[name]
    text = family.render(lower_messages(msgs, tool_defs), add_generation_prompt)
    return Prompt(_strip_bos(text, family.bos), name, family.stop)


def _strip_bos(text: str, bos: str | None) -> str:
    # llama.cpp's tokenizer adds BOS itself (tokenizer.ggml.add_bos_token); a BOS in the text
    # as well would give the model two.
    return text[len(bos) :] if bos and text.startswith(bos) else text
