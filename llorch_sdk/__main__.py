"""`python -m llorch_sdk --model M --prompt TEXT`: submit one task and print its tokens as they
arrive (what `make demo` runs). Failures are one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from llorch_sdk.client import Client
from llorch_sdk.errors import LlorchError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llorch_sdk", description=__doc__)
    p.add_argument(
        "--orchestrator-url",
        dest="url",
        default=os.environ.get("LLORCH_ORCHESTRATOR_URL", "http://127.0.0.1:8080"),
        help="orchestratord's base URL (env LLORCH_ORCHESTRATOR_URL)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("LLORCH_API_KEY"),
        help="client API key (env LLORCH_API_KEY)",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key) as client:
            stream = client.stream(
                args.model,
                prompt=args.prompt,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed,
            )
            for event in stream:
                if event.event == "token":
                    print(event.data.get("t", ""), end="", flush=True)
                elif event.event == "end":
                    print(
                        f"\n[{event.data.get('tokens_out')} tokens, "
                        f"stop: {event.data.get('stop_reason')}, task {stream.task_id}]"
                    )
                event.raise_for_error()
    except LlorchError as e:
        print(f"llorch_sdk: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
