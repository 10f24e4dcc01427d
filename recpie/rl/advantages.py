"""Advantage estimators: GAE with a value head, GRPO and RLOO from groups of samples per prompt; whitening.

All tensors are [N, R] over response tokens, with a response mask that is 1 up to and including the
first EOS and 0 after it (see `recpie.explainer.forward.response_mask`). The mask is a prefix of each row.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from recpie.rl.config import RLConfig
from recpie.rl.losses import kl_k1
from recpie.rl.masked import masked_whiten


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last masked-in position per row ([N]); rows with an empty mask give 0."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def token_rewards(scores: Tensor, mask: Tensor, logprobs: Tensor, ref_logprobs: Tensor,
                  kl_coef: float) -> Tensor:
    """Per-token reward: -kl_coef * k1 on every response token, plus the score on the last one."""
    rewards = -kl_coef * kl_k1(logprobs, ref_logprobs) * mask.to(logprobs.dtype)
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation; returns (advantages, returns = advantages + values).

    Values after the mask are treated as 0, so the value after the last response token is 0.
    """
    m = mask.to(values.dtype)
    values, rewards = values * m, rewards * m
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * m
    return advantages, (advantages + values) * m


def _groups(scores: Tensor, group_size: int) -> Tensor:
    if group_size < 2 or scores.shape[0] % group_size:
        raise ValueError(
            f"rl.group_size={group_size} must be >= 2 and divide the rollout size {scores.shape[0]} "
            "(rows of one prompt are contiguous, e.g. generate(num_return_sequences=group_size))"
        )
    return scores.view(-1, group_size)


def grpo_advantages(scores: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """GRPO: (score - group mean) / (group std + eps), one value per sequence ([N])."""
    g = _groups(scores, group_size)
    return ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)).reshape(-1)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """RLOO: score minus the mean score of the other samples of the same prompt ([N])."""
    g = _groups(scores, group_size)
    baseline = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
    return (g - baseline).reshape(-1)


def whiten_sequences(advantages: Tensor, mask: Tensor) -> Tensor:
    """Sequence-level advantages (one value per response, on its masked tokens) whitened over the responses,
    each counted once whatever its length; back on their tokens. The mask's first column is always 1 (a
    response has at least one token), so column 0 holds each response's value."""
    per_response = advantages[:, :1].T  # [1, N]
    return masked_whiten(per_response, torch.ones_like(per_response)).T * mask.to(advantages.dtype)


def sequence_scores_with_kl(scores: Tensor, mask: Tensor, logprobs: Tensor, ref_logprobs: Tensor,
                            kl_coef: float) -> Tensor:
    """Score minus kl_coef times the summed k1 KL of the response (the KL penalty of grpo/rloo)."""
    return scores - kl_coef * (kl_k1(logprobs, ref_logprobs) * mask.to(logprobs.dtype)).sum(-1)


# An estimator maps (scores, mask, old logprobs, ref logprobs, values, kl_coef, cfg) to
# (advantages [N, R], returns [N, R] or None when there is no value target).
Estimator = Callable[[Tensor, Tensor, Tensor, Tensor, "Tensor | None", float, RLConfig],
                     tuple[Tensor, "Tensor | None"]]


def _gae_estimator(scores, mask, logprobs, ref_logprobs, values, kl_coef, cfg):
    if values is None:
        raise ValueError("rl.estimator='gae' needs the rollout's values (a value head); "
                         "use grpo or rloo without one")
    rewards = token_rewards(scores, mask, logprobs, ref_logprobs, kl_coef)
    return gae(rewards, values, mask, cfg.gamma, cfg.lam)


def _group_estimator(group_fn: Callable[[Tensor, int], Tensor]) -> Estimator:
    def estimate(scores, mask, logprobs, ref_logprobs, values, kl_coef, cfg):
        seq = sequence_scores_with_kl(scores, mask, logprobs, ref_logprobs, kl_coef)
        return group_fn(seq, cfg.group_size)[:, None] * mask.to(seq.dtype), None

    return estimate


_ESTIMATORS: dict[str, Estimator] = {
    "gae": _gae_estimator,
    "grpo": _group_estimator(grpo_advantages),
    "rloo": _group_estimator(rloo_advantages),
}


def whiten(advantages: Tensor, mask: Tensor, estimator: str) -> Tensor:
    """rl.whiten_advantages: gae's per-token advantages over the masked tokens, grpo/rloo's per-response
    ones over the responses (whitening over tokens would weight a response by its length)."""
    return masked_whiten(advantages, mask) if estimator == "gae" else whiten_sequences(advantages, mask)


def advantage_estimator(name: str) -> Estimator:
    """The estimator registered under `name` ("gae" | "grpo" | "rloo")."""
    if name not in _ESTIMATORS:
        raise ValueError(f"unknown rl.estimator={name!r}; choose one of {sorted(_ESTIMATORS)}")
    return _ESTIMATORS[name]
