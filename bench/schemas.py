"""The fifty generated JSON schemas (tests/schema_corpus.py) on a real model, through the real
`openai` client and orchestratord, streamed and not, beside free streams (WRK-131, WRK-135,
ORCH-248). `make test` runs all fifty on the tiny model and five on SmolLM2; this runs all
fifty on SmolLM2 (a few minutes on 2 cores), which is too slow for the suite.

    python bench/schemas.py [--model GGUF] [--count 50]

Prints one JSON object: how many schemas were asked (each twice: streamed and not), whether
every answer parsed and validated with `jsonschema` and ended on `stop`, how many rounds
provably overlapped a free stream, and the wall time. A failure names the schema and what
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.orchestratord.sdk_cluster import run_cluster  # noqa: E402
from tests.orchestratord.test_openai_schemas_e2e import SLOTS, run_rounds  # noqa: E402
from tests.schema_corpus import schemas  # noqa: E402

DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--free-tokens", type=int, default=150)
    args = parser.parse_args()
    corpus = schemas()[: args.count]
    started = time.perf_counter()
    failure = None
    overlapped = 0
    with (
        tempfile.TemporaryDirectory(prefix="llorch-bench-schemas-") as tmp,
        run_cluster(args.model, Path(tmp), slots=SLOTS) as cluster,
    ):
        try:
            overlapped = run_rounds(cluster, corpus, free_tokens=args.free_tokens)
        except AssertionError as e:  # run_rounds asserts each answer; name the first
            failure = str(e)[:500]
        except Exception as e:  # jsonschema.ValidationError, a JSON error
            failure = f"{type(e).__name__}: {str(e)[:500]}"
    report = {
        "bench": "schemas",
        "model": args.model.name,
        "schemas": len(corpus),
        "answers": 2 * len(corpus),
        "all_valid": failure is None,
        "failure": failure,
        "rounds_overlapping_a_free_stream": overlapped,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
