"""WRK-135: the digit-range grammars admit exactly the integers inside the bounds, and only
numbers inside them, checked exhaustively over a window by translating the GBNF (our own small
subset: one-character literals, classes, groups, alternation, counted repetition) to a regex."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from worker.numeric_range import EmptyRange, integer_range, number_bounds
from worker.structured import SchemaError, schema_to_grammar

POINTS = (None, -1000, -101, -100, -99, -10, -9, -1, 0, 1, 9, 10, 11, 99, 100, 101, 999, 1000)
BIG = (10**15, 10**16 - 1, 10**16, -(10**16) + 1, -(10**16))


def regex(gbnf: str) -> re.Pattern[str]:
    return re.compile(re.sub(r'"(.)"', lambda m: re.escape(m.group(1)), gbnf).replace(" ", ""))


def test_wrk135_integer_ranges_are_exact() -> None:
    for lo, hi in itertools.product(POINTS, POINTS):
        if lo is not None and hi is not None and hi < lo:
            with pytest.raises(EmptyRange):
                integer_range(lo, hi)
            continue
        g = regex(integer_range(lo, hi))
        for v in itertools.chain(range(-1200, 1200), BIG):
            inside = (lo is None or v >= lo) and (hi is None or v <= hi) and abs(v) < 10**16
            assert bool(g.fullmatch(str(v))) == inside, (lo, hi, v)
        for text in ("-0", "01", "-01", "00", "1.0", "1e3", "+1", ""):
            assert not g.fullmatch(text), (lo, hi, text)


BOUNDS = (None, -3, -2.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 10.25)
TEXTS = [
    f"{sign}{i}.{f}"
    for sign in ("", "-")
    for i in range(13)
    for f in ("0", "05", "1", "24", "25", "251", "5", "75", "99", "999999999999999")
] + [str(v) for v in range(-13, 13)]


def test_wrk135_numbers_written_lie_inside_the_bounds() -> None:
    """Sound (every admitted number satisfies the bounds, after parsing to a double) and not
    empty-handed: the integers inside and whole unit cells' fractions are admitted."""
    for a, b, ex_a, ex_b in itertools.product(BOUNDS, BOUNDS, (False, True), (False, True)):
        args = (None if ex_a else a, None if ex_b else b, a if ex_a else None, b if ex_b else None)
        try:
            g = regex(number_bounds(*args))
        except EmptyRange:
            # Only narrow ranges holding no integer: a unit cell plus exclusive margins won't fit.
            assert a is not None and b is not None and b - a <= 2, args
            assert not any(
                (v > a if ex_a else v >= a) and (v < b if ex_b else v <= b) for v in range(-4, 12)
            ), args
            continue
        for text in TEXTS:
            x = json_number(text)
            above = a is None or (x > a if ex_a else x >= a)
            below = b is None or (x < b if ex_b else x <= b)
            if g.fullmatch(text):
                assert above and below, (args, text)
            elif "." not in text:  # integers inside are never lost
                assert not (above and below), (args, text)


def json_number(text: str) -> float:
    return float(text) if "." in text else int(text)


def test_wrk135_fractions_next_to_an_exclusive_bound_keep_clear_of_rounding() -> None:
    """0.9999999999999999999 parses to 1.0: next to exclusiveMaximum 1 no fraction is written
    whose double could be the bound; cells are as fine as the bounds' decimals."""
    g = regex(number_bounds(0, None, None, 1))
    assert g.fullmatch("0") and not g.fullmatch("0.5") and not g.fullmatch("1")
    g = regex(number_bounds(None, None, 0, 0.3))
    assert g.fullmatch("0.15") and not g.fullmatch("0.29999999999999999")
    g = regex(number_bounds(0.1, 0.9, None, None))
    assert all(g.fullmatch(t) for t in ("0.1", "0.5", "0.85", "0.899999"))
    assert not any(g.fullmatch(t) for t in ("0.05", "0.95", "1", "0", "0.9"))


def test_wrk135_random_bounds_and_texts_stay_sound() -> None:
    r = random.Random(135)
    admitted = 0
    for _ in range(300):
        values = sorted(round(r.uniform(-30, 30), r.randint(0, 4)) for _ in range(2))
        ex_a, ex_b = r.random() < 0.5, r.random() < 0.5
        a, b = values[0] if r.random() < 0.9 else None, values[1] if r.random() < 0.9 else None
        args = (None if ex_a else a, None if ex_b else b, a if ex_a else None, b if ex_b else None)
        try:
            g = regex(number_bounds(*args))
        except EmptyRange:
            continue
        for _ in range(300):
            whole = str(r.randint(-31, 31))
            text = whole + (
                "." + str(r.randint(0, 10 ** r.randint(1, 17))) if r.random() < 0.8 else ""
            )
            if g.fullmatch(text):
                admitted += 1
                x = json_number(text)
                assert a is None or (x > a if ex_a else x >= a), (args, text)
                assert b is None or (x < b if ex_b else x <= b), (args, text)
    assert admitted > 10_000, admitted


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"type": "number", "minimum": 0.25, "maximum": 0.2500001}, "minimum, maximum"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum, maximum"),
        ({"type": "integer", "exclusiveMinimum": True}, "exclusiveMinimum"),
        ({"type": "number", "maximum": "9"}, "maximum"),
        ({"type": "integer", "minimum": 0, "multipleOf": 2}, "multipleOf"),
        ({"type": ["integer", "null"], "minimum": 0}, "minimum"),
    ],
)
def test_wrk133_wrk135_bounds_the_grammar_cannot_write_are_refused(
    schema: dict[str, object], needle: str
) -> None:
    with pytest.raises(SchemaError, match=needle):
        schema_to_grammar(schema)


def test_wrk135_a_user_literal_like_the_placeholder_is_left_alone() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"const": "llorch-range-0-0"},
            "b": {"type": "integer", "minimum": 7},
        },
        "required": ["a", "b"],
    }
    grammar = schema_to_grammar(schema)
    assert "llorch-range-0-0" in grammar and "[7-9]" in grammar
