"""The per-task cost of per-tenant limits and usage (ORCH-325), in process: the submit's
check, the policy's tenant view and the admission count, then the end's accounting, for a
tenant with every limit set (none reached) and for one with none. Prints one JSON object.

    python bench/limits_cost.py [--n 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestratord.domain.quotas import Limits
from orchestratord.domain.tasks import TaskRequest
from orchestratord.metrics import Metrics
from orchestratord.runtime.tenants import TenantAccounts
from orchestratord.settings import Settings

HIGH = Limits(concurrency=10**9, rpm=10**9, tpm=10**12, daily_tokens=10**15, monthly_tokens=10**15)


def per_task_us(accounts: TenantAccounts, tenant: str, n: int, clock: list[int]) -> float:
    req = TaskRequest(model="m", prompt="hello " * 50, max_tokens=16, tenant=tenant)
    end = {"tokens_out": 16, "prompt_tokens": 60, "prompt_tokens_cached": 10}
    start = time.perf_counter()
    for _ in range(n):
        clock[0] += 1
        now = clock[0]
        estimate = req.prompt_tokens_estimate
        accounts.check(req, estimate, now)
        accounts.view(tenant, now)
        admitted = accounts.admitted(req, estimate, now)
        accounts.closed(req, admitted, "end", end, 60, 16, now)
    return round((time.perf_counter() - start) / n * 1e6, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="tasks per case")
    args = p.parse_args(argv)
    clock = [1_765_000_000_000]
    accounts = TenantAccounts(Settings(), Metrics(), None, lambda: clock[0])
    accounts.quotas.set("limited", HIGH)
    report = {
        "bench": "limits_cost",
        "tasks": args.n,
        "us_per_task": {
            "every_limit_set": per_task_us(accounts, "limited", args.n, clock),
            "no_limits": per_task_us(accounts, "free", args.n, clock),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
