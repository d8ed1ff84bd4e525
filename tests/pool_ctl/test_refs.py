from __future__ import annotations

import pytest

from pool_ctl.errors import BadReference
from pool_ctl.refs import Ref, check_model_id, default_model_id, parse_ref, select_file

FILES = [
    "README.md",
    "qwen2.5-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-0.5b-instruct-q4_k_s.gguf",
    "qwen2.5-0.5b-instruct-q8_0.gguf",
    "qwen2.5-0.5b-instruct-fp16-00001-of-00002.gguf",
    "sub/Other.Q4_K.gguf",
]


def test_parse_ref() -> None:
    assert parse_ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m") == Ref(
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF", None, "q4_k_m"
    )
    assert parse_ref("org/repo@v1.0:model.gguf") == Ref("org/repo", "v1.0", "model.gguf")
    assert parse_ref("gpt2:model.gguf").repo == "gpt2"


@pytest.mark.parametrize(
    "text, words",
    [
        ("org/repo", "no ':FILE.gguf'"),
        ("org/repo:", "no ':FILE.gguf'"),
        (":q4", "no ':FILE.gguf'"),
        ("org/../x:q4", "not a Hugging Face repository id"),
        ("a/b/c:q4", "not a Hugging Face repository id"),
        ("org/repo@:q4", "empty revision"),
    ],
)
def test_bad_refs_say_what_to_write(text: str, words: str) -> None:
    with pytest.raises(BadReference) as e:
        parse_ref(text)
    assert words in e.value.message
    assert e.value.hint is not None and "REPO:QUANT" in e.value.hint


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("q4_k_m", "qwen2.5-0.5b-instruct-q4_k_m.gguf"),
        ("Q4_K_M", "qwen2.5-0.5b-instruct-q4_k_m.gguf"),
        ("q8_0", "qwen2.5-0.5b-instruct-q8_0.gguf"),
        ("q4_k", "sub/Other.Q4_K.gguf"),  # q4_k is not a prefix match of q4_k_m
        ("fp16", "qwen2.5-0.5b-instruct-fp16-00001-of-00002.gguf"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "qwen2.5-0.5b-instruct-q8_0.gguf"),
        ("QWEN2.5-0.5B-INSTRUCT-Q8_0.GGUF", "qwen2.5-0.5b-instruct-q8_0.gguf"),
        ("other.q4_k.gguf", "sub/Other.Q4_K.gguf"),
    ],
)
def test_select_file(selector: str, expected: str) -> None:
    """POOL-021: a file name or a quantization bounded by start/end, '-', '.' or '/'."""
    assert select_file(Ref("o/r", None, selector), FILES) == expected


def test_no_match_lists_every_gguf_and_ambiguity_lists_the_matches() -> None:
    """POOL-021: none or several matches fail (BadReference, exit 4) listing the candidates."""
    with pytest.raises(BadReference) as e:
        select_file(Ref("o/r", None, "iq2_xs"), FILES)
    assert "no GGUF file in o/r matches quantization 'iq2_xs'" in e.value.message
    for f in FILES[1:]:
        assert f in e.value.message
    assert "README.md" not in e.value.message
    with pytest.raises(BadReference) as e:
        select_file(Ref("o/r", None, "instruct"), FILES)
    assert "ambiguous" in e.value.message and "q4_k_s" in e.value.message
    with pytest.raises(BadReference) as e:
        select_file(Ref("o/r", None, "x.gguf"), ["README.md"])
    assert "GGUF files there: none" in e.value.message


def test_a_file_name_matches_exactly_then_case_insensitively_then_by_base_name() -> None:
    """POOL-021: an earlier kind of match wins over a later one; two of one kind are ambiguous."""
    files = ["Model.gguf", "model.gguf", "sub/MODEL.gguf", "Other.gguf", "sub/other.gguf"]

    def pick(name: str) -> str:
        return select_file(Ref("o/r", None, name), files)

    assert pick("model.gguf") == "model.gguf"  # exact, though two more match without case
    assert pick("Model.gguf") == "Model.gguf"
    assert pick("sub/model.gguf") == "sub/MODEL.gguf"  # case-insensitive path
    assert pick("other.gguf") == "Other.gguf"  # case-insensitive path beats the base name
    with pytest.raises(BadReference) as e:
        pick("MODEL.GGUF")  # two paths equal it without case
    assert "matches several files" in e.value.message
    assert pick("sub/other.gguf") == "sub/other.gguf"
    assert select_file(Ref("o/r", None, "x.gguf"), ["a/b/X.gguf", "README.md"]) == "a/b/X.gguf"


def test_model_ids() -> None:
    assert default_model_id("sub/Qwen2.5-0.5B-Q4_K_M.GGUF") == "qwen2.5-0.5b-q4_k_m"
    assert check_model_id("tiny-1.0_b") == "tiny-1.0_b"
    for bad in ("", "Upper", "-x", "a/b", "a b", "x" * 129):
        with pytest.raises(BadReference):
            check_model_id(bad)
