"""Named experiment configs: every shipped one resolves; bad keys fail naming the file or override."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recpie.config import Recipe, load_experiment
from recpie.config_loading import ConfigError, available_experiments

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", available_experiments())
def test_every_shipped_experiment_resolves(name):
    cfg = load_experiment(name)
    assert cfg.name == name
    assert isinstance(cfg.run.recipe, Recipe)


def test_override_and_extends(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: nyc_baselines\ndata:\n  max_len: 20\n")
    cfg = load_experiment(str(child), ["run.seeds=[5]", "backbone.hidden_size=32"])
    assert cfg.data.max_len == 20 and list(cfg.run.seeds) == [5] and cfg.backbone.hidden_size == 32
    assert cfg.data.source == "foursquare"  # inherited from nyc_baselines


def test_misspelt_key_in_a_file_names_the_file_and_the_allowed_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  sorce: gowalla\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*data\.sorce.*Allowed keys here: source"):
        load_experiment(str(bad))


def test_bad_override_value_and_unknown_experiment():
    with pytest.raises(ConfigError, match=r"data\.max_len=abc"):
        load_experiment("nyc_baselines", ["data.max_len=abc"])
    with pytest.raises(ConfigError, match="no experiment named 'nope'.*available: "):
        load_experiment("nope")
    with pytest.raises(ConfigError, match="not of the form"):
        load_experiment("nyc_baselines", ["data.max_len"])


def test_extends_cycle_is_reported(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\n")
    b.write_text(f"extends: {a}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_experiment(str(a))


def test_print_config_runs_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "recpie", "run", "nyc_baselines", "--print-config",
                          f"run.output_dir={tmp_path}"], capture_output=True, text=True, cwd=REPO, check=True)
    assert "recipe: baselines" in out.stdout
    assert not any(tmp_path.iterdir())
