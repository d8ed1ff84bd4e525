"""GBNF for JSON numbers inside bounds (WRK-135): the grammar admits only numbers the bounds
allow, so `minimum`/`maximum` (exclusive or not) are enforced, never ignored.

Integers are exact: a range of non-negative integers is split by digit count, and each
same-length range [a, b] into a shared prefix, the values after a's first digit, the digits
strictly between, and the values up to b's first digit, recursively. Negative values are "-"
before a range of magnitudes. An unbounded side stops at 16 digits, as the port's `integer`
does (runaway digits from a model would otherwise fill `max_tokens`).

Non-integer numbers are enforced conservatively: the integers of the range, plus fractions
"I.ddd" ("-I.ddd") only where the closed unit interval [I, I+1] ([-(I+1), -I]) lies inside the
bounds, strictly inside an exclusive one: a fraction may parse (rounded to a double) to its
interval's end, never beyond it. No exponent is written. A bounded number whose range holds no
value so written (e.g. [0.2, 0.7]) is refused by the caller.
"""

from __future__ import annotations

import contextlib
import math

MAX_DIGITS = 16
# Fraction cells stop where I + 1 may no longer be exact as a double (2**53 > 10**15).
_MAX_CELL = 10**15 - 1
_CAP = 10**MAX_DIGITS - 1
_FRACTION = '"." [0-9]{1,15}'


class EmptyRange(ValueError):
    """The bounds admit no value the grammar can write."""


def _bounds(
    minimum: float | None, maximum: float | None, ex_min: float | None, ex_max: float | None
) -> tuple[int | None, int | None]:
    """The least and greatest integers inside the bounds (None: unbounded)."""
    lo: int | None = None
    hi: int | None = None
    if minimum is not None:
        lo = math.ceil(minimum)
    if ex_min is not None:
        e = math.floor(ex_min) + 1
        lo = e if lo is None else max(lo, e)
    if maximum is not None:
        hi = math.floor(maximum)
    if ex_max is not None:
        e = math.ceil(ex_max) - 1
        hi = e if hi is None else min(hi, e)
    return lo, hi


def _same_length(a: str, b: str) -> str:
    """Every digit string s of len(a) == len(b) with a <= s <= b."""
    if not a:
        return ""
    if a[0] == b[0]:
        return _seq(f'"{a[0]}"', _same_length(a[1:], b[1:]))
    rest = len(a) - 1
    low_full = a[1:] == "0" * rest
    high_full = b[1:] == "9" * rest
    first = int(a[0]) + (0 if low_full else 1)
    last = int(b[0]) - (0 if high_full else 1)
    alts = []
    if not low_full:
        alts.append(_seq(f'"{a[0]}"', _same_length(a[1:], "9" * rest)))
    if first <= last:
        alts.append(_seq(_digit_class(first, last), _any_digits(rest)))
    if not high_full:
        alts.append(_seq(f'"{b[0]}"', _same_length("0" * rest, b[1:])))
    return _alt(alts)


def _digit_class(first: int, last: int) -> str:
    return f'"{first}"' if first == last else f"[{first}-{last}]"


def _any_digits(n: int) -> str:
    return "" if n == 0 else ("[0-9]" if n == 1 else f"[0-9]{{{n}}}")


def _seq(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _alt(alts: list[str]) -> str:
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def magnitudes(a: int, b: int | None) -> str:
    """Non-negative integers a..b (b None: up to 16 digits), without leading zeros."""
    assert a >= 0 and (b is None or a <= b)
    top = _CAP if b is None or b > _CAP else b
    if a > top:
        raise EmptyRange
    alts = []
    last = len(str(top)) if b is not None and b <= _CAP else len(str(a))
    for n in range(len(str(a)), last + 1):
        lo = max(a, 10 ** (n - 1) if n > 1 else 0)
        hi = min(top, 10**n - 1)
        alts.append(_same_length(str(lo), str(hi)))
    if last < MAX_DIGITS and top == _CAP:  # every longer length, whole
        alts.append(f"[1-9] [0-9]{{{last},{MAX_DIGITS - 1}}}")
    return _alt(alts)


def integer_range(lo: int | None, hi: int | None) -> str:
    """Integers lo..hi (None: unbounded, up to 16 digits), as JSON writes them ("-0" never)."""
    if lo is not None and lo < -_CAP:
        lo = None
    if hi is not None and hi > _CAP:
        hi = None
    if lo is not None and hi is not None and hi < lo:
        raise EmptyRange
    alts = []
    if lo is None or lo < 0:  # negatives -1 down to lo
        top = None if lo is None else -lo
        bottom = 1 if hi is None or hi >= 0 else -hi
        alts.append(_seq('"-"', magnitudes(bottom, top)))
    if hi is None or hi >= 0:
        alts.append(magnitudes(0 if lo is None or lo < 0 else lo, hi))
    return _alt(alts)


def integer_bounds(
    minimum: float | None, maximum: float | None, ex_min: float | None, ex_max: float | None
) -> str:
    """GBNF for `type: integer` with these bounds, or EmptyRange."""
    return integer_range(*_bounds(minimum, maximum, ex_min, ex_max))


def number_bounds(
    minimum: float | None, maximum: float | None, ex_min: float | None, ex_max: float | None
) -> str:
    """GBNF for `type: number` with these bounds (a sound subset, see the module), or
    EmptyRange."""
    alts = []
    with contextlib.suppress(EmptyRange):  # then no unit cell fits either: refused below
        alts.append(integer_bounds(minimum, maximum, ex_min, ex_max))
    low = [(minimum, False), (ex_min, True)]
    high = [(maximum, False), (ex_max, True)]
    # "I.f" (I >= 0) lies in [I, I + 1): needs I >= lo (I > lo) and I + 1 <= hi (I + 1 < hi).
    pos_lo = max(
        [0] + [math.floor(v) + 1 if ex else math.ceil(v) for v, ex in low if v is not None]
    )
    pos_hi = min(
        [_MAX_CELL]
        + [math.ceil(v) - 2 if ex else math.floor(v) - 1 for v, ex in high if v is not None]
    )
    if pos_lo <= pos_hi:
        alts.append(_seq(magnitudes(pos_lo, pos_hi), _FRACTION))
    # "-I.f" lies in (-(I + 1), -I]: needs -I <= hi (-I < hi) and -(I + 1) >= lo (-(I + 1) > lo).
    neg_lo = max(
        [0] + [math.floor(-v) + 1 if ex else math.ceil(-v) for v, ex in high if v is not None]
    )
    neg_hi = min(
        [_MAX_CELL]
        + [math.ceil(-v) - 2 if ex else math.floor(-v) - 1 for v, ex in low if v is not None]
    )
    if neg_lo <= neg_hi:
        alts.append(_seq('"-"', magnitudes(neg_lo, neg_hi), _FRACTION))
    if not alts:
        raise EmptyRange
    return _alt(alts)
