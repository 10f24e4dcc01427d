"""Running normalisation (and its checkpointing), clipping, format penalties, KL controllers."""
from __future__ import annotations

import pytest
import torch

from recpie.rl import KLConfig, KLController, RewardConfig, RunningMoments, parse_flags, shape_scores

T = torch.tensor


def test_running_moments_match_the_moments_of_everything_seen():
    torch.manual_seed(0)
    batches = [torch.randn(5) * 3 + 2, torch.randn(7) - 1, torch.randn(1)]
    moments = RunningMoments()
    for b in batches:
        moments.update(b)
    everything = torch.cat(batches).double()
    assert moments.count == 13
    assert moments.mean == pytest.approx(everything.mean().item())
    assert moments.var == pytest.approx(everything.var(unbiased=False).item())
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    torch.testing.assert_close(restored.normalise(T([1.0, 2.0])), moments.normalise(T([1.0, 2.0])))


def test_shape_scores_normalises_clips_then_penalises():
    # raw [1, 3]: mean 2, population std 1 -> [-1, 1];
    # clip 0.5 -> [-0.5, 0.5]; row 0 lacks EOS (-1), row 1 is unparseable (-2).
    cfg = RewardConfig(normalise=True, clip=0.5, missing_eos_penalty=-1.0, unparseable_penalty=-2.0)
    parsed = parse_flags(["may like: x", "garbage"], lambda text: text.startswith("may like:"))
    scores, stats = shape_scores(T([1.0, 3.0]), T([False, True]), parsed, RunningMoments(), cfg)
    torch.testing.assert_close(scores, T([-1.5, -1.5]))
    assert stats["reward/eos_rate"] == 0.5 and stats["reward/parse_rate"] == 0.5
    assert stats["reward/raw_mean"] == 2.0


def test_shape_scores_without_normalising_or_clipping_is_raw_plus_penalties():
    cfg = RewardConfig(normalise=False, clip=0.0, missing_eos_penalty=-1.0, unparseable_penalty=-2.0)
    moments = RunningMoments()
    scores, _ = shape_scores(T([10.0, -3.0]), T([True, False]), T([True, True]), moments, cfg)
    torch.testing.assert_close(scores, T([10.0, -4.0]))
    assert moments.count == 0


def test_kl_controllers():
    fixed = KLController(KLConfig(init_coef=0.05, adaptive=False))
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    adaptive = KLController(KLConfig(init_coef=0.1, adaptive=True, target=2.0, horizon=100))
    adaptive.update(4.0, 10)  # error clipped to +0.2 -> x(1 + 0.2 * 10/100)
    assert adaptive.value == pytest.approx(0.1 * 1.02)
    adaptive.update(1.5, 50)  # error -0.25 clipped to -0.2 -> x(1 - 0.1)
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.9)
    restored = KLController(KLConfig(adaptive=True))
    restored.load_state_dict(adaptive.state_dict())
    assert restored.value == adaptive.value
    with pytest.raises(ValueError, match="rl.kl.target"):
        KLController(KLConfig(adaptive=True, target=0.0))


@pytest.mark.parametrize("std_floor, unit_size", [(0.05, False), (0.0, True)])
def test_a_zero_variance_start_does_not_turn_tiny_gains_into_unit_scores(std_floor, unit_size):
    # cycle 0: 8 gains of exactly 0 (the identity fusion); then gains of 1e-4 nats. Without a floor the running
    # std (~7e-5) scales them to ~+-1.5 (the bug of the 3%/12% runs); with a 0.05-nat floor they stay ~0.002.
    cfg, moments = RewardConfig(std_floor=std_floor), RunningMoments()
    ok, ended = T([True] * 8), T([True] * 8)
    shape_scores(torch.zeros(8), ended, ok, moments, cfg)
    scores, _ = shape_scores(T([1e-4, -1e-4, 2e-4, 0.0, 1e-4, -2e-4, 1e-4, 0.0]), ended, ok, moments, cfg)
    assert (scores.abs().max() > 0.5) == unit_size, scores
    if not unit_size:
        assert scores.abs().max() < 0.01
    assert moments.count == 16  # the floor changes the scale, not what the moments saw


def test_a_real_spread_above_the_floor_is_normalised_as_before():
    moments = RunningMoments()
    scores, _ = shape_scores(T([-1.0, 1.0]), T([True, True]), T([True, True]), moments,
                             RewardConfig(std_floor=0.05))
    torch.testing.assert_close(scores, T([-1.0, 1.0]))
