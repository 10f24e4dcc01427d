"""The data-efficiency recipe end to end on NYC with a tiny backbone: table, JSON, plot, resume from points."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_rec_recipe import tiny_recipe_config

from recpie.recipes.data_efficiency import run


@pytest.mark.slow
def test_recipe_writes_the_curve_and_resumes_from_its_points(data_root, tmp_path):
    cfg = tiny_recipe_config(data_root, "efficiency.fractions=[0.03,1.0]", "efficiency.bound_val_samples=150",
                             "efficiency.bound_test_samples=100")
    results = run(cfg, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "| 0.03 | 2,395 of 81,422 | 1 |" in md and "| 1 | 81,422 of 81,422 | 1 |" in md
    assert "prompt-information bound" in md and "time-aware counter" in md
    assert (tmp_path / "data_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    low, high = saved["fractions"]
    assert low["kept"]["train_steps_kept"] == 2395 and high["kept"]["fraction"] == 1.0
    assert low["markov"]["mrr"] < high["markov"]["mrr"]  # Markov counts the kept steps only
    assert low["bound_test_samples"] == 100 and saved["samples"]["test"] == 2096
    assert saved["lines"]["counter (decay 0.99)"]["mrr"] == pytest.approx(0.3974, abs=0.002)
    # a point whose bound was read with older prompt facts gets it recomputed from its backbone's checkpoint
    point = tmp_path / "points" / "f1_seed0.json"
    meta = json.loads(point.read_text())
    point.write_text(json.dumps({k: v for k, v in meta.items() if k != "facts_version"}))
    with np.load(tmp_path / "points" / "f1_seed0.npz") as z:
        np.savez(tmp_path / "points" / "f1_seed0.npz", **{**dict(z), "bound_reader": np.ones(100)})
    again = run(cfg, tmp_path)
    assert again["fractions"][1]["bound"] == results["fractions"][1]["bound"]
    assert json.loads(point.read_text()) == meta  # the fit's own record is kept
    # the points hold everything: without the trained models the study reports the same numbers
    for folder in ("f0.03", "f1"):
        shutil.rmtree(tmp_path / folder)
    again = run(cfg, tmp_path)
    assert again["fractions"][0]["backbone"] == results["fractions"][0]["backbone"]
    assert again["fractions"][1]["bound"] == results["fractions"][1]["bound"]
    assert not (tmp_path / "f1").exists()
