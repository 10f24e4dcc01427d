"""The verdict diagnostics against hand-computed counts: what "may like" names, per candidate rank."""
from __future__ import annotations

import pytest
import torch

from recpie.evaluation.verdicts import verdict_counts, verdict_summary, verdict_table


def test_verdict_counts_and_rates():
    liked = torch.tensor([[1, 0, 0], [0, 0.5, 0.5], [0, 0, 0], [0, 1, 0]])  # C: unparseable
    candidates = torch.tensor([[10, 11, 12], [20, 21, 22], [30, 31, 32], [40, 41, 42]])
    target = torch.tensor([10, 22, 30, 99])  # D's target is no candidate
    counts = sum(verdict_counts(liked[s], candidates[s], target[s]) for s in (slice(0, 2), slice(2, 4)))  # batches
    assert counts.tolist() == [3, 1, 1.5, 0.5, 1, 0, 0.5, 1, 0, 1]
    v = verdict_summary(counts)
    assert v["parsed"] == 3 and v["target_among_candidates"] == 2
    assert v["like_is_top1"] == pytest.approx(1 / 3) and v["like_is_target"] == pytest.approx(0.75)
    assert v["top1_is_target"] == pytest.approx(0.5)
    assert v["target_there_when_named"] == pytest.approx([1, 0, 1])
    assert v["target_there"] == pytest.approx([1 / 3, 0, 1 / 3])
    table = verdict_table(v)
    assert table[1] == "|---|---|---|---|"
    assert table[2] == "| explanations naming it (shared labels split) | 1 | 1.5 | 0.5 |"


def test_liked_target_share_per_sample():
    """The per-sample hit behind like_is_target: its sum over samples is the summary's numerator."""
    from recpie.evaluation.verdicts import liked_target_share

    liked = torch.tensor([[1, 0, 0], [0, 0.5, 0.5], [0, 0, 0], [0, 1, 0]])
    candidates = torch.tensor([[10, 11, 12], [20, 21, 22], [30, 31, 32], [40, 41, 42]])
    target = torch.tensor([10, 22, 30, 99])
    share = liked_target_share(liked, candidates, target)
    assert share.tolist() == [1, 0.5, 0, 0]
    v = verdict_summary(verdict_counts(liked, candidates, target))
    assert share.sum().item() == pytest.approx(v["like_is_target"] * v["target_among_candidates"])


def test_verdict_pairs_read_the_encoders_flat_layout():
    """What the verdict encoder flattens, every reader (fusion, counts, saved verdicts) reads back the same."""
    from recpie.evaluation.verdicts import verdict_pairs
    from recpie.explainer.encoder import VerdictEncoder

    z = VerdictEncoder(3)(["may like: Bar / may not like: Gym"], [["Gym", "Bar", "Park"]])
    assert verdict_pairs(z, 3).tolist() == [[[0, 1], [1, 0], [0, 0]]]
    assert verdict_pairs(z[:, None], 3).tolist() == verdict_pairs(z, 3).tolist()  # the store's [n, 1, 2K]


def test_departure_precision_against_hand_counts():
    """Departures of "may like" from candidate 1, split by the teacher's top-1, each against candidate 1 on
    the same samples; a label shared with candidate 1 and an unparsed text are no departure."""
    from recpie.evaluation.verdicts import departure_precision

    liked = torch.tensor([[0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0.5, 0.5, 0], [0, 0, 0]])
    candidates = torch.arange(18).view(6, 3)
    target = torch.tensor([1, 3, 6, 9, 12, 16])  # the named one / candidate 1 x 4 / none of them
    teacher_top = torch.tensor([1, 1, 1, 2, 1, 2])
    p = departure_precision(liked, candidates, target, teacher_top)
    assert p["explainer departs, with the teacher"] == {"samples": 2, "named": 0.5, "first": 0.5}
    assert p["explainer departs, not with the teacher"] == {"samples": 1, "named": 0.0, "first": 1.0}
    teacher = p["teacher departs (its top-1)"]
    assert teacher["samples"] == 6 and teacher["named"] == pytest.approx(1 / 6)  # row 0's
    assert teacher["first"] == pytest.approx(4 / 6)  # rows 1-4
