"""`llorch-pool backends` reports the host's memory and what each catalog model needs
(specs/pool.md POOL-090, POOL-091): RAM from /proc/meminfo, VRAM from nvidia-smi, a model's
size from its file and its KV size per token from its GGUF metadata."""

from __future__ import annotations

from pathlib import Path

from pool_ctl.backends import parse_meminfo, parse_nvidia_memory
from pool_ctl.gguf_meta import kv_bytes_per_token
from tests.pool_ctl.helpers import pool_env, run_pool

SMOLLM2 = Path(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_pool_090_meminfo_and_nvidia_smi_parse() -> None:
    """POOL-090: free RAM is MemAvailable (MemFree without it); VRAM sums the GPUs' MiB."""
    text = "MemTotal:       16384000 kB\nMemFree:   1000 kB\nMemAvailable:    8192000 kB\n"
    assert parse_meminfo(text) == (16384000 * 1024, 8192000 * 1024)
    assert parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n") == (2048 * 1024, 1024 * 1024)
    assert parse_nvidia_memory("81559, 80000\n81559, 1000\n") == (163118 << 20, 81000 << 20)
    assert parse_nvidia_memory("") is None
    assert parse_nvidia_memory("[N/A], [N/A]\n") is None


def test_pool_091_kv_size_from_the_gguf(tiny_model: Path) -> None:
    """POOL-091: K and V of every layer at f16; SmolLM2-135M has 30 layers, 3 KV heads of 64:
    2 * 30 * 3 * (64 + 64) = 23040 bytes a token, as llama.cpp allocates it."""
    assert kv_bytes_per_token(tiny_model) is not None
    if SMOLLM2.exists():
        assert kv_bytes_per_token(SMOLLM2) == 23040
    assert kv_bytes_per_token(Path(__file__)) is None


def test_pool_090_pool_091_backends_reports_memory_and_models(
    tmp_path: Path, tiny_model: Path
) -> None:
    """POOL-090, POOL-091: `backends --json` and `backends --memory` give the host's RAM and
    each catalog model's size and KV size; the table prints the free RAM."""
    env = pool_env(tmp_path / "home")
    assert run_pool(["models", "import", str(tiny_model), "--id", "tiny"], env).code == 0
    fast = run_pool(["backends", "--memory"], env)
    assert fast.code == 0, fast.err
    body = fast.json()
    assert body["memory"]["ram_total_bytes"] >= body["memory"]["ram_free_bytes"] > 0
    assert body["models"]["tiny"] == {
        "size_bytes": tiny_model.stat().st_size,
        "kv_bytes_per_token": kv_bytes_per_token(tiny_model),
        "context_length": body["models"]["tiny"]["context_length"],
    }
    full = run_pool(["backends", "--json"], env)
    assert full.code == 0, full.err
    assert set(full.json()) >= {"backends", "memory", "models"}
    assert full.json()["models"]["tiny"]["size_bytes"] == tiny_model.stat().st_size
    table = run_pool(["backends"], env)
    assert table.code == 0 and "RAM: " in table.out and " free of " in table.out
