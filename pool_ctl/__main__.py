"""`python -m pool_ctl` runs the llorch-pool CLI."""

from __future__ import annotations

from pool_ctl.cli import main

main()
