"""Token bytes -> text events: incremental UTF-8 decoding and stop strings, with no I/O.

llama.cpp hands out each token's bytes; a multi-byte character can span several tokens (SPM byte
tokens do this). The incremental decoder keeps incomplete sequences back until they complete, so
no event ever carries half a character. Text that could be the start of a stop string is held
back too, so a stop string never leaks partially: it is released once it can no longer match.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Feed token bytes, get the text that is safe to emit now."""

    __slots__ = ("_decode", "_hold", "_stops", "stopped")

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._stops = tuple(s for s in stops if s)
        self._hold = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Return the text to emit for this token ('' while bytes or a stop prefix are held)."""
        if self.stopped:
            return ""
        text = self._decode(piece)
        if not self._stops:
            return text
        return self._scan(self._hold + text)

    def finish(self, *, cut: bool = False) -> str:
        """Return the held-back tail at the end of generation. Incomplete trailing bytes become
        U+FFFD, unless the output was `cut` (by max_tokens): then they are the start of a
        character the model did not get to finish, and are dropped (WRK-033)."""
        text = self._hold + ("" if cut else self._decode(b"", True))
        self._hold = ""
        if not self._stops or self.stopped:
            return "" if self.stopped else text
        out = self._scan(text)
        tail, self._hold = self._hold, ""
        return out + ("" if self.stopped else tail)

    def _scan(self, buf: str) -> str:
        cut = -1
        for stop in self._stops:
            at = buf.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut = at
        if cut != -1:
            self.stopped = True
            self._hold = ""
            return buf[:cut]
        keep = self._partial_stop_len(buf)
        self._hold = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def _partial_stop_len(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:k]):
                    best = k
                    break
        return best
