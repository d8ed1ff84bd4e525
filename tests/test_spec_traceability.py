"""Every MUST of the specs is named by a test: a reader goes from a requirement to its proof.

A requirement is a `**PREFIX-NNN**` item of `specs/*.md`; it counts as a MUST when its text
says MUST (or MUST NOT). A test names it in its name or docstring (`ORCH-053`, `orch_053`).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEM = re.compile(r"\*\*([A-Z]+-\d+)\*\*(.*?)(?=\n- \*\*|\n#|\Z)", re.S)


def requirements() -> dict[str, str]:
    """Every requirement ID of specs/*.md and its text."""
    found: dict[str, str] = {}
    for spec in sorted((ROOT / "specs").glob("*.md")):
        for m in ITEM.finditer(spec.read_text(encoding="utf-8")):
            found[m.group(1)] = " ".join(m.group(2).split())
    return found


def named(test_text: str, req_id: str) -> bool:
    prefix, number = req_id.split("-")
    pattern = rf"(?<![A-Za-z0-9]){prefix}[-_]{number}(?!\d)"
    return re.search(pattern, test_text, re.IGNORECASE) is not None


def test_every_must_is_named_by_a_test() -> None:
    reqs = requirements()
    assert len(reqs) > 250, "the specs' requirement items were not found"
    tests = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").rglob("*.py")
        if p.resolve() != Path(__file__).resolve()
    )
    untraced = [
        f"{req_id}: {text[:100]}"
        for req_id, text in reqs.items()
        if re.search(r"\bMUST\b", text) and not named(tests, req_id)
    ]
    assert untraced == [], "MUSTs no test names:\n" + "\n".join(untraced)


def test_the_check_sees_a_must_that_no_test_names() -> None:
    """The check itself: a MUST item is found, and naming it in either form counts."""
    text = "- **ABC-017** It MUST work.\n- **ABC-018** It MAY work.\n"
    items = {m.group(1): m.group(2) for m in ITEM.finditer(text)}
    assert list(items) == ["ABC-017", "ABC-018"]
    assert named('"""ABC-017: proves it."""', "ABC-017")
    assert named("def test_abc_017_works(): ...", "ABC-017")
    assert not named("ABC-0170 and XABC-017", "ABC-017")
