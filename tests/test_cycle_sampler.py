"""The joint phase's row sampler on real NYC train samples: a plain seeded pass, the refreshed samples,
and pool draws bounded by recpie.explained_draws; distinct ranks under DDP; the same rows on resume."""
from __future__ import annotations

import pytest
import torch

from recpie.models.cycle_sampler import CycleSampler, explainable_train_ids


def sampler(nyc_data, share=0.5, draws=2.0, budget=16, per_rank=640, rank=0, world=1):
    n = len(nyc_data.splits["train"])
    return CycleSampler(n, per_rank, 7, explainable_train_ids(nyc_data), budget, share, draws, rank, world)


def extra_draws(s: CycleSampler, epoch: int, rank: int) -> torch.Tensor:
    """The ids placed into the plain pass (the replaced positions' new ids)."""
    plain, mixed = s.plain_pass(epoch, rank), s.indices_for_epoch(epoch, rank)
    return mixed[mixed != plain]


def test_no_share_is_the_plain_pass_and_refreshed_are_its_first_explainable(nyc_data):
    s = sampler(nyc_data, share=0.0)
    order = s.indices_for_epoch(1)
    assert torch.equal(order, s.plain_pass(1, 0)) and len(order) == len(s) == 640
    assert len(set(order.tolist())) == 640, "one pass: no repeats while it is shorter than the data"
    refreshed = s.refreshed(1, 0)
    explainable = set(explainable_train_ids(nyc_data).tolist())
    assert len(refreshed) == 16 and set(refreshed.tolist()) <= explainable
    assert refreshed.tolist() == [i for i in order.tolist() if i in explainable][:16]
    assert torch.equal(s.pool(1), torch.unique(torch.cat([s.refreshed(0, 0), refreshed])))


def test_small_pool_bounds_the_draws(nyc_data):
    s = sampler(nyc_data, share=0.5, draws=2.0)
    for epoch, pool_size in ((0, 16), (1, 32)):
        pool = s.pool(epoch)
        assert len(pool) == pool_size
        assert s.explained_rows(len(pool)) == 2 * pool_size  # not 0.5 x 640 = 320: the bound binds
        placed = extra_draws(s, epoch, 0)
        assert set(placed.tolist()) <= set(pool.tolist())
        # positions whose plain id happened to be the drawn one look unchanged: at most that many missing
        assert 2 * pool_size - 2 <= len(placed) <= 2 * pool_size
        assert torch.bincount(placed).max() <= 2


def test_large_pool_gives_the_share(nyc_data):
    s = sampler(nyc_data, share=0.25, draws=2.0, budget=400)
    assert s.explained_rows(len(s.pool(0))) == 160  # 0.25 x 640 < 2 x 400
    assert torch.bincount(extra_draws(s, 0, 0)).max() == 1


def test_ranks_are_disjoint_and_share_the_draw_bound(nyc_data):
    ranks = [sampler(nyc_data, rank=r, world=2) for r in (0, 1)]
    plain = [s.plain_pass(0, s.rank) for s in ranks]
    assert not set(plain[0].tolist()) & set(plain[1].tolist())
    assert not set(ranks[0].refreshed(0, 0).tolist()) & set(ranks[0].refreshed(0, 1).tolist())
    assert len(ranks[0].pool(0)) == 32 and torch.equal(ranks[0].pool(0), ranks[1].pool(0))
    placed = torch.cat([extra_draws(s, 0, s.rank) for s in ranks])
    assert torch.bincount(placed).max() <= 2, "the bound holds over all ranks together"
    assert ranks[0].indices_for_epoch(0, 1).tolist() == ranks[1].indices_for_epoch(0).tolist()


def test_same_rows_on_resume_and_bad_values(nyc_data):
    a, b = sampler(nyc_data), sampler(nyc_data)
    b.set_epoch(3)
    assert list(b) == a.indices_for_epoch(3).tolist()
    assert a.indices_for_epoch(2).tolist() != a.indices_for_epoch(3).tolist()
    with pytest.raises(ValueError, match="recpie.explained_share"):
        sampler(nyc_data, share=1.5)
    with pytest.raises(ValueError, match="recpie.explained_draws"):
        sampler(nyc_data, draws=-1)


def test_hindsight_warmup_samples_are_held_out_of_everything_else(nyc_data):
    """Hindsight targets read the answer: their samples must never be refreshed, rolled out or fused."""
    from recpie.models.cycle_sampler import warmup_and_fusion_ids

    every = explainable_train_ids(nyc_data)
    sft, fused = warmup_and_fusion_ids(nyc_data, "hindsight", 0.25, seed=3)
    assert len(set(sft.tolist()) & set(fused.tolist())) == 0
    assert sorted(sft.tolist() + fused.tolist()) == every.tolist()
    assert abs(len(sft) - 0.25 * len(every)) <= 1
    assert torch.equal(warmup_and_fusion_ids(nyc_data, "hindsight", 0.25, seed=3)[0], sft)  # seeded
    assert not torch.equal(warmup_and_fusion_ids(nyc_data, "hindsight", 0.25, seed=4)[0], sft)
    s = CycleSampler(len(nyc_data.splits["train"]), 640, 7, fused, 64, 0.5, 2.0)
    assert len(s.pool(2)) == 3 * 64 and not torch.isin(s.pool(2), sft).any()
    template = warmup_and_fusion_ids(nyc_data, "template", 0.25, seed=3)
    assert torch.equal(template[0], every) and torch.equal(template[1], every)
    for target, share in (("oracle", 0.5), ("hindsight", 1.0)):
        with pytest.raises(ValueError, match="recpie.sft_"):
            warmup_and_fusion_ids(nyc_data, target, share, seed=0)


def test_ppo_draws_from_the_train_samples_that_end_a_trajectory(nyc_data):
    """recpie.rollout_rows=trajectory_end: the train samples whose target is its trajectory's last check-in,
    as every val and test sample's is; "all" keeps every explainable one."""
    import numpy as np

    from recpie.errors import ConfigError
    from recpie.rl.explainer_trainer import rollout_ids

    d = nyc_data
    ids = explainable_train_ids(d)
    assert torch.equal(rollout_ids(d, ids, "all"), ids)
    ends = rollout_ids(d, ids, "trajectory_end")
    target = d.splits["train"].target
    last = [int(t) == len(d.poi) - 1 or d.trajectory[t + 1] != d.trajectory[t] for t in target[ids.numpy()]]
    assert ends.tolist() == ids[torch.tensor(last)].tolist() and 0 < len(ends) < len(ids)
    for split in ("val", "test"):  # the protocol's samples all end their trajectory
        assert d.ends_trajectory(d.splits[split].target).all()
    with pytest.raises(ConfigError, match="only 1 train sample"):
        rollout_ids(d, ends[:1], "trajectory_end")
    assert np.isin(ends.numpy(), ids.numpy()).all()
