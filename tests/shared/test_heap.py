"""Start-up objects leave the garbage collector's view once start-up is done (shared.heap)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_orchestratord_freezes_its_startup_heap_once_started(tmp_path: Path) -> None:
    """After the lifespan started, the modules, tables and compiled policy are frozen (a full
    collection no longer walks them); before, nothing is."""
    script = textwrap.dedent(
        f"""
        import gc
        from starlette.testclient import TestClient
        from orchestratord.app import create_app
        from orchestratord.settings import Settings
        from pathlib import Path

        before = gc.get_freeze_count()
        with TestClient(create_app(Settings(state_dir=Path({str(tmp_path)!r})))):
            print(before, gc.get_freeze_count())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    before, after = (int(x) for x in out.stdout.split())
    assert before == 0 and after > 10_000
