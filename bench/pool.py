"""Spawn-to-ready time of a worker started by llorch-pool, next to loading the same model in
process with llama_cpp.Llama, in the same run. Prints one JSON object.

    python bench/pool.py --model .cache/models/llorch-tiny.gguf [--repeat 5]

spawn_to_ready_s: pool_ctl.spawn.spawn(), from posix_spawn to GET /health == ready (Python
start, imports, model load, server bind, first poll). cli_spawn_to_ready_s: the same through
`python -m pool_ctl worker spawn`, as an operator over SSH sees it. in_process_load_s:
llama_cpp.Llama(model_path=..., n_ctx=4096) in this process. Medians and minima over --repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pool_ctl.models import import_file
from pool_ctl.settings import Settings
from pool_ctl.spawn import spawn
from pool_ctl.workers import stop


def _summary(xs: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(xs), 4),
        "min": round(min(xs), 4),
        "max": round(max(xs), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="GGUF file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.model.is_file():
        print(f"bench/pool.py: model file not found: {args.model}", file=sys.stderr)
        return 2

    import llama_cpp

    spawn_s: list[float] = []
    cli_s: list[float] = []
    load_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="llorch-bench-pool-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings.build(home)
        import_file(settings, args.model, model_id="bench")
        env = {**os.environ, "LLORCH_HOME": str(home)}
        for _ in range(args.repeat):
            t = time.perf_counter()
            llm = llama_cpp.Llama(model_path=str(args.model), n_ctx=4096, verbose=False)
            load_s.append(time.perf_counter() - t)
            del llm

            t = time.perf_counter()
            record = spawn(settings, "cpu", "bench", timeout=120)
            spawn_s.append(time.perf_counter() - t)
            stop(settings, record["worker_id"])

            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pool_ctl",
                    "worker",
                    "spawn",
                    "cpu",
                    "--model",
                    "bench",
                    "--json",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            cli_s.append(time.perf_counter() - t)
            stop(settings, None, all_workers=True)

    print(
        json.dumps(
            {
                "bench": "pool",
                "model": str(args.model),
                "model_bytes": args.model.stat().st_size,
                "repeat": args.repeat,
                "spawn_to_ready_s": _summary(spawn_s),
                "cli_spawn_to_ready_s": _summary(cli_s),
                "in_process_load_s": _summary(load_s),
                "spawn_overhead_s": round(
                    statistics.median(spawn_s) - statistics.median(load_s), 4
                ),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
