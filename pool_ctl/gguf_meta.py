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


# GGUF value types and the sizes of the fixed-size ones (the format's spec).
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_INTS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}


def _header_numbers(path: Path) -> dict[str, int | str]:
    """The GGUF header's integer and string values, arrays skipped. GGUFReader parses every
    array (a 50k-token vocabulary takes seconds): this reads only what memory planning needs,
    fast enough to run before each placement."""
    import struct

    out: dict[str, int | str] = {}
    with path.open("rb") as f:

        def read(n: int) -> bytes:
            b = f.read(n)
            if len(b) != n:
                raise ValueError("truncated GGUF header")
            return b

        def string() -> bytes:
            (n,) = struct.unpack("<Q", read(8))
            return read(n)

        def skip(kind: int) -> None:
            if kind == _GGUF_STRING:
                (n,) = struct.unpack("<Q", read(8))
                f.seek(n, 1)
            elif kind == _GGUF_ARRAY:
                elem, count = struct.unpack("<IQ", read(12))
                if elem in _GGUF_SIZES:
                    f.seek(_GGUF_SIZES[elem] * count, 1)
                else:
                    for _ in range(count):
                        skip(elem)
            elif kind in _GGUF_SIZES:
                f.seek(_GGUF_SIZES[kind], 1)
            else:
                raise ValueError(f"unknown GGUF value type {kind}")

        if read(4) != GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        version, _tensors, count = struct.unpack("<IQQ", read(20))
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        for _ in range(count):
            key = string().decode("utf-8", "replace")
            (kind,) = struct.unpack("<I", read(4))
            if kind in _GGUF_INTS:
                (out[key],) = struct.unpack(_GGUF_INTS[kind], read(_GGUF_SIZES[kind]))
            elif kind == _GGUF_STRING and key == "general.architecture":
                out[key] = string().decode("utf-8", "replace")
            else:
                skip(kind)
    return out


def kv_bytes_per_token(path: Path) -> int | None:
    """The KV cache one token of context takes, at f16 (POOL-091): K and V of every layer,
    `2 bytes * block_count * head_count_kv * (key_length + value_length)`; None when the GGUF
    does not say (no architecture, layer count or heads) or cannot be read."""
    try:
        meta = _header_numbers(path)
    except (OSError, ValueError, UnicodeDecodeError, MemoryError, OverflowError):
        return None
    name = meta.get("general.architecture")
    if not isinstance(name, str):
        return None

    def number(key: str) -> int | None:
        value = meta.get(f"{name}.{key}")
        return value if isinstance(value, int) and value > 0 else None

    layers = number("block_count")
    heads = number("attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    embd = number("embedding_length")
    if layers is None or heads is None or kv_heads is None:
        return None
    head_dim = embd // heads if embd is not None else None
    k = number("attention.key_length") or head_dim
    v = number("attention.value_length") or head_dim
    if k is None or v is None:
        return None
    return 2 * layers * kv_heads * (k + v)
