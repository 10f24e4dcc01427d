"""The data-efficiency recipe end to end on NYC with a tiny backbone: table, JSON, plot, resume from points."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
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
    # a bound of prompts that state the recommender's score is another facts version: recomputed, never mixed
    scored = run(OmegaConf.merge(cfg, {"explainer": {"show_scores": True}}), tmp_path)
    assert json.loads(point.read_text())["facts_version"] == "3+scores"
    assert scored["fractions"][1]["backbone"] == results["fractions"][1]["backbone"]
    assert run(cfg, tmp_path)["fractions"][1]["bound"] == results["fractions"][1]["bound"]
    assert json.loads(point.read_text()) == meta
    # the points hold everything: without the trained models the study reports the same numbers
    for folder in ("f0.03", "f1"):
        shutil.rmtree(tmp_path / folder)
    again = run(cfg, tmp_path)
    assert again["fractions"][0]["backbone"] == results["fractions"][0]["backbone"]
    assert again["fractions"][1]["bound"] == results["fractions"][1]["bound"]
    assert not (tmp_path / "f1").exists()


@pytest.mark.slow
def test_the_search_picks_by_val_mrr_and_a_finished_study_trains_nothing(data_root, tmp_path):
    settings = ["train.lr=2e-3", "train.lr=1e-12 train.weight_decay=0"]  # the second never moves its weights
    cfg = tiny_recipe_config(data_root, "efficiency.fractions=[0.03]", "efficiency.bound_val_samples=150",
                             "efficiency.bound_test_samples=100", f"efficiency.search={settings}")
    results = run(cfg, tmp_path)
    row = results["fractions"][0]
    trials = {t["setting"]: t for t in row["search"]}
    assert set(trials) == set(settings)
    assert row["setting"] == max(settings, key=lambda s: trials[s]["best_val_mrr"])
    point = json.loads((tmp_path / "points" / "f0.03_seed0.json").read_text())
    assert point["setting"] == row["setting"] and point["best_val_mrr"] == trials[row["setting"]]["best_val_mrr"]
    md = (tmp_path / "results.md").read_text()
    assert "## The backbone's search per fraction" in md and f"**`{row['setting']}`**" in md
    # run again: no fit trains, no checkpoint is written, the same report byte for byte
    checkpoints = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.ckpt")}
    assert len(checkpoints) >= 4  # best and last of each setting's seed 0: the point reused the chosen fit
    run(cfg, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.ckpt")} == checkpoints
    assert (tmp_path / "results.md").read_text() == md
    # without the points, the study recomputes them from the finished fits, still training nothing
    shutil.rmtree(tmp_path / "points")
    again = run(cfg, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.ckpt")} == checkpoints
    assert again["fractions"][0]["backbone"] == row["backbone"]
    assert (tmp_path / "results.md").read_text() == md
    # a raised budget (train.max_epochs; here its run.fast twin) reopens every fit that ended at the old cap:
    # the trials and the point train on from last.ckpt and are computed again, then stay finished
    longer = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["train.fast_max_epochs=2"]))
    more = run(longer, tmp_path)
    assert {t["epochs"] for t in more["fractions"][0]["search"]} == {2}
    point = json.loads((tmp_path / "points" / "f0.03_seed0.json").read_text())
    assert point["epochs"] == 2 and point["setting"] == more["fractions"][0]["setting"]
    checkpoints = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.ckpt")}
    md = (tmp_path / "results.md").read_text()
    run(longer, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.ckpt")} == checkpoints
    assert (tmp_path / "results.md").read_text() == md
