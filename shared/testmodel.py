"""Write a deterministic tiny llama-architecture GGUF for tests, the demo and benchmarks.

The model has random weights, so its text is noise, but it is a real model: llama.cpp loads it,
tokenizes with its SPM vocabulary (the 256 byte tokens included, so output can split UTF-8
characters across tokens) and generates at engine speed. Nothing is downloaded.

    python -m shared.testmodel OUT.gguf [--seed N] [--eos-bias X]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Whole-word and multi-byte pieces: the text the model emits mixes ASCII words, accented and CJK
# characters (as single tokens) and raw byte tokens (which split characters across tokens).
_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "hello",
    "world",
    "llorch",
    "worker",
    "token",
    "stream",
    "cancel",
    "slot",
    "queue",
    "model",
    "prompt",
    "orchestra",
    "pool",
    "host",
    "cuda",
    "metal",
    "cpu",
    "test",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "and",
    "or",
    "not",
    "is",
    "a",
    "of",
    "to",
    "in",
    "it",
    "on",
]
_MULTIBYTE = ["é", "ü", "ß", "€", "日本", "語", "中文", "🙂", "→", "λ", "Ω", "ñ"]

TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_BYTE = 6


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """The SPM vocabulary: control tokens, 256 byte tokens, then pieces, with merge scores."""
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TOKEN_BYTE] * 256
    pieces: list[str] = ["▁"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += [str(d) for d in range(10)]
    pieces += list(".,!?:;'\"-()\n")
    # SPM merges pairwise, so every prefix of a word must be a piece for the word to form.
    for w in _WORDS:
        for k in range(2, len(w) + 1):
            pieces += [w[:k], "▁" + w[:k]]
        pieces.append("▁" + w[0])
    pieces += _MULTIBYTE + ["▁" + m for m in _MULTIBYTE]
    seen = set(tokens)
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(TOKEN_NORMAL)
    # SPM merges prefer higher scores; longer pieces score higher so words stay whole.
    scores = [0.0] * len(tokens)
    for i, (tok, typ) in enumerate(zip(tokens, types, strict=False)):
        if typ == TOKEN_NORMAL:
            scores[i] = float(len(tok)) - i * 1e-4
    return tokens, scores, types


def write_model(
    path: str | Path,
    *,
    seed: int = 1234,
    dim: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    ff: int = 128,
    context_length: int = 4096,
    eos_bias: float = 0.0,
    name: str = "llorch-tiny",
    pooling_type: int | None = None,
) -> Path:
    """Write the model to ``path`` and return it. Same arguments, same bytes."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(dim)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_heads)
    writer.add_rope_dimension_count(dim // n_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    if pooling_type is not None:  # e.g. 4 (rank): a reranker's metadata, which cannot embed
        writer.add_pooling_type(gguf.PoolingType(pooling_type))

    writer.add_tensor("token_embd.weight", weight(n_vocab, dim, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    output = weight(n_vocab, dim, scale=1.0)
    if eos_bias:
        # A row aligned with every hidden state is impossible; instead scale the EOS row so its
        # logit dominates often, which gives tests a model that stops on EOS quickly.
        output[2] = output[2] * eos_bias
    writer.add_tensor("output.weight", output)
    for i in range(n_layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", weight(dim, dim))
        writer.add_tensor(p + "attn_k.weight", weight(dim, dim))
        writer.add_tensor(p + "attn_v.weight", weight(dim, dim))
        writer.add_tensor(p + "attn_output.weight", weight(dim, dim))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", weight(ff, dim))
        writer.add_tensor(p + "ffn_up.weight", weight(ff, dim))
        writer.add_tensor(p + "ffn_down.weight", weight(dim, ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--eos-bias", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.out.exists():
        return 0
    write_model(args.out, seed=args.seed, eos_bias=args.eos_bias)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
