"""benchmarks/compare_runs.py: a run against its twin, paired by test sample, on the committed run files."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.compare_runs import compare, main, run_ranks
from recpie.evaluation import metrics_from_ranks

RUNS = Path(__file__).resolve().parents[1] / "docs" / "results"
A, B = RUNS / "nyc_recpie_3pct_readout_fixed_backbone", RUNS / "nyc_recpie_3pct_readout"


def test_a_run_against_its_twin_is_paired_by_sample(capsys):
    a, b = run_ranks(A)[0], run_ranks(B)[0]
    rows = {row[0]: row for row in compare(a, b, ["backbone", "recpie"], n_boot=200)}
    # the same warm backbone in both runs: a zero difference with a zero-width interval
    assert rows["backbone"][3].startswith("+0.0000 [+0.0000, +0.0000]")
    diff = metrics_from_ranks(a["recpie"], ["mrr"])["mrr"] - metrics_from_ranks(b["recpie"], ["mrr"])["mrr"]
    assert rows["recpie"][3].startswith(f"{diff:+.4f}")
    main([str(A), str(B), "--variants", "recpie", "--bootstrap", "100"])
    table = capsys.readouterr().out
    assert "| 0 | recpie |" in table and "backbone" not in table.split("\n", 2)[2]


def test_runs_on_different_samples_are_refused(tmp_path):
    shutil.copy(B / "test_ranks_seed0.npz", tmp_path / "test_ranks_seed0.npz")
    with np.load(tmp_path / "test_ranks_seed0.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["ids"] = arrays["ids"][::-1].copy()
    np.savez(tmp_path / "test_ranks_seed0.npz", **arrays)
    with pytest.raises(SystemExit, match="different test samples"):
        main([str(A), str(tmp_path)])
    with pytest.raises(SystemExit, match="no test_ranks"):
        main([str(A), str(tmp_path / "missing")])


def test_other_seeds_join_and_pool_to_the_seed_mean(capsys):
    """--also adds a seed's pair of folders; the pooled row is the seeds' mean MRR difference (here seed 2
    compared with itself: exactly 0, so the pool is half of seed 0's)."""
    ppo, twin = RUNS / "nyc_recpie_3pct_readout_habit_ppo_head_rr", RUNS / "nyc_recpie_3pct_readout_habit"
    seed2 = RUNS / "nyc_recpie_3pct_readout_habit_seed2"
    main([str(ppo), str(twin), "--also", str(seed2), str(seed2), "--variants", "recpie", "--bootstrap", "100"])
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|")[5].strip()
            for line in capsys.readouterr().out.splitlines()[2:]}
    assert {seed for seed, _ in rows} == {"0", "2", "0,2 pooled"}
    mrr = {(name, variant): metrics_from_ranks(run_ranks(run)[0][variant], ["mrr"])["mrr"]
           for name, run in (("ppo", ppo), ("twin", twin)) for variant in ("recpie", "other")}
    d0 = mrr["ppo", "recpie"] - mrr["twin", "recpie"]
    assert rows["2", "recpie"].startswith("+0.0000 [+0.0000, +0.0000]")
    assert rows["0,2 pooled", "recpie"].startswith(f"{d0 / 2:+.4f}")
    # the content part: (own minus another's) in the PPO run minus the same in its twin
    content = d0 - (mrr["ppo", "other"] - mrr["twin", "other"])
    assert rows["0", "recpie minus other"].startswith(f"{content:+.4f}")
    assert rows["0,2 pooled", "recpie minus other"].startswith(f"{content / 2:+.4f}")
    with pytest.raises(SystemExit, match="pass one run per seed"):
        main([str(ppo), str(twin), "--also", str(ppo), str(twin)])
