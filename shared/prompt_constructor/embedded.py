"""Rendering a GGUF's own ``tokenizer.chat_template`` in a sandboxed Jinja environment.

The environment matches what Hugging Face chat templates expect (transformers'
``render_jinja_template``): ``trim_blocks``/``lstrip_blocks``, the loop-controls extension,
``raise_exception``, ``strftime_now`` and a ``tojson`` that does not HTML-escape. It is
`ImmutableSandboxedEnvironment`, so a template can not reach Python internals or mutate its
inputs. String and list repetition, powers and the rendered length are bounded so a template
can not allocate without limit (``range`` is already bounded by the sandbox). CPU time is not
bounded: the template comes from the model file the operator chose, not from a client.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.prompt_constructor.errors import PromptError
from shared.prompt_constructor.messages import Message, message_json

# The largest string or list that `*` may build, and the largest exponent `**` may use.
MAX_REPEAT = 1_000_000
MAX_EXPONENT = 256
# How much a template may write beyond the messages' own text.
MAX_RENDERED_EXTRA = 16_000_000
# End-of-turn markers of well-known formats; those a template mentions become stop strings.
END_OF_TURN_MARKERS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|END_OF_TURN_TOKEN|>",
    "<|end_of_text|>",
    "<|endoftext|>",
)


class _TemplateRaised(jinja2.TemplateError):
    """The template called raise_exception(): it rejected the conversation."""


def _raise_exception(message: object) -> NoReturn:
    raise _TemplateRaised(str(message))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML, which would corrupt a prompt.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _repeat_size(left: Any, right: Any) -> int:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(n, int):
            return len(seq) * n
    return 0


class _ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _repeat_size(left, right) > MAX_REPEAT:
            raise SecurityError(f"repetition builds more than {MAX_REPEAT} items")
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


# A memo of a pure function (source -> compiled template): compiling a large template such as
# Llama 3.1's takes milliseconds, which would otherwise be paid on every request.
@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = _ChatTemplateEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def render_embedded(
    source: str,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool,
    bos_token: str | None,
    eos_token: str | None,
    now: Callable[[], datetime],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Render `source` for `messages` the way transformers' apply_chat_template does.

    `tools` (OpenAI tool definitions) are passed as the template's ``tools``, and messages
    carry their ``tool_calls`` / ``tool_call_id`` as Hugging Face's tool-use templates read
    them (PC-105).

    `bos_token`/`eos_token` are passed to the template when given; when not given they are
    undefined, so a template that concatenates them fails loudly instead of rendering a prompt
    without them.
    """
    try:
        template = _compile(source)
    except jinja2.TemplateSyntaxError as e:
        raise PromptError(
            "template",
            f"the embedded chat template does not compile: {e.message} (line {e.lineno})",
        ) from e

    def strftime_now(fmt: str) -> str:
        return now().strftime(fmt)

    context: dict[str, Any] = {
        "messages": [message_json(m) for m in messages],
        "add_generation_prompt": add_generation_prompt,
        "tools": [dict(t) for t in tools] if tools else None,
        "documents": None,
        "strftime_now": strftime_now,
    }
    if bos_token is not None:
        context["bos_token"] = bos_token
    if eos_token is not None:
        context["eos_token"] = eos_token
    limit = MAX_RENDERED_EXTRA + sum(len(m.content) for m in messages)
    limit += sum(len(c.arguments) for m in messages for c in m.tool_calls)
    try:
        return _render_bounded(template, context, limit)
    except _TemplateRaised as e:
        raise PromptError("messages", f"the chat template rejected the messages: {e}") from e
    except SecurityError as e:
        raise PromptError(
            "template", f"the embedded chat template did something unsafe: {e}"
        ) from e
    except jinja2.UndefinedError as e:
        raise PromptError("template", f"the embedded chat template failed: {e}") from e
    # The template is untrusted input: whatever else it raises is its failure, not ours.
    except Exception as e:
        raise PromptError(
            "template", f"the embedded chat template failed: {type(e).__name__}: {e}"
        ) from e


def _render_bounded(template: jinja2.Template, context: dict[str, Any], limit: int) -> str:
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > limit:
            raise SecurityError(f"output longer than {limit} characters")
        parts.append(chunk)
    return "".join(parts)


def embedded_stop(source: str, eos_token: str | None) -> tuple[str, ...]:
    """The end-of-turn markers `source` mentions, then the EOS string, without repeats."""
    found = [m for m in END_OF_TURN_MARKERS if m in source]
    if eos_token:
        found.append(eos_token)
    return tuple(dict.fromkeys(found))
