from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pool_ctl.backends import HostFacts, detect
from tests.pool_ctl.helpers import call

LINUX = HostFacts(
    system="Linux",
    machine="x86_64",
    nvidia_driver=None,
    nvidia_gpus=(),
    gpu_offload=False,
    llama_backends=("CPU",),
)


def by_name(facts: HostFacts) -> dict[str, tuple[bool, str]]:
    return {b["name"]: (b["available"], b["reason"]) for b in detect(facts)}


def test_cpu_only_linux_says_why_the_others_are_missing() -> None:
    found = by_name(LINUX)
    assert found["cpu"][0] is True
    assert found["cuda"] == (False, "no NVIDIA driver found (/proc/driver/nvidia/version missing)")
    assert found["metal"] == (False, "Metal needs macOS, this host runs Linux")


def test_cuda_needs_driver_gpu_and_an_offload_build() -> None:
    driver = replace(LINUX, nvidia_driver="550.54")
    assert "no GPU found" in by_name(driver)["cuda"][1]
    gpu = replace(driver, nvidia_gpus=("NVIDIA H100, 81559 MiB",))
    available, reason = by_name(gpu)["cuda"]
    assert not available and "built without CUDA" in reason and "GGML_CUDA=on" in reason
    # Offload from some other GPU backend (say Vulkan) is not CUDA.
    vulkan = replace(gpu, gpu_offload=True, llama_backends=("CPU", "Vulkan"))
    assert by_name(vulkan)["cuda"][0] is False
    cuda = replace(gpu, gpu_offload=True, llama_backends=("CPU", "CUDA"))
    assert by_name(cuda)["cuda"] == (True, "driver 550.54; NVIDIA H100, 81559 MiB")


def test_metal_needs_apple_silicon_and_offload() -> None:
    intel_mac = replace(LINUX, system="Darwin", machine="x86_64")
    assert "Apple silicon" in by_name(intel_mac)["metal"][1]
    arm_mac = replace(intel_mac, machine="arm64")
    assert "built without Metal" in by_name(arm_mac)["metal"][1]
    metal = replace(arm_mac, gpu_offload=True, llama_backends=("CPU", "Metal"))
    assert by_name(metal)["metal"][0] is True
    assert by_name(metal)["cuda"] == (False, "CUDA is not supported on Darwin")


def test_a_broken_llama_cpp_makes_nothing_available() -> None:
    broken = replace(LINUX, gpu_offload=None, llama_error="OSError: libllama.so: bad ELF")
    assert all(not ok for ok, _ in by_name(broken).values())
    assert "bad ELF" in by_name(broken)["cpu"][1]


def test_backends_command_writes_backends_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    r = call(["--home", str(home), "backends", "--json"], capsys)
    assert r.code == 0, r.err
    report = r.json()
    assert json.loads((home / "backends.json").read_text()) == report
    names = [b["name"] for b in report["backends"]]
    assert names == ["cpu", "cuda", "metal"]
    assert report["backends"][0]["available"] is True
    assert all(b["reason"] for b in report["backends"])
    human = call(["--home", str(home), "backends"], capsys)
    assert human.out.splitlines()[0].split() == ["BACKEND", "AVAILABLE", "WHY"]
    assert human.out.splitlines()[1].startswith("cpu")
