"""llorch-pool's settings: read once into a frozen value, without touching the file system."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pool_ctl.settings import Settings
from tests.pool_ctl.helpers import call


def test_settings_are_a_frozen_value_built_without_io(tmp_path: Path) -> None:
    """POOL-002: the home, debug, HF_ENDPOINT and HF_TOKEN land in one frozen value; building it
    (and naming its files) creates nothing."""
    home = tmp_path / "not" / "yet" / "home"
    env = {"HF_ENDPOINT": "http://mirror.example/", "HF_TOKEN": "hf_abc"}
    settings = Settings.build(home, debug=True, env=env)
    assert settings == Settings(
        home=home, hf_endpoint="http://mirror.example", hf_token="hf_abc", debug=True
    )
    layout = settings.layout
    named = [
        layout.models,
        layout.catalog,
        layout.backends,
        layout.worker_record("w"),
        layout.locks,
    ]
    assert all(p.is_relative_to(home) for p in named)
    assert list(tmp_path.iterdir()) == []  # nothing was created
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.home = tmp_path  # type: ignore[misc]
    default = Settings.build(None, env={"HF_ENDPOINT": "", "HF_TOKEN": ""})
    assert default == Settings(home=Path("~/.local/share/llorch").expanduser())


def test_the_cli_takes_the_home_from_the_flag_or_llorch_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POOL-002: `--home DIR` beats `LLORCH_HOME`; commands that only read create no directory,
    a command that writes creates what it needs."""
    env_home, flag_home = tmp_path / "env-home", tmp_path / "flag-home"
    monkeypatch.setenv("LLORCH_HOME", str(env_home))
    assert call(["models", "list", "--json"], capsys).json() == {"models": []}
    assert call(["worker", "list", "--json"], capsys).json() == {"workers": []}
    assert call(["--home", str(flag_home), "models", "list", "--json"], capsys).code == 0
    assert list(tmp_path.iterdir()) == []
    assert call(["backends", "--json"], capsys).code == 0
    assert (env_home / "backends.json").is_file()
    assert call(["--home", str(flag_home), "backends", "--json"], capsys).code == 0
    assert (flag_home / "backends.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env-home", "flag-home"]
