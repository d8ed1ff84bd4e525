"""The prompt contract against the real tokenizer: llama.cpp, the tiny GGUF's vocabulary.

A worker renders with the model's own metadata and BOS/EOS strings, then tokenizes Prompt.text
with the model's BOS added and special tokens parsed (PC-030, PC-031). These tests load only
the vocabulary, so they are fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from shared.prompt_constructor import build_prompt, choose_template

CONVERSATION = [
    {"role": "user", "content": "hello world"},
    {"role": "assistant", "content": "the quick fox"},
    {"role": "user", "content": "cancel"},
]


@pytest.fixture(scope="module")
def vocab(tiny_model: Path) -> Iterator[llama_cpp.Llama]:
    llm = llama_cpp.Llama(model_path=str(tiny_model), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def special_text(llm: llama_cpp.Llama, token: int) -> str:
    return llm.detokenize([token], special=True).decode()


def tokens(llm: llama_cpp.Llama, text: str, *, add_bos: bool = True) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=add_bos, special=True)


def test_model_metadata_selects_its_embedded_template(vocab: llama_cpp.Llama) -> None:
    """PC-093 (PC-030, PC-031): the model's own template, tokenized as a worker does, starts
    with exactly one BOS, added by the tokenizer."""
    metadata = vocab.metadata
    assert choose_template(metadata) == "embedded"
    prompt = build_prompt(
        CONVERSATION,
        metadata=metadata,
        bos_token=special_text(vocab, vocab.token_bos()),
        eos_token=special_text(vocab, vocab.token_eos()),
    )
    assert prompt.text == build_prompt(CONVERSATION, "chatml").text
    assert prompt.stop == ("<|im_end|>", "</s>")
    ids = tokens(vocab, prompt.text)
    im_start, im_end = tokens(vocab, "<|im_start|><|im_end|>", add_bos=False)
    # One BOS, added by the tokenizer; the ChatML markers are single control tokens.
    assert ids[0] == vocab.token_bos()
    assert ids.count(vocab.token_bos()) == 1
    assert ids[1] == im_start
    assert ids.count(im_start) == 4
    assert ids.count(im_end) == 3


def test_leaving_out_the_leading_bos_gives_the_documented_tokens(vocab: llama_cpp.Llama) -> None:
    """PC-093 (PC-030, PC-031): a built-in format that documents a leading BOS tokenizes to the
    documented tokens, one leading BOS, later BOS strings kept."""
    # Tokenizing "<s>" + text without adding BOS is what the documented format means; the
    # prompt text tokenized the way a worker does gives the same ids, with a single BOS.
    prompt = build_prompt(CONVERSATION, "llama2")
    assert tokens(vocab, prompt.text) == tokens(vocab, "<s>" + prompt.text, add_bos=False)
    ids = tokens(vocab, prompt.text)
    assert ids[0] == vocab.token_bos()
    # The second exchange's <s> and the first exchange's </s> stay as control tokens.
    assert ids.count(vocab.token_bos()) == 2
    assert ids.count(vocab.token_eos()) == 1


def test_embedded_template_that_writes_bos(vocab: llama_cpp.Llama) -> None:
    """PC-093 (PC-030, PC-031): an embedded template that starts with bos_token, given the
    model's BOS text, tokenizes as a worker does to its documented tokens with one BOS."""
    bos = special_text(vocab, vocab.token_bos())
    metadata = dict(vocab.metadata)
    metadata["tokenizer.chat_template"] = "{{ bos_token }}" + metadata["tokenizer.chat_template"]
    prompt = build_prompt(CONVERSATION, metadata=metadata, bos_token=bos)
    assert prompt.template == "embedded"
    assert not prompt.text.startswith(bos)
    assert tokens(vocab, prompt.text) == tokens(vocab, bos + prompt.text, add_bos=False)
    ids = tokens(vocab, prompt.text)
    assert ids[0] == vocab.token_bos()
    assert ids.count(vocab.token_bos()) == 1
