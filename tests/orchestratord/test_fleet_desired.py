"""The desired state: its file and body format, and validation (specs/fleet.md FLT-001..FLT-005)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestratord.fleet.desired import (
    FleetSpec,
    Scaling,
    Source,
    load_fleet_file,
    parse_fleet,
    parse_source,
)
from shared.problem import InvalidParams

TOML = """
[scaling]
target_ttft_ms = 1500
cooldown_s = 30

[models.smollm2]
source = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q8_0"
pools = ["gpu-a", "gpu-b"]
slots = 2
ctx = 4096
min_replicas = 1
max_replicas = 3
warm_replicas = 1

[models.tiny]
source = "file:/srv/models/tiny.gguf"
pools = ["cpu-a"]
"""


def test_flt_001_toml_file_parses_to_the_spec(tmp_path: Path) -> None:
    """FLT-001, FLT-003: a TOML file gives every field; unset fields take their defaults."""
    path = tmp_path / "fleet.toml"
    path.write_text(TOML)
    spec = load_fleet_file(path)
    assert spec.scaling == Scaling(target_ttft_ms=1500, cooldown_s=30)
    smol = spec.model("smollm2")
    assert smol is not None
    assert smol.source == Source("hf", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q8_0")
    assert (smol.pools, smol.slots, smol.ctx) == (("gpu-a", "gpu-b"), 2, 4096)
    assert (smol.min_replicas, smol.max_replicas, smol.warm_replicas) == (1, 3, 1)
    tiny = spec.model("tiny")
    assert tiny is not None
    assert (tiny.backend, tiny.slots, tiny.min_replicas, tiny.max_replicas) == ("cpu", 1, 1, 1)


def test_flt_001_json_round_trips(tmp_path: Path) -> None:
    """FLT-001, FLT-004: to_json() is what PUT /v2/fleet takes; a .json file reads the same."""
    path = tmp_path / "fleet.toml"
    path.write_text(TOML)
    spec = load_fleet_file(path)
    assert parse_fleet(spec.to_json()) == spec
    as_json = tmp_path / "fleet.json"

    as_json.write_text(json.dumps(spec.to_json()))
    assert load_fleet_file(as_json) == spec


def test_flt_001_empty_fleet_is_valid() -> None:
    """FLT-001: no models is a valid desired state (nothing is managed)."""
    assert parse_fleet({}) == FleetSpec()


def test_flt_002_every_problem_is_reported_at_once() -> None:
    """FLT-002: one InvalidParams names each bad field with its path."""
    body: dict[str, Any] = {
        "models": {
            "bad id!": {"source": "hf:a/b:q4", "pools": ["p"]},
            "m": {
                "source": "s3://x",
                "pools": [],
                "slots": 0,
                "min_replicas": 3,
                "max_replicas": 2,
                "colour": "red",
            },
        },
        "scaling": {"cooldown_s": -1},
        "extra": 1,
    }
    with pytest.raises(InvalidParams) as info:
        parse_fleet(body)
    fields = {e["field"] for e in info.value.errors}
    assert fields >= {
        "extra",
        "scaling.cooldown_s",
        "models.bad id!",
        "models.m.source",
        "models.m.pools",
        "models.m.slots",
        "models.m.min_replicas",
        "models.m.colour",
    }
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hf:repo-only", "Hugging Face"),
        ("hf:../x:q4", "Hugging Face"),
        ("file:relative.gguf", "absolute"),
        ("file:/x.bin", "absolute"),
        ("catalog:bad id", "catalog id"),
        ("ftp:x", "unknown source kind"),
        ("nothing", "must be"),
    ],
)
def test_flt_005_bad_sources_are_refused(text: str, message: str) -> None:
    """FLT-005: a source is hf:, file: or catalog:, each checked for its form."""
    with pytest.raises(ValueError, match=message):
        parse_source(text)


def test_flt_005_good_sources() -> None:
    """FLT-005: the three kinds, kept verbatim after the kind."""
    assert parse_source("hf:org/repo@main:model.gguf") == Source("hf", "org/repo@main:model.gguf")
    assert str(parse_source("file:/m/x.gguf")) == "file:/m/x.gguf"
    assert parse_source("catalog:llorch-tiny") == Source("catalog", "llorch-tiny")


def test_flt_003_unreadable_or_unparsable_file(tmp_path: Path) -> None:
    """FLT-003: a missing or broken file is one clear InvalidParams naming the file."""
    with pytest.raises(InvalidParams, match="cannot read"):
        load_fleet_file(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[models.x\n")
    with pytest.raises(InvalidParams, match="does not parse"):
        load_fleet_file(broken)
