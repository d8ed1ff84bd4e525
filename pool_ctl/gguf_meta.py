"""What a GGUF file says about itself, read with the `gguf` package's GGUFReader."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool_ctl.errors import IntegrityError
from shared.prompt_constructor import choose_template
from shared.prompt_constructor.choose import CHAT_TEMPLATE_KEY

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufInfo:
    name: str | None
    architecture: str | None
    context_length: int | None
    parameter_count: int | None
    quantization: str | None
    chat_template: str  # the template the worker will choose (shared.prompt_constructor)
    chat_family: str | None  # the family an embedded template belongs to, by its markers


def template_family(template: str | None) -> str | None:
    """The chat format family of an embedded `tokenizer.chat_template`, by its marker tokens.

    "gguf" means a template is embedded but is none of the known families: the worker renders it
    as is. None means the file has no template.
    """
    if not template:
        return None
    markers = (
        ("<|im_start|>", "chatml"),
        ("<|start_header_id|>", "llama3"),
        ("<<SYS>>", "llama2"),
        ("[INST]", "mistral"),
        ("<|user|>", "phi3"),
    )
    for marker, family in markers:
        if marker in template:
            return family
    return "gguf"


def read_info(path: Path) -> GgufInfo:
    """Read the metadata of the GGUF at `path`; IntegrityError when it is not a readable GGUF."""
    import gguf

    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise IntegrityError(f"cannot read {path}: {e.strerror}", "check the path") from e
    if magic != GGUF_MAGIC:
        raise IntegrityError(
            f"{path} is not a GGUF file (magic {magic!r})", "give a .gguf model file"
        )
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises bare ValueError/IndexError on truncated files
        raise IntegrityError(
            f"{path} is not a readable GGUF ({type(e).__name__}: {e})",
            "the file is truncated or corrupt; download or copy it again",
        ) from e

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    strings = {
        key: value
        for key in ("general.architecture", "general.name", "tokenizer.ggml.pre", CHAT_TEMPLATE_KEY)
        if isinstance(value := field(key), str)
    }
    ctx = field(f"{arch}.context_length") if arch else None
    params = field("general.parameter_count")
    if params is None:
        params = sum(int(t.n_elements) for t in reader.tensors)
    return GgufInfo(
        name=field("general.name"),
        architecture=arch,
        context_length=int(ctx) if ctx is not None else None,
        parameter_count=int(params),
        quantization=_quantization(field("general.file_type"), reader),
        chat_template=choose_template(strings),
        chat_family=template_family(strings.get(CHAT_TEMPLATE_KEY)),
    )


def _quantization(file_type: Any, reader: Any) -> str | None:
    import gguf

    if file_type is not None:
        try:
            name = gguf.LlamaFileType(int(file_type)).name
        except ValueError:
            name = None
        if name:
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    # No file type: the most common type among the large tensors names the quantization.
    kinds = Counter(t.tensor_type.name for t in reader.tensors if t.n_elements >= 1024)
    return kinds.most_common(1)[0][0] if kinds else None


def kv_bytes_per_token(path: Path) -> int | None:
    """The KV cache one token of context takes, at f16 (POOL-091): K and V of every layer,
    `2 bytes * block_count * head_count_kv * (key_length + value_length)`; None when the GGUF
    does not say (no architecture, layer count or heads)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception:  # not readable: the catalog's verify says why; here it is unknown
        return None

    def number(key: str) -> int | None:
        f = reader.fields.get(key)
        value = None if f is None else f.contents()
        if isinstance(value, list):  # per-layer head counts: the largest bounds the cache
            value = max(value) if value else None
        return int(value) if isinstance(value, int | float) and value > 0 else None

    arch = reader.fields.get("general.architecture")
    name = arch.contents() if arch is not None else None
    if not isinstance(name, str):
        return None
    layers = number(f"{name}.block_count")
    heads = number(f"{name}.attention.head_count")
    kv_heads = number(f"{name}.attention.head_count_kv") or heads
    embd = number(f"{name}.embedding_length")
    if layers is None or heads is None or kv_heads is None:
        return None
    head_dim = embd // heads if embd is not None else None
    k = number(f"{name}.attention.key_length") or head_dim
    v = number(f"{name}.attention.value_length") or head_dim
    if k is None or v is None:
        return None
    return 2 * layers * kv_heads * (k + v)
