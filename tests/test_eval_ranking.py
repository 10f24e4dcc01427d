"""The evaluator against brute-force references, ties included."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recpie.evaluation import metrics_from_ranks, ranks_from_scores, ranks_from_topk
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.export import read_topk_jsonl, topk_from_scores, write_topk_jsonl
from recpie.evaluation.rank_metric import RankMetric
from recpie.evaluation.tables import ci_table, mean_std_table, metrics_table


def brute_rank(row: np.ndarray, target: int) -> float:
    """Expected rank under random tie-breaking, by enumerating the tied block."""
    t = row[target]
    higher = sum(1 for j, v in enumerate(row) if v > t and j != target)
    tied = [j for j, v in enumerate(row) if v == t]
    return float(np.mean([higher + 1 + pos for pos in range(len(tied))]))


def test_ranks_match_brute_force_with_heavy_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(64, 30)).astype(np.float32)  # few distinct values: many ties
    target = rng.integers(0, 30, size=64)
    got = ranks_from_scores(torch.from_numpy(scores), torch.from_numpy(target)).numpy()
    want = np.array([brute_rank(scores[i], target[i]) for i in range(64)])
    np.testing.assert_allclose(got, want)


def test_constant_scorer_ranks_in_the_middle():
    ranks = ranks_from_scores(torch.zeros(3, 101), torch.tensor([0, 50, 100]))
    assert ranks.tolist() == [51.0, 51.0, 51.0]
    assert metrics_from_ranks(ranks)["acc@20"] == 0.0


def test_metrics_from_fractional_ranks():
    m = metrics_from_ranks(np.array([1.0, 2.5, 10.0, 30.0]))
    assert m["acc@1"] == 0.25 and m["acc@5"] == 0.5 and m["acc@10"] == 0.75 and m["acc@20"] == 0.75
    assert m["mrr"] == pytest.approx((1 + 1 / 2.5 + 1 / 10 + 1 / 30) / 4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3.5)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3.5) + 1 / math.log2(11)) / 4)


def test_topk_lists_agree_with_equivalent_scores():
    rng = np.random.default_rng(1)
    num_items, k = 25, 5
    lists = [rng.permutation(num_items)[:k].tolist() for _ in range(40)]
    target = rng.integers(0, num_items, size=40)
    scores = np.zeros((40, num_items))
    for i, items in enumerate(lists):
        scores[i, items] = np.arange(k, 0, -1)  # listed items strictly ordered, the rest tied at 0
    np.testing.assert_allclose(ranks_from_topk(lists, target, num_items),
                               ranks_from_scores(torch.from_numpy(scores), torch.from_numpy(target)).numpy())


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="target ids"):
        ranks_from_scores(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(ValueError, match="repeats"):
        ranks_from_topk([[1, 1]], [1], 5)


def test_rank_metric_dedupes_padded_repeats_and_checks_coverage():
    metric = RankMetric(expected=3)
    metric.update(torch.tensor([2, 0]), torch.tensor([3.0, 1.0]), torch.tensor([[1, 2], [0, 1]]))
    metric.update(torch.tensor([1, 2]), torch.tensor([2.0, 3.0]), torch.tensor([[4, 0], [1, 2]]))
    ids, ranks, topk = metric.compute()
    assert ids.tolist() == [0, 1, 2] and ranks.tolist() == [1.0, 2.0, 3.0]
    assert topk.tolist() == [[0, 1], [4, 0], [1, 2]]
    short = RankMetric(expected=4)
    short.update(torch.tensor([2, 0, 1]), torch.tensor([3.0, 1.0, 2.0]))
    with pytest.raises(RuntimeError, match="missing \\[3\\]"):
        short.compute()
    metric.reset()
    metric.update(torch.tensor([4, 0]), torch.tensor([3.0, 1.5]))  # without top-K lists
    metric.expected = None
    ids, ranks, topk = metric.compute()
    assert ids.tolist() == [0, 4] and ranks.tolist() == [1.5, 3.0] and topk is None
    with pytest.raises(ValueError, match="every update or in none"):
        metric.update(torch.tensor([1]), torch.tensor([1.0]), torch.tensor([[0, 1]]))


def test_topk_jsonl_round_trip(tmp_path):
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    topk = topk_from_scores(scores, 2).numpy()
    path = write_topk_jsonl(tmp_path / "p.jsonl", np.array([5, 6]), topk, targets=np.array([1, 2]),
                            ranks=np.array([1.0, 2.0]))
    assert read_topk_jsonl(path) == {5: [1, 2], 6: [0, 2]}
    (tmp_path / "bad.jsonl").write_text('{"sample_id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_topk_jsonl(tmp_path / "bad.jsonl")


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 50, size=500)
    same = paired_bootstrap_ci(a, a, "mrr")
    assert same.diff == same.low == same.high == 0.0 and not same.excludes_zero
    better = paired_bootstrap_ci(np.maximum(1.0, a - 5), a, "mrr")
    assert better.diff > 0 and better.low > 0 and better.excludes_zero
    noisy = paired_bootstrap_ci(rng.uniform(1, 50, size=500), a, "acc@10")
    assert noisy.low < noisy.diff < noisy.high


def test_paired_bootstrap_over_seeds_averages_per_sample_metrics_first():
    rng = np.random.default_rng(1)
    base = rng.uniform(1, 30, size=400)
    flip = rng.random(400) < 0.5  # two seeds whose per-sample errors cancel: each noisy, their mean not
    seeds = np.stack([np.where(flip, base / 3, base * 3), np.where(flip, base * 3, base / 3)])
    mean = paired_bootstrap_ci(seeds, base, "mrr")
    per_seed = [paired_bootstrap_ci(r, base, "mrr") for r in seeds]
    assert mean.diff == pytest.approx(np.mean([c.diff for c in per_seed]))
    assert mean.diff == pytest.approx((0.5 * (3 / base + 1 / (3 * base)) - 1 / base).mean())
    assert mean.high - mean.low < 0.5 * min(c.high - c.low for c in per_seed)


def test_tables_render_values():
    m = metrics_from_ranks(np.array([1.0, 3.0]))
    assert "| counter | 0.5000 |" in metrics_table({"counter": m}, names=["acc@1"])
    assert "0.5000 +- 0.0000" in mean_std_table({"counter": [m, m]}, names=["acc@1"])
    ci = paired_bootstrap_ci(np.array([1.0, 1.0]), np.array([2.0, 2.0]), "mrr")
    assert "| mrr | 0.5000 | [+0.5000, +0.5000] | * |" in ci_table([ci])
