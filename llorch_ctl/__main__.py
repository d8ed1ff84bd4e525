"""`python -m llorch_ctl` runs the `llorch` CLI."""

from __future__ import annotations

import sys

from llorch_ctl.cli import main

sys.exit(main())
