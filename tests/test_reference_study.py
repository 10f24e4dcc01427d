"""A recpie run against the data-efficiency study's saved points: the checks before training, the tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recpie.config import load_experiment
from recpie.errors import ConfigError
from recpie.evaluation.bootstrap import paired_bootstrap_ci, paired_values_ci
from recpie.evaluation.ranking import per_sample_metric
from recpie.reporting.reference_study import check_reference_study, reference_lines
from recpie.reporting.study_points import COUNTERS, point_name, read_point, write_point

BOOT = dict(n_boot=200, level=0.95, seed=0)
REPO = Path(__file__).resolve().parents[1]


def _study(tmp_path):
    """Four test samples; the bound's reader is saved in another sample order (bound_ids)."""
    write_point(tmp_path, point_name(0.03, 0), {"reader_val_fitted": 7, "facts_version": 3},
                {"ranks": np.array([2.0, 1, 3, 9]), "bound_ids": np.array([3, 2, 1, 0]),
                 "bound_reader": np.array([9.0, 1, 1, 1])})
    write_point(tmp_path, point_name(1.0, 0), {"reader_val_fitted": 7},
                {"ranks": np.array([1.0, 1, 2, 4]), "bound_ids": np.arange(4), "bound_reader": np.ones(4)})
    write_point(tmp_path, COUNTERS, ["counter", "time-aware counter"],
                {"line0": np.ones(4), "line1": np.array([1.0, 2, 2, 2])})


def test_points_round_trip_and_a_missing_point_is_none(tmp_path):
    _study(tmp_path)
    meta, arrays = read_point(tmp_path, point_name(0.03, 0))
    assert meta == {"reader_val_fitted": 7, "facts_version": 3} and arrays["bound_reader"].tolist() == [9, 1, 1, 1]
    assert read_point(tmp_path, point_name(0.12, 0)) is None


def test_the_study_is_checked_before_training(tmp_path):
    _study(tmp_path)
    check_reference_study(str(tmp_path), 0, 0.03, [0])
    check_reference_study("", 10, 0.03, [0])  # no comparison asked: nothing to check
    missing = r"reference_study=.*missing .*f0.12_seed0.json, .*f0.12_seed1.json;"  # 100% points: optional
    with pytest.raises(ConfigError, match=missing):
        check_reference_study(str(tmp_path), 0, 0.12, [0, 1])
    with pytest.raises(ConfigError, match="recpie.test_samples=0 \\(it is 96\\)"):
        check_reference_study(str(tmp_path), 96, 0.03, [0])
    write_point(tmp_path, point_name(0.03, 0), {}, {"ranks": np.ones(4), "bound_ids": np.arange(2),
                                                    "bound_reader": np.ones(2)})
    with pytest.raises(ConfigError, match="read on 2 of 4 test samples; .*bound_test_samples=0"):
        check_reference_study(str(tmp_path), 0, 0.03, [0])


def test_lines_compare_on_the_same_samples(tmp_path):
    _study(tmp_path)
    ids = np.array([0, 1, 2, 3])
    ranks = np.array([1.0, 1, 2, 4])  # RecPIE: the 100% backbone's ranks exactly
    liked = np.array([1.0, 0.5, 0, 0])
    md = "\n".join(reference_lines(tmp_path, 0.03, 0, ids, ranks, liked, BOOT))
    assert "| backbone, 100% of the targets (seed 0) | +0.0000 [+0.0000, +0.0000] |" in md
    assert "| time-aware counter | +0.0625 " in md  # MRR (1+1+.5+.25)/4 - (1+.5+.5+.5)/4
    reader_mrr = (1 + 1 + 1 + 1 / 9) / 4  # the reader's ranks by sample id: 1, 1, 1, 9 (saved reversed)
    reader = "facts reader of that backbone's top K (the study's bound, prompt facts version 3)"
    assert f"| {reader} | {(2.75 / 4 - reader_mrr):+.4f}" in md
    assert "| \"may like\" names the target | 0.3750 |  |" in md
    assert f"| top-1 of the {reader} | 0.7500 | -0.3750 " in md
    assert "| top-1 of the backbone, 0.03 of the targets (seed 0) | 0.2500 | +0.1250 " in md
    assert "fitted on 7 val samples" in md
    assert "may like" not in "\n".join(reference_lines(tmp_path, 0.03, 0, ids, ranks, None, BOOT))
    # a study without the 100% point of this seed (its fits still running): that row is left out, and said so
    for suffix in (".json", ".npz"):
        (tmp_path / "points" / f"{point_name(1.0, 0)}{suffix}").unlink()
    check_reference_study(str(tmp_path), 0, 0.03, [0])
    md = "\n".join(reference_lines(tmp_path, 0.03, 0, ids, ranks, liked, BOOT))
    assert "100% of the targets (seed 0) |" not in md and "no 100% point of seed 0 yet" in md
    assert "| top-1 of the backbone, 0.03 of the targets (seed 0) | 0.2500 | +0.1250 " in md


def test_paired_values_ci_is_the_rank_metrics_ci_on_its_values():
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 4, 50).astype(float), rng.integers(1, 4, 50).astype(float)
    by_ranks = paired_bootstrap_ci(a, b, "acc@1", **BOOT)
    by_values = paired_values_ci(per_sample_metric(a, "acc@1"), per_sample_metric(b, "acc@1"), "acc@1", **BOOT)
    assert by_values == by_ranks
    with pytest.raises(ValueError, match="two equal, non-empty arrays"):
        paired_values_ci(np.ones(3), np.ones(4), "x")


@pytest.mark.parametrize("name", ["nyc_recpie_3pct", "nyc_recpie_12pct", "nyc_recpie_3pct_frozen",
                                  "nyc_recpie_12pct_frozen"])
def test_the_low_fraction_configs_name_a_committed_tuned_study_that_holds_their_points(name):
    cfg = load_experiment(name, [])
    study = REPO / cfg.recpie.reference_study
    assert "tuned" in study.name
    check_reference_study(str(study), cfg.recpie.test_samples, cfg.data.train_fraction, [0])
