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
One rewrite extends the port: an integer with both bounds and at most `MAX_INT_ENUM` values
becomes an `enum` of them. One fix corrects it: its `char` rule admits control characters, which
JSON strings may not contain unescaped (RFC 8259), so a random model wrote unparseable strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

MAX_INT_ENUM = 1024
MAX_SCHEMA_DEPTH = 64

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
    checked = _check(schema, "", 0)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(checked)))
    except (RecursionError, MemoryError) as e:
        raise SchemaError(f"too deeply nested to convert ({type(e).__name__})") from None
    except Exception as e:  # the port reports bad input with asserts, KeyErrors, ValueErrors
        raise SchemaError(f"cannot be converted to a grammar: {type(e).__name__}: {e}") from None
    return grammar.replace(_PORT_CHAR, _JSON_CHAR)


def _check(node: Any, path: str, depth: int) -> Any:
    """A copy of `node` the port enforces fully (integer ranges rewritten), or SchemaError."""
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
                k: _check(v, f"{path}/{defs}/{k}", depth + 1) for k, v in node[defs].items()
            }
    allowed = _branch(node, keys, path)
    extra = sorted(keys - allowed)
    if extra:
        raise SchemaError(f"keyword '{extra[0]}' at {where} is not supported here")
    return _descend(node, out, path, depth)


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
    if t == "integer" and keys & set(_BOUNDS):
        _int_range(node, where)
        return {"type", *_BOUNDS}
    if t is None and keys:
        raise SchemaError(f"keyword '{sorted(keys)[0]}' at {where} needs a type")
    return {"type"}


def _int_range(node: Mapping[str, Any], where: str) -> range:
    lo, hi = node.get("minimum"), node.get("maximum")
    if "exclusiveMinimum" in node:
        lo = _bound(node["exclusiveMinimum"], where) + 1
    if "exclusiveMaximum" in node:
        hi = _bound(node["exclusiveMaximum"], where) - 1
    if lo is None or hi is None:
        raise SchemaError(
            f"an integer bound at {where} needs both a minimum and a maximum "
            f"(at most {MAX_INT_ENUM} values)"
        )
    lo, hi = _bound(lo, where), _bound(hi, where)
    if hi < lo:
        raise SchemaError(f"the integer range at {where} is empty")
    if hi - lo + 1 > MAX_INT_ENUM:
        raise SchemaError(f"the integer range at {where} has more than {MAX_INT_ENUM} values")
    return range(lo, hi + 1)


def _bound(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"integer bounds at {where} must be integers")
    return value


def _descend(node: Mapping[str, Any], out: dict[str, Any], path: str, depth: int) -> Any:
    if node.get("type") == "integer" and set(node) & set(_BOUNDS) and "enum" not in node:
        rest = {k: v for k, v in out.items() if k not in _BOUNDS}
        return {**rest, "enum": list(_int_range(node, path or "/"))}
    props = node.get("properties")
    if isinstance(props, Mapping):
        out["properties"] = {
            k: _check(v, f"{path}/properties/{k}", depth + 1) for k, v in props.items()
        }
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        out["additionalProperties"] = _check(extra, f"{path}/additionalProperties", depth + 1)
    for key in ("items", "prefixItems", "anyOf", "oneOf"):
        sub = node.get(key)
        if isinstance(sub, list):
            out[key] = [_check(s, f"{path}/{key}/{i}", depth + 1) for i, s in enumerate(sub)]
        elif isinstance(sub, Mapping):
            out[key] = _check(sub, f"{path}/{key}", depth + 1)
    return out
