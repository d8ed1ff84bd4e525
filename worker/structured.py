"""JSON Schema -> GBNF for constrained decoding (WRK-130..WRK-132).

The conversion is llama-cpp-python's `json_schema_to_gbnf`, the Python port of llama.cpp's
`json_schema_to_grammar.py` that ships in the pinned wheel: it needs no code of our own to keep
in step with llama.cpp, and its output is parsed by the same wheel's llama.cpp. llama.cpp's own
converter is newer (integer bounds, a wider whitespace rule) but is not packaged; copying it here
would be a fork to maintain by hand.

The port silently ignores what it cannot express (`minimum` on a number, `format: email`,
`uniqueItems`, a `minLength` next to a `pattern`, ...). A grammar that ignores a keyword would
let through JSON that the schema rejects, so every schema is walked first, mirroring the port's
own dispatch, and a keyword the chosen branch would not enforce is refused, named with its path.
One rewrite extends the port: a bounded integer or number gets a digit-range grammar of our own
(numeric_range.py, WRK-135), spliced in where the port wrote a placeholder `const`. One fix
corrects it: its `char` rule admits control characters, which
JSON strings may not contain unescaped (RFC 8259), so a random model wrote unparseable strings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from worker.numeric_range import EmptyRange, integer_bounds, number_bounds

MAX_SCHEMA_DEPTH = 64
# llama.cpp parses GBNF groups recursively on the calling thread's stack: 32,000 nested
# parentheses crash the process (measured: SIGSEGV in a default 8 MiB thread; 10,000 parse).
MAX_GRAMMAR_NESTING = 2048
# Literals, character classes and comments: their parentheses are not groups.
_INERT = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
_NOT_PAREN = re.compile(r"[^()]")

# Keywords that constrain nothing: allowed anywhere.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "$schema",
        "$id",
        "$comment",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$defs",
        "definitions",
    }
)
_PRIMITIVES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4"})
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_PORT_CHAR = r'char ::= [^"\\] | '
_JSON_CHAR = r'char ::= [^"\\\x00-\x1F\x7F] | '


class SchemaError(ValueError):
    """A schema that cannot be enforced: the message names the keyword and where it is."""


def schema_to_grammar(schema: object) -> str:
    """GBNF (root rule `root`) that admits exactly JSON valid under `schema`, or SchemaError."""
    if not isinstance(schema, Mapping):
        raise SchemaError("must be a JSON object (a JSON Schema)")
    ranges = _Ranges(json.dumps(schema))
    checked = _check(schema, "", 0, ranges)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(checked)))
    except (RecursionError, MemoryError) as e:
        raise SchemaError(f"too deeply nested to convert ({type(e).__name__})") from None
    except Exception as e:  # the port reports bad input with asserts, KeyErrors, ValueErrors
        raise SchemaError(f"cannot be converted to a grammar: {type(e).__name__}: {e}") from None
    return ranges.splice(grammar.replace(_PORT_CHAR, _JSON_CHAR))


class _Ranges:
    """Bounded numbers' grammars, each standing in the schema as a `const` placeholder that the
    port writes as a literal; `splice` puts the grammar where the literal is. The placeholders
    use a prefix the schema's own text does not contain, so no literal of the user's matches."""

    def __init__(self, text: str) -> None:
        n = 0
        while f"llorch-range-{n}-" in text:
            n += 1
        self.prefix = f"llorch-range-{n}-"
        self.rules: dict[str, str] = {}

    def add(self, rule: str) -> str:
        marker = f"{self.prefix}{len(self.rules)}"
        self.rules[marker] = rule
        return marker

    def splice(self, grammar: str) -> str:
        for marker, rule in self.rules.items():
            grammar = grammar.replace(f'"\\"{marker}\\""', f"({rule}) space")
        if self.prefix in grammar:  # a placeholder left in would leave its bounds unenforced
            raise SchemaError("a bounded number could not be placed in the grammar")
        return grammar


def nesting_problem(grammar: str) -> str | None:
    """Why `grammar` is too deeply nested to hand to llama.cpp's parser, or None. Counts groups
    outside literals, character classes and comments."""
    parens = _NOT_PAREN.sub("", _INERT.sub("", grammar))
    depth = deepest = 0
    for c in parens:
        depth += 1 if c == "(" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_GRAMMAR_NESTING:
        return f"nests groups {deepest} deep, more than {MAX_GRAMMAR_NESTING}"
    return None


def _check(node: Any, path: str, depth: int, ranges: _Ranges) -> Any:
    """A copy of `node` the port enforces fully (bounded numbers as placeholders), or
    SchemaError."""
    where = path or "/"
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"nested deeper than {MAX_SCHEMA_DEPTH} at {where}")
    if node is True or (isinstance(node, Mapping) and not node):
        return {}
    if not isinstance(node, Mapping):
        raise SchemaError(f"{where}: a schema must be an object")
    out = dict(node)
    keys = set(node) - _ANNOTATIONS
    for defs in ("$defs", "definitions"):
        if isinstance(node.get(defs), Mapping):
            out[defs] = {
                k: _check(v, f"{path}/{defs}/{k}", depth + 1, ranges) for k, v in node[defs].items()
            }
    allowed = _branch(node, keys, path)
    extra = sorted(keys - allowed)
    if extra:
        raise SchemaError(f"keyword '{extra[0]}' at {where} is not supported here")
    return _descend(node, out, path, depth, ranges)


def _branch(node: Mapping[str, Any], keys: set[str], path: str) -> set[str]:
    """The keywords the port's `visit` enforces for this node (the first branch it takes)."""
    t = node.get("type")
    where = path or "/"
    if "$ref" in keys:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaError(f"$ref at {where}: only local references (#/...) are supported")
        return {"$ref"}
    if keys & {"oneOf", "anyOf"}:
        return {"oneOf", "anyOf", "type"} if len(keys & {"oneOf", "anyOf"}) == 1 else set()
    if isinstance(t, list):
        if not t or not all(x in _PRIMITIVES for x in t):
            raise SchemaError(f"type at {where} must name JSON types")
        return {"type"}
    if "const" in keys or "enum" in keys:
        return {"const", "type"} if "const" in keys else {"enum", "type"}
    if t is not None and t not in _PRIMITIVES:
        raise SchemaError(f"type at {where} must be one of {', '.join(sorted(_PRIMITIVES))}")
    if t in (None, "object") and ("properties" in keys or "additionalProperties" in keys):
        missing = set(node.get("required", [])) - set(node.get("properties", {}))
        if missing:
            raise SchemaError(f"required at {where} names {sorted(missing)[0]!r}, not a property")
        return {"type", "properties", "required", "additionalProperties"}
    if t in (None, "array") and ("items" in keys or "prefixItems" in keys):
        items = node.get("items") or node.get("prefixItems")
        if isinstance(items, list):
            return {"type", "items", "prefixItems"}
        return {"type", "items", "minItems", "maxItems"}
    if t in (None, "string") and "pattern" in keys:
        pattern = node["pattern"]
        if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
            raise SchemaError(f"pattern at {where} must be a string anchored with ^ and $")
        try:  # the port reads what it can of a broken pattern and ignores the rest
            re.compile(pattern)
        except re.error as e:
            raise SchemaError(
                f"pattern at {where} is not a valid regular expression: {e}"
            ) from None
        return {"type", "pattern"}
    if "format" in keys:
        if t not in (None, "string") or node["format"] not in _FORMATS:
            raise SchemaError(f"format {node['format']!r} at {where} is not supported")
        return {"type", "format"}
    if t == "string":
        return {"type", "minLength", "maxLength"}
    if t in ("integer", "number") and keys & set(_BOUNDS):
        for k in (b for b in _BOUNDS if b in keys):
            v = node[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise SchemaError(f"{k} at {where} must be a finite number")
        return {"type", *_BOUNDS}
    if t is None and keys:
        raise SchemaError(f"keyword '{sorted(keys)[0]}' at {where} needs a type")
    return {"type"}


def _descend(
    node: Mapping[str, Any], out: dict[str, Any], path: str, depth: int, ranges: _Ranges
) -> Any:
    t = node.get("type")
    present = [k for k in _BOUNDS if k in node]
    if t in ("integer", "number") and present and "enum" not in node and "const" not in node:
        build = integer_bounds if t == "integer" else number_bounds
        try:
            rule = build(*(node.get(k) for k in _BOUNDS))
        except EmptyRange:
            raise SchemaError(
                f"{', '.join(present)} at {path or '/'} admit no {t} the grammar can write "
                "(an integer of at most 16 digits, or a fraction whose whole cell at the scale "
                "of the bounds' decimals, at most 6, lies inside them)"
            ) from None
        rest = {k: v for k, v in out.items() if k not in _BOUNDS and k != "type"}
        return {**rest, "const": ranges.add(rule)}
    props = node.get("properties")
    if isinstance(props, Mapping):
        out["properties"] = {
            k: _check(v, f"{path}/properties/{k}", depth + 1, ranges) for k, v in props.items()
        }
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        out["additionalProperties"] = _check(
            extra, f"{path}/additionalProperties", depth + 1, ranges
        )
    for key in ("items", "prefixItems", "anyOf", "oneOf"):
        sub = node.get(key)
        if isinstance(sub, list):
            out[key] = [
                _check(s, f"{path}/{key}/{i}", depth + 1, ranges) for i, s in enumerate(sub)
            ]
        elif isinstance(sub, Mapping):
            out[key] = _check(sub, f"{path}/{key}", depth + 1, ranges)
    return out
