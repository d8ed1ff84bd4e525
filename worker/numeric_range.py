"""GBNF for JSON numbers inside bounds (WRK-135): the grammar admits only numbers the bounds
allow, so `minimum`/`maximum` (exclusive or not) are enforced, never ignored.

Integers are exact: a range of non-negative integers is split by digit count, and each
same-length range [a, b] into a shared prefix, the values after a's first digit, the digits
strictly between, and the values up to b's first digit, recursively. Negative values are "-"
before a range of magnitudes. An unbounded side stops at 16 digits, as the port's `integer`
does (runaway digits from a model would otherwise fill `max_tokens`).

Non-integer numbers are enforced conservatively: the integers of the range, plus fractions
cut into cells at the scale of the bounds' decimals (10^-k, k at most MAX_SCALE): the cell c
holds the texts "I.f..." whose first k decimals make c, i.e. values in [c, c + 1] / 10^k, and
is admitted only if the doubles of both its ends satisfy the bounds. A text parses to the double
nearest its value and rounding is monotonic, so every value of an admitted cell does too, even
beside an exclusive bound. No exponent is written. A bounded number whose range holds no such
cell nor integer (e.g. [0.25, 0.2500001]) is refused by the caller.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from fractions import Fraction

MAX_DIGITS = 16
# Fractions are cut into cells of 10^-MAX_SCALE at the finest (bounds with more decimals are
# enforced conservatively at that scale).
MAX_SCALE = 6
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
    with contextlib.suppress(EmptyRange):
        alts.append(integer_bounds(minimum, maximum, ex_min, ex_max))
    k = min(MAX_SCALE, max(_decimals(v) for v in (minimum, maximum, ex_min, ex_max)))
    unit = 10**k

    # The double a fraction's text parses to is the double nearest its exact value, and
    # rounding is monotonic: the doubles of a cell's ends bound those of its values.
    def above(value: Fraction) -> bool:
        x = float(value)
        return (minimum is None or x >= minimum) and (ex_min is None or x > ex_min)

    def below(value: Fraction) -> bool:
        x = float(value)
        return (maximum is None or x <= maximum) and (ex_max is None or x < ex_max)

    # Cell c >= 0 holds "I.f..." (c = I * unit + f, f written with k digits): [c, c + 1] / unit.
    cells = _cells(lambda c: above(Fraction(c, unit)), lambda c: below(Fraction(c + 1, unit)), unit)
    if cells is not None:
        alts.append(_fractions(*cells, k))
    # "-I.f..." lies in [-(c + 1), -c] / unit.
    cells = _cells(
        lambda c: below(Fraction(-c, unit)), lambda c: above(Fraction(-c - 1, unit)), unit
    )
    if cells is not None:
        alts.append(_seq('"-"', _fractions(*cells, k)))
    if not alts:
        raise EmptyRange
    return _alt(alts)


def _decimals(bound: float | None) -> int:
    """How many decimals the bound is written with (repr: its shortest round-trip form)."""
    if bound is None or isinstance(bound, int) or bound.is_integer():
        return 0
    mantissa, _, exp = repr(bound).partition("e")
    digits = len(mantissa.partition(".")[2])
    return max(0, digits - int(exp or 0))


def _cells(
    rising: Callable[[int], bool], falling: Callable[[int], bool], unit: int
) -> tuple[int, int] | None:
    """The cells c (integer part of at most 16 digits) where `rising` (false, then true) and
    `falling` (true, then false) both hold, as (first, last), or None."""
    top = (_CAP + 1) * unit - 1
    lo, hi = 0, top + 1
    while lo < hi:  # the first c with rising(c), or top + 1
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if rising(mid) else (mid + 1, hi)
    first = lo
    lo, hi = -1, top
    while lo < hi:  # the last c with falling(c), or -1
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if falling(mid) else (lo, mid - 1)
    return (first, lo) if first <= lo else None


def _fractions(first: int, last: int, k: int) -> str:
    """'I.f' then up to 15 decimals in all, for the cells first..last at scale 10^-k."""
    if k == 0:
        return _seq(magnitudes(first, last), _FRACTION)
    unit = 10**k
    (i_a, f_a), (i_b, f_b) = divmod(first, unit), divmod(last, unit)
    pad = f"{{:0{k}d}}".format
    if i_a == i_b:
        head = _seq(magnitudes(i_a, i_a), '"."', _same_length(pad(f_a), pad(f_b)))
    else:
        heads = [_seq(magnitudes(i_a, i_a), '"."', _same_length(pad(f_a), "9" * k))]
        if i_a + 1 <= i_b - 1:
            heads.append(_seq(magnitudes(i_a + 1, i_b - 1), '"."', _any_digits(k)))
        heads.append(_seq(magnitudes(i_b, i_b), '"."', _same_length("0" * k, pad(f_b))))
        head = _alt(heads)
    return head if k == 15 else _seq(head, f"[0-9]{{0,{15 - k}}}")
