"""benchmarks/seed_table.py: one config's seeds pooled from their run folders, on the committed 3% runs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.seed_table import gather, main, seed_rows
from recpie.evaluation import metrics_from_ranks

RUNS = Path(__file__).resolve().parents[1] / "docs" / "results"
SEEDS = [RUNS / "nyc_recpie_3pct_readout_habit", RUNS / "nyc_recpie_3pct_readout_habit_seed1",
         RUNS / "nyc_recpie_3pct_readout_habit_seed2"]


def _diff(cell: str) -> float:
    return float(cell.split()[0])


def test_three_seed_folders_pool_into_one_row_per_difference(capsys):
    seeds = gather(SEEDS)
    assert list(seeds) == [0, 1, 2]
    rows = {row[0]: row for row in seed_rows(seeds, n_boot=100)}
    row = rows["RecPIE minus control, MRR"]
    per_seed = [metrics_from_ranks(s["recpie"], ["mrr"])["mrr"] - metrics_from_ranks(s["control"], ["mrr"])["mrr"]
                for s in seeds.values()]
    assert [_diff(c) for c in row[1:4]] == pytest.approx([round(d, 4) for d in per_seed], abs=1e-4)
    # every seed scored the same samples, so the seed-mean per-sample difference is the mean of the seeds'
    mean = float(np.mean(per_seed))
    assert _diff(row[5]) == pytest.approx(mean, abs=1e-4)
    assert row[4] == f"{mean:+.4f} +- {np.std(per_seed, ddof=1):.4f}"
    low, high = (float(x) for x in row[5].split("[")[1].rstrip("]").split(","))
    assert low < mean < high
    main([str(p) for p in SEEDS] + ["--bootstrap", "50"])
    table = capsys.readouterr().out
    assert "| seed 0 | seed 1 | seed 2 |" in table and "own minus another sample's explanation, MRR" in table


def test_a_seed_twice_or_other_samples_cannot_be_pooled(tmp_path):
    with pytest.raises(SystemExit, match="seed 0 is in both"):
        gather([SEEDS[0], SEEDS[0]])
    moved = tmp_path / "seed1_other_samples"
    moved.mkdir()
    with np.load(SEEDS[1] / "test_ranks_seed1.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["ids"] = arrays["ids"][::-1].copy()
    np.savez(moved / "test_ranks_seed1.npz", **arrays)
    with pytest.raises(SystemExit, match="seed 1 .* scored other test samples"):
        gather([SEEDS[0], moved])
    shutil.rmtree(moved)
    with pytest.raises(SystemExit, match="no test_ranks"):
        main([str(SEEDS[0]), str(moved)])
