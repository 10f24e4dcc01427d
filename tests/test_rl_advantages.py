"""GAE, whitening and the group estimators against values worked out by hand."""
from __future__ import annotations

import pytest
import torch

from recpie.rl import (
    RLConfig,
    Rollout,
    advantage_estimator,
    compute_advantages,
    gae,
    grpo_advantages,
    masked_whiten,
    rloo_advantages,
    token_rewards,
)

T = torch.tensor


def test_token_rewards_kl_on_every_token_score_on_the_last():
    # k1 = old - ref = [0.5, 0, -0.5, (masked)]; kl_coef 0.1 -> [-0.05, 0, 0.05]; score 1 on token 2.
    mask = T([[1, 1, 1, 0]])
    rewards = token_rewards(T([1.0]), mask, T([[-1.0, -2.0, -1.0, -3.0]]), T([[-1.5, -2.0, -0.5, -0.1]]), 0.1)
    torch.testing.assert_close(rewards, T([[-0.05, 0.0, 1.05, 0.0]]))


def test_gae_by_hand_three_tokens_and_a_masked_fourth():
    # gamma 1, lambda 0.95, values [0.5, 0.4, 0.3, garbage after EOS], rewards [-0.05, 0, 1.05]:
    # d2 = 1.05 + 0 - 0.3 = 0.75                      A2 = 0.75
    # d1 = 0 + 0.3 - 0.4 = -0.1                       A1 = -0.1 + 0.95 * 0.75 = 0.6125
    # d0 = -0.05 + 0.4 - 0.5 = -0.15                  A0 = -0.15 + 0.95 * 0.6125 = 0.431875
    rewards, values, mask = T([[-0.05, 0.0, 1.05, 7.0]]), T([[0.5, 0.4, 0.3, 9.0]]), T([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, T([[0.431875, 0.6125, 0.75, 0.0]]))
    torch.testing.assert_close(ret, T([[0.931875, 1.0125, 1.05, 0.0]]))


def test_gae_discount_and_lambda_zero_is_one_step_td():
    # gamma 0.9, lambda 0: A_t = r_t + 0.9 V_{t+1} - V_t, the last token bootstraps from 0.
    adv, _ = gae(T([[0.0, 2.0]]), T([[1.0, 0.5]]), T([[1, 1]]), gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, T([[0.9 * 0.5 - 1.0, 2.0 - 0.5]]))


def test_masked_whiten_by_hand():
    # masked values [1, 2, 3]: mean 2, unbiased var 1 -> [-1, 0, 1]; masked-out position -> 0.
    out = masked_whiten(T([[1.0, 2.0], [3.0, 100.0]]), T([[1, 1], [1, 0]]))
    torch.testing.assert_close(out, T([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-6, rtol=0)


def test_grpo_and_rloo_by_hand():
    scores = T([1.0, 3.0, 2.0, 2.0, 0.0, 4.0])  # two prompts of three samples
    # GRPO: group 1 mean 2, std 1 -> [-1, 1, 0]; group 2 mean 2, std 2 -> [0, -1, 1].
    expected = T([-1.0, 1.0, 0.0, 0.0, -1.0, 1.0])
    torch.testing.assert_close(grpo_advantages(scores, 3), expected, atol=1e-5, rtol=0)
    # RLOO: 1 - (3+2)/2 = -1.5, 3 - 1.5 = 1.5, 2 - 2 = 0; 2 - 2 = 0, 0 - 3 = -3, 4 - 1 = 3.
    torch.testing.assert_close(rloo_advantages(scores, 3), T([-1.5, 1.5, 0.0, 0.0, -3.0, 3.0]))


def test_group_estimator_subtracts_sequence_kl_and_broadcasts_over_the_mask():
    cfg = RLConfig(estimator="rloo", group_size=2)
    mask = T([[1, 1], [1, 0]])
    old, ref = T([[-1.0, -1.0], [-1.0, -1.0]]), T([[-2.0, -1.0], [-1.0, -5.0]])  # k1 sums 1 and 0
    adv, returns = advantage_estimator("rloo")(T([1.0, 1.0]), mask, old, ref, None, 0.5, cfg)
    # sequence scores 1 - 0.5 = 0.5 and 1 - 0 = 1 -> RLOO -0.5 and 0.5 on the masked tokens.
    assert returns is None
    torch.testing.assert_close(adv, T([[-0.5, -0.5], [0.5, 0.0]]))


def test_estimator_errors_name_the_key():
    with pytest.raises(ValueError, match="rl.estimator"):
        advantage_estimator("ppo2")
    with pytest.raises(ValueError, match="rl.group_size"):
        grpo_advantages(T([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="value head"):
        advantage_estimator("gae")(T([1.0]), T([[1]]), T([[0.0]]), T([[0.0]]), None, 0.1, RLConfig())


def rollout_of(scores: torch.Tensor, mask: torch.Tensor) -> Rollout:
    """A rollout whose policy is its reference (no KL): only the scores and the mask matter."""
    n, r = mask.shape
    zeros = torch.zeros(n, r)
    return Rollout(torch.zeros(n, r + 1, dtype=torch.long), torch.ones(n, r + 1), mask, zeros, zeros, scores)


@pytest.mark.parametrize("whiten", [False, True])
def test_sequence_level_advantages_by_hand_with_and_without_whitening(whiten):
    # two prompts x two samples, responses of 1, 3, 2 and 3 tokens.
    scores = T([1.0, 3.0, 2.0, 2.0])
    mask = T([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]])
    cfg = RLConfig(estimator="rloo", group_size=2, whiten_advantages=whiten)
    adv, returns = compute_advantages(rollout_of(scores, mask), cfg, kl_coef=0.1)
    # RLOO: r_i - mean of the others in its group -> [-2, 2, 0, 0]. Whitened over the 4 responses (each once,
    # whatever its length): mean 0, unbiased std sqrt(8/3) -> [-1.2247, 1.2247, 0, 0]. Over the 9 tokens instead
    # (token-level whitening) the mean would be 4/9 and no response would get exactly 0.
    per_response = T([-2.0, 2.0, 0.0, 0.0]) / ((8 / 3) ** 0.5 if whiten else 1.0)
    assert returns is None
    torch.testing.assert_close(adv, per_response[:, None] * mask, atol=1e-5, rtol=0)

    cfg = RLConfig(estimator="grpo", group_size=2, whiten_advantages=whiten)
    adv, _ = compute_advantages(rollout_of(scores, mask), cfg, kl_coef=0.1)
    # GRPO: (r - group mean) / group std (unbiased; 1.4142 in group 1): [-0.7071, 0.7071, 0, 0]; whitened
    # over the responses: mean 0, std sqrt(1/3) -> [-1.2247, 1.2247, 0, 0]
    per_response = T([-1.0, 1.0, 0.0, 0.0]) * ((3 / 2) ** 0.5 if whiten else 0.5**0.5)
    torch.testing.assert_close(adv, per_response[:, None] * mask, atol=1e-5, rtol=0)


def test_the_defaults_are_sequence_level_for_a_sequence_level_reward():
    cfg = RLConfig()
    assert (cfg.estimator, cfg.group_size, cfg.whiten_advantages, cfg.kl_reference) == ("rloo", 4, False, "warmup")
