from __future__ import annotations

import pytest

from worker.textstream import TextStream


def feed_all(ts: TextStream, pieces: list[bytes]) -> list[str]:
    return [ts.feed(p) for p in pieces]


def test_multibyte_characters_split_across_tokens_arrive_whole() -> None:
    """WRK-024, WRK-025: bytes that do not complete a character wait for a later event; characters
    arrive whole."""
    data = "é€🙂".encode()
    out = feed_all(TextStream(), [bytes([b]) for b in data])
    assert [t for t in out if t] == ["é", "€", "🙂"]


def test_invalid_bytes_become_replacement_characters() -> None:
    """WRK-025: invalid bytes decode as U+FFFD."""
    ts = TextStream()
    assert ts.feed(b"\xff") == "\ufffd"
    assert ts.feed(b"\xe2\x82") == ""
    assert ts.finish() == "\ufffd"


def test_stop_string_cuts_output_and_never_leaks_a_prefix() -> None:
    """WRK-026: a stop string never appears in the output, in whole or in part."""
    ts = TextStream(["<END>"])
    out = feed_all(ts, [b"ab", b"<E", b"N", b"D>", b"tail"])
    assert out == ["ab", "", "", "", ""]
    assert ts.stopped


def test_held_prefix_is_released_when_it_stops_matching() -> None:
    """WRK-026: held text is released as soon as it cannot begin a stop string."""
    ts = TextStream(["<END>"])
    assert feed_all(ts, [b"a<E", b"x"]) == ["a", "<Ex"]
    assert not ts.stopped


def test_held_prefix_is_released_at_the_end() -> None:
    """WRK-026: held text is released at the end."""
    ts = TextStream(["xyz"])
    assert feed_all(ts, [b"ab", b"xy"]) == ["ab", ""]
    assert ts.finish() == "xy"


def test_earliest_of_several_stop_strings_wins() -> None:
    ts = TextStream(["lo w", "hel"])
    assert ts.feed(b"say hello world") == "say "
    assert ts.stopped


def test_stop_string_spanning_a_split_character() -> None:
    """WRK-025, WRK-026: a stop string that ends inside a split character is still cut."""
    stop = "€x"
    ts = TextStream([stop])
    data = "a€x".encode()
    out = feed_all(ts, [bytes([b]) for b in data])
    assert "".join(out) == "a" and ts.stopped


@pytest.mark.parametrize("stops", [[], ["zz"]])
def test_concatenation_equals_one_shot_decode(stops: list[str]) -> None:
    """WRK-025: the concatenated text equals a one-shot UTF-8 decode."""
    data = "héllo wörld — 日本語 🙂".encode()
    ts = TextStream(stops)
    out = "".join(ts.feed(data[i : i + 3]) for i in range(0, len(data), 3)) + ts.finish()
    assert out == data.decode()


@pytest.mark.parametrize("stops", [[], ["zz"]])
def test_wrk033_a_character_cut_by_max_tokens_is_dropped_not_replaced(stops: list[str]) -> None:
    """WRK-033: output cut mid-character (max_tokens) ends at the last complete character."""
    data = "蓝🔥".encode()
    ts = TextStream(stops)
    out = feed_all(ts, [data[:3], data[3:5]])  # '蓝', then half of '🔥'
    assert out == ["蓝", ""]
    assert ts.finish(cut=True) == ""


def test_wrk033_text_held_for_a_stop_string_is_still_released_when_cut() -> None:
    """WRK-026, WRK-033: a cut drops only the incomplete bytes, not held complete text."""
    ts = TextStream(["xyz"])
    assert feed_all(ts, [b"ab", b"xy", "🔥".encode()[:2]]) == ["ab", "", ""]
    assert ts.finish(cut=True) == "xy"


def test_wrk033_incomplete_bytes_at_eos_still_become_a_replacement_character() -> None:
    """WRK-025, WRK-033: only a cut drops them; a model that ended mid-character made them."""
    ts = TextStream()
    assert ts.feed("🔥".encode()[:2]) == ""
    assert ts.finish() == "\ufffd"
