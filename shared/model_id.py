"""The model id: the one name a GGUF goes by in the pool catalog, the registry and task bodies.

`llorch-pool models import|download` gives a file this id unless told otherwise, and a worker
started by hand without `--model-name` registers under the same id, so a task names a model the
same way whichever started its worker.
"""

from __future__ import annotations

from pathlib import PurePath

from shared.names import CATALOG_ID


def model_id_from_path(path: str | PurePath) -> str:
    """The default model id of a GGUF file: its file name, lower case, without `.gguf`.

    >>> model_id_from_path("/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    'smollm2-135m-instruct.q4_1'
    """
    base = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    if base.lower().endswith(".gguf"):
        base = base[: -len(".gguf")]
    return base.lower()


def is_model_id(text: str) -> bool:
    """Lower-case letters, digits, '.', '_' and '-', at most 128: safe in URLs, files, shells."""
    return CATALOG_ID.matches(text)
