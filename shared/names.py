"""The names that travel between llorch's programs: worker ids, pool names and model names.

They reach URL paths, log lines, metrics labels, file names and remote command lines, so each
has a charset and a length, checked where it comes in (orchestratord's HTTP edge, the worker's
and llorch-pool's flags, the fleet's desired state) against the one definition here
(specs/orchestrator.md ORCH-045, specs/pool.md POOL-043, specs/worker.md WRK-007). The same
regular expressions are the `pattern`s of specs/openapi/orchestrator.yaml.

A worker id or pool name is one URL path segment and one file name: no '/', and no ':' so that
a compare target `worker:ID` / `pool:NAME` reads one way. A model name may also hold ':', '/',
'@' and '+', so that a Hugging Face reference such as `bartowski/Qwen2.5-0.5B-Instruct-GGUF:
Q4_K_M` can be a worker's `--model-name`. The pool catalog's own ids are narrower still
(CATALOG_ID, lower case) and are model names too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_NAME_CHARS = 128


@dataclass(frozen=True, slots=True)
class NameRule:
    """One kind of name: what it is called, its regular expression, the rule in words."""

    what: str
    pattern: str
    rule: str
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def matches(self, text: str) -> bool:
        # fullmatch, not `$`: `$` also matches before a trailing newline.
        return self._compiled.fullmatch(text) is not None

    def problem(self, text: str) -> str | None:
        """None when `text` is such a name, else what a name must be (without the text, which
        may be anything, so that the message is safe to log and show)."""
        return None if self.matches(text) else f"must be {self.rule}"


_RULE = "1-{n} characters: letters, digits and {chars}, starting with a letter or digit"

WORKER_ID = NameRule(
    "worker id",
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    _RULE.format(n=MAX_NAME_CHARS, chars="'.', '_', '-'"),
)
POOL_NAME = NameRule(
    "pool name",
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    _RULE.format(n=MAX_NAME_CHARS, chars="'.', '_', '-'"),
)
MODEL_NAME = NameRule(
    "model name",
    r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$",
    _RULE.format(n=MAX_NAME_CHARS, chars="'.', '_', '-', ':', '/', '@', '+'"),
)
# A pool catalog id (a model name too): what `llorch-pool models` files a model under, and so
# what the fleet's desired state names models by.
CATALOG_ID = NameRule(
    "catalog id",
    r"^[a-z0-9][a-z0-9._-]{0,127}$",
    "1-128 characters: lower-case letters, digits and '.', '_', '-', starting with a letter "
    "or digit",
)
