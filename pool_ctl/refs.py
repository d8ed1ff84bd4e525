"""Model references: `REPO[@REVISION]:FILE.gguf` or `REPO[@REVISION]:QUANT`, and file matching.

Pure: the repository's file list comes in, one file name or a BadReference listing the choices
goes out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pool_ctl.errors import BadReference
from shared.model_id import is_model_id, model_id_from_path

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
_HINT = "write REPO:FILE.gguf or REPO:QUANT, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m"


@dataclass(frozen=True)
class Ref:
    repo: str
    revision: str | None
    selector: str

    @property
    def is_filename(self) -> bool:
        return self.selector.lower().endswith(".gguf")


def parse_ref(text: str) -> Ref:
    repo_part, sep, selector = text.strip().partition(":")
    if not sep or not selector or not repo_part:
        raise BadReference(f"model reference {text!r} has no ':FILE.gguf' or ':QUANT' part", _HINT)
    repo, _, revision = repo_part.partition("@")
    if not _REPO.match(repo) or ".." in repo:
        raise BadReference(f"{repo!r} is not a Hugging Face repository id", _HINT)
    if "@" in repo_part and not revision:
        raise BadReference(f"model reference {text!r} has an empty revision after '@'", _HINT)
    return Ref(repo=repo, revision=revision or None, selector=selector)


def _quant_pattern(quant: str) -> re.Pattern[str]:
    # Quant names contain '_' (q4_k_m), so only '-', '.' and '/' bound them: q4_k must not
    # match q4_k_m.
    return re.compile(r"(^|[-./])" + re.escape(quant.lower()) + r"($|[-./])")


def select_file(ref: Ref, files: Sequence[str]) -> str:
    """The one GGUF file of `files` that `ref` names."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    choices = ", ".join(ggufs) if ggufs else "none"
    if ref.is_filename:
        exact = [f for f in ggufs if f == ref.selector]
        if not exact:
            exact = [f for f in ggufs if f.lower() == ref.selector.lower()]
        if not exact:
            exact = [f for f in ggufs if f.rsplit("/", 1)[-1].lower() == ref.selector.lower()]
        if len(exact) == 1:
            return exact[0]
        if not exact:
            raise BadReference(
                f"{ref.repo} has no file {ref.selector!r}; GGUF files there: {choices}",
                "pick one of those",
            )
        raise BadReference(
            f"{ref.selector!r} matches several files in {ref.repo}: {', '.join(exact)}",
            "give the full path inside the repository",
        )
    pattern = _quant_pattern(ref.selector)
    matches = [f for f in ggufs if pattern.search(f.lower().removesuffix(".gguf"))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadReference(
            f"no GGUF file in {ref.repo} matches quantization {ref.selector!r}; "
            f"GGUF files there: {choices}",
            "pick one of those as REPO:FILE.gguf",
        )
    raise BadReference(
        f"quantization {ref.selector!r} is ambiguous in {ref.repo}: {', '.join(matches)}",
        "name the file as REPO:FILE.gguf",
    )


def default_model_id(filename: str) -> str:
    """The catalog id a file gets unless the user names one: the id a worker started by hand on
    the same file registers (shared.model_id)."""
    return model_id_from_path(filename)


def check_model_id(model_id: str) -> str:
    """A catalog id: lower case letters, digits, '.', '_' and '-', so it is safe everywhere."""
    if not is_model_id(model_id):
        raise BadReference(
            f"model id {model_id!r} is not valid",
            "use lower-case letters, digits, '.', '_' and '-' (at most 128)",
        )
    return model_id
