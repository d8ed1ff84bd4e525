"""Fifty seeded JSON Schemas for the constrained-decoding tests (WRK-131, WRK-135): nested
objects, arrays with item bounds, enums, required and optional fields, string patterns, bounded
integers and numbers (one-sided, two-sided, exclusive, negative), booleans, nulls via anyOf,
consts, dates and $defs/$ref. Every string is a short pattern, enum or date and every object
closed, so any value a grammar admits is short: a random-weight model finishes quickly."""

from __future__ import annotations

import random
from typing import Any

Schema = dict[str, Any]
SEED = 21
COUNT = 50

PATTERNS = ("^[a-z]{1,6}$", "^[A-Z]{2}-[0-9]{2}$", "^(yes|no)$", "^[0-9]{3}$", "^x[a-f0-9]{0,4}$")
INT_BOUNDS: tuple[dict[str, int], ...] = (
    {"minimum": 0},
    {"minimum": 1, "maximum": 10},
    {"minimum": -50, "maximum": 50},
    {"maximum": -3},
    {"exclusiveMinimum": 0},
    {"exclusiveMinimum": -10, "exclusiveMaximum": 10},
    {"minimum": 18, "maximum": 130},
    {"minimum": 1000, "maximum": 99999},
    {"minimum": -1000000},
    {"exclusiveMaximum": 1},
)
NUMBER_BOUNDS: tuple[dict[str, float], ...] = (
    {"minimum": 0, "maximum": 1},
    {"minimum": -5.5, "maximum": 10.25},
    {"exclusiveMinimum": 0},
    {"minimum": 0, "exclusiveMaximum": 100},
    {"maximum": -0.5},
    {"minimum": -1, "maximum": 1},
    {"exclusiveMinimum": -273.15, "maximum": 1000},
)
KINDS = (
    *("int", "int", "number", "number", "enum", "pattern", "pattern"),
    *("bool", "nullable", "const", "date", "ref"),
)
WORDS = ("red", "green", "blue", "small", "large", "on", "off", "alpha", "beta", "gamma")
DEFS: Schema = {
    "point": {
        "type": "object",
        "properties": {
            "x": {"type": "integer", "minimum": -9, "maximum": 9},
            "y": {"type": "integer", "minimum": -9, "maximum": 9},
        },
        "required": ["x", "y"],
        "additionalProperties": False,
    },
    "tag": {"type": "string", "pattern": "^#[a-z]{1,5}$"},
}


def _leaf(r: random.Random) -> Schema:
    kind = r.choice(KINDS)
    if kind == "int":
        return {"type": "integer", **r.choice(INT_BOUNDS)}
    if kind == "number":
        return {"type": "number", **r.choice(NUMBER_BOUNDS)}
    if kind == "enum":
        return {"enum": r.sample(WORDS, r.randint(2, 4))}
    if kind == "pattern":
        return {"type": "string", "pattern": r.choice(PATTERNS)}
    if kind == "bool":
        return {"type": "boolean"}
    if kind == "nullable":
        return {"anyOf": [{"type": "null"}, {"type": "integer", **r.choice(INT_BOUNDS)}]}
    if kind == "const":
        return {"const": r.choice(WORDS)}
    if kind == "date":
        return {"type": "string", "format": "date"}
    return {"$ref": f"#/$defs/{r.choice(sorted(DEFS))}"}


def _node(r: random.Random, depth: int) -> Schema:
    roll = r.random()
    if depth < 2 and roll < 0.25:
        return _object(r, depth + 1, r.randint(1, 3))
    if depth < 2 and roll < 0.45:
        low = r.randint(0, 2)
        return {
            "type": "array",
            "items": _node(r, depth + 1),
            "minItems": low,
            "maxItems": low + r.randint(0, 2),
        }
    return _leaf(r)


def _object(r: random.Random, depth: int, size: int) -> Schema:
    names = r.sample(("id", "name", "size", "score", "tags", "when", "flag", "info", "kind"), size)
    props = {n: _node(r, depth) for n in names}
    required = sorted(n for n in names if r.random() < 0.7) or [names[0]]
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def schemas(count: int = COUNT, seed: int = SEED) -> list[Schema]:
    """`count` schemas, the same for the same seed; each root an object with $defs."""
    r = random.Random(seed)
    return [{**_object(r, 0, r.randint(1, 4)), "$defs": DEFS} for _ in range(count)]
