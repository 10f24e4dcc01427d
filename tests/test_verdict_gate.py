"""benchmarks/verdict_information.py's gate: agreement with the teacher and the hit rate against the
recommender's top-1, on a hand-counted case."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.verdict_information import gate


def test_the_gate_counts_agreement_and_hits_by_hand():
    candidates = np.array([[10, 11, 12], [20, 21, 22], [30, 31, 32], [40, 41, 42]])
    target = np.array([11, 20, 99, 42])  # the third sample's target is not a candidate
    liked = np.zeros((4, 3))
    liked[0, 1] = 1.0  # names the target (the teacher's top-1)
    liked[1, 1] = 1.0  # names another candidate than the target (the recommender's top-1)
    liked[2, 0] = liked[2, 2] = 0.5  # two candidates sharing a label; the target is none of them
    liked[3, 2] = 1.0  # names the target; the teacher chose the top-1
    teacher_top = np.array([1, 0, 0, 0])
    g = gate(liked, candidates, target, teacher_top, dict(n_boot=200, level=0.95, seed=0))
    assert g["agreement"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert g["hit"] == pytest.approx(2 / 4) and g["top1_hit"] == pytest.approx(1 / 4)
    assert g["teacher_hit"] == pytest.approx(2 / 4) and g["parsed"] == 1.0
    assert g["hit_minus_top1"].diff == pytest.approx(1 / 4)
    # the content a relay carries: only sample 0's teacher departs from the recommender's top-1, and it is
    # followed there; "may like" is off the first candidate on samples 0, 1, 3 and half of 2
    assert g["teacher_off_top1"] == pytest.approx(1 / 4) and g["agreement_off_top1"] == pytest.approx(1.0)
    assert g["like_off_top1"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
