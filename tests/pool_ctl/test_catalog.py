"""catalog.json under concurrent writers: every entry survives, the file always parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WRITER = """
import sys
from pathlib import Path
from pool_ctl.catalog import Catalog
catalog = Catalog(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    with catalog.edit() as models:
        models[f"{sys.argv[2]}-{i}"] = {"id": f"{sys.argv[2]}-{i}", "sha256": "0" * 64}
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    n, writers = 30, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{w}", str(n)])
        for w in range(writers)
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert len(data["models"]) == n * writers
    leftovers = [
        p.name for p in tmp_path.iterdir() if p.name not in ("catalog.json", "catalog.json.lock")
    ]
    assert leftovers == []  # no temporary files left behind
