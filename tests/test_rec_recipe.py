"""The baselines recipe end to end on NYC with a tiny backbone: tables, JSON, predictions, logs."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from recpie.config import ExperimentConfig
from recpie.recipes.baselines import run


def tiny_recipe_config(data_root, *overrides: str):
    """A recipe config shrunk to seconds: a tiny backbone, one short epoch, one counter setting."""
    return OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.from_dotlist([
        f"data.data_root={data_root}", "name=tiny", "data.max_len=8", "backbone.hidden_size=16",
        "backbone.num_layers=1", "backbone.num_heads=1", "run.fast=true", "train.fast_max_epochs=1",
        "train.fast_limit_batches=0.02", "trainer.accelerator=cpu", "baselines.decay_grid=[0.99]",
        "baselines.bandwidth_grid_h=[2.0]", "eval.bootstrap_samples=200", *overrides]))


@pytest.mark.slow
def test_recipe_writes_results(data_root, tmp_path):
    cfg = tiny_recipe_config(data_root)
    results = run(cfg, tmp_path)
    md = (tmp_path / "results.md").read_text()
    for section in ("mean +- std", "Paired bootstrap", "revisit", "new POI", "train check-ins"):
        assert section in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["samples"] == {"train": 67317, "val": 2129, "test": 2096}
    assert saved["test"]["counter (decay 0.99)"][0]["mrr"] == pytest.approx(0.3974, abs=0.002)
    assert len(results["bootstrap"][0]) == 3
    assert (tmp_path / "tb" / "backbone_seed0" / "test_topk.jsonl").is_file()
    assert len(list((tmp_path / "predictions").glob("*.jsonl"))) == 5
    assert list((tmp_path / "tb" / "counters").glob("events.out.tfevents*"))
    assert (tmp_path / "test_metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
