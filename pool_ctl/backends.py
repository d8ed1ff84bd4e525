"""Which inference backends this host can run: cpu always, cuda and metal when they work.

`detect` is pure: the facts about the host come in as a `HostFacts` value, gathered by
`probe_host` (the only part that touches the system), so every combination is unit-testable.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypedDict

from pool_ctl import jsonfile

BackendName = Literal["cpu", "cuda", "metal"]
BACKENDS: tuple[BackendName, ...] = ("cpu", "cuda", "metal")


class Backend(TypedDict):
    name: BackendName
    available: bool
    reason: str  # why it is available, or why not


@dataclass(frozen=True)
class HostFacts:
    system: str  # platform.system()
    machine: str  # platform.machine()
    nvidia_driver: str | None  # driver version, None without a driver
    nvidia_gpus: tuple[str, ...]
    gpu_offload: bool | None  # llama_supports_gpu_offload(); None if llama_cpp cannot load
    llama_backends: tuple[str, ...]  # ggml backends compiled in, from llama_print_system_info
    llama_error: str | None = None


def detect(facts: HostFacts) -> list[Backend]:
    return [_cpu(facts), _cuda(facts), _metal(facts)]


def _cpu(facts: HostFacts) -> Backend:
    if facts.llama_error is not None:
        return Backend(
            name="cpu",
            available=False,
            reason=f"llama-cpp-python fails to load: {facts.llama_error}",
        )
    return Backend(name="cpu", available=True, reason=f"{facts.system} {facts.machine}")


def _cuda(facts: HostFacts) -> Backend:
    def no(reason: str) -> Backend:
        return Backend(name="cuda", available=False, reason=reason)

    if facts.system != "Linux" and facts.system != "Windows":
        return no(f"CUDA is not supported on {facts.system}")
    if facts.nvidia_driver is None:
        return no("no NVIDIA driver found (/proc/driver/nvidia/version missing)")
    if not facts.nvidia_gpus:
        return no(f"NVIDIA driver {facts.nvidia_driver} present but no GPU found")
    if facts.llama_error is not None:
        return no(f"llama-cpp-python fails to load: {facts.llama_error}")
    if not facts.gpu_offload or "CUDA" not in facts.llama_backends:
        return no(
            "llama-cpp-python was built without CUDA; reinstall it with CMAKE_ARGS='-DGGML_CUDA=on'"
        )
    gpus = ", ".join(facts.nvidia_gpus)
    return Backend(name="cuda", available=True, reason=f"driver {facts.nvidia_driver}; {gpus}")


def _metal(facts: HostFacts) -> Backend:
    def no(reason: str) -> Backend:
        return Backend(name="metal", available=False, reason=reason)

    if facts.system != "Darwin":
        return no(f"Metal needs macOS, this host runs {facts.system}")
    if facts.machine != "arm64":
        return no(f"Metal needs Apple silicon (arm64), this Mac is {facts.machine}")
    if facts.llama_error is not None:
        return no(f"llama-cpp-python fails to load: {facts.llama_error}")
    if not facts.gpu_offload:
        return no(
            "llama-cpp-python was built without Metal; reinstall it with "
            "CMAKE_ARGS='-DGGML_METAL=on'"
        )
    return Backend(name="metal", available=True, reason="Apple silicon with Metal offload")


def _nvidia() -> tuple[str | None, tuple[str, ...]]:
    version_file = Path("/proc/driver/nvidia/version")
    driver: str | None = None
    if version_file.exists():
        text = version_file.read_text(errors="replace")
        words = text.split()
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
        driver = next((w for w in words if w[:1].isdigit() and "." in w), "unknown")
    gpus: tuple[str, ...] = ()
    listed = _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader")
    if listed is not None:
        gpus = tuple(line.strip() for line in listed.splitlines() if line.strip())
        if driver is None and gpus:
            driver = "unknown"
    if not gpus and driver is not None:
        # No nvidia-smi: the device nodes still say whether a GPU is there.
        gpus = tuple(
            p.name for p in sorted(Path("/dev").glob("nvidia[0-9]*")) if p.name[6:].isdigit()
        )
    return driver, gpus


def probe_host() -> HostFacts:
    """Gather the facts `detect` needs from this host (imports llama_cpp: about a second)."""
    driver, gpus = _nvidia()
    offload: bool | None = None
    compiled: tuple[str, ...] = ()
    error: str | None = None
    try:
        import llama_cpp

        offload = bool(llama_cpp.llama_supports_gpu_offload())
        info = llama_cpp.llama_print_system_info()
        text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
        # "CPU : SSE3 = 1 | ... | CUDA : ARCHS = 890 | ..." names each compiled backend.
        compiled = tuple(
            part.split(":", 1)[0].strip()
            for part in text.split("|")
            if ":" in part and part.split(":", 1)[0].strip()
        )
    except Exception as e:  # an ImportError or OSError from a broken shared library
        error = f"{type(e).__name__}: {e}"
    return HostFacts(
        system=platform.system(),
        machine=platform.machine(),
        nvidia_driver=driver,
        nvidia_gpus=gpus,
        gpu_offload=offload,
        llama_backends=compiled,
        llama_error=error,
    )


class Memory(TypedDict):
    """This host's memory (POOL-090): RAM from /proc/meminfo (free = MemAvailable), VRAM
    summed over the GPUs nvidia-smi lists (None without nvidia-smi or a GPU)."""

    ram_total_bytes: int
    ram_free_bytes: int
    vram_total_bytes: int | None
    vram_free_bytes: int | None


def parse_meminfo(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo's text."""
    kib = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            kib[key.strip()] = int(words[0])
    total = kib.get("MemTotal", 0)
    return total * 1024, kib.get("MemAvailable", kib.get("MemFree", 0)) * 1024


def parse_nvidia_memory(text: str) -> tuple[int, int] | None:
    """(total, free) bytes over the GPUs of `nvidia-smi --query-gpu=memory.total,memory.free
    --format=csv,noheader,nounits` (MiB per line); None when it lists none."""
    total = free = 0
    seen = False
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            total, free, seen = total + int(parts[0]), free + int(parts[1]), True
    return (total << 20, free << 20) if seen else None


def probe_memory() -> Memory:
    try:
        total, free = parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        total = free = 0
    if total == 0:  # not Linux: the portable part of sysconf
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = page * os.sysconf("SC_PHYS_PAGES")
            free = page * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):
            total = free = 0
    vram: tuple[int, int] | None = None
    queried = _nvidia_smi("--query-gpu=memory.total,memory.free", "--format=csv,noheader,nounits")
    if queried is not None:
        vram = parse_nvidia_memory(queried)
    return Memory(
        ram_total_bytes=total,
        ram_free_bytes=free,
        vram_total_bytes=vram[0] if vram else None,
        vram_free_bytes=vram[1] if vram else None,
    )


class ModelSize(TypedDict):
    """What a replica of a catalog model needs, as its file and GGUF metadata say (POOL-091)."""

    size_bytes: int
    kv_bytes_per_token: int | None
    context_length: int | None


class Report(TypedDict):
    backends: list[Backend]
    host: dict[str, object]
    detected_at: float
    hostname: str
    memory: Memory
    models: dict[str, ModelSize]


def detect_and_save(
    path: Path,
    facts: HostFacts | None = None,
    *,
    memory: Memory | None = None,
    models: dict[str, ModelSize] | None = None,
) -> Report:
    """Detect, write backends.json, and return what was written."""
    facts = facts or probe_host()
    report = Report(
        backends=detect(facts),
        host=asdict(facts),
        detected_at=time.time(),
        hostname=os.uname().nodename,
        memory=memory or probe_memory(),
        models=models or {},
    )
    jsonfile.write_atomic(path, report)
    return report


def find(report_backends: list[Backend], name: str) -> Backend | None:
    return next((b for b in report_backends if b["name"] == name), None)


def _nvidia_smi(*args: str) -> str | None:
    """nvidia-smi's output for `args`; None without nvidia-smi, or when it fails."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None
