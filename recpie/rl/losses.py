"""PPO losses and the KL estimators; masks are 1 on response tokens up to the first EOS."""
from __future__ import annotations

import torch
from torch import Tensor

from recpie.rl.masked import masked_mean


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log p - log q per token: unbiased, the one the reward penalises."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = (q/p) - 1 - log(q/p) per token: non-negative, low variance, for logging."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                cliprange: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate loss (token mean) and its stats: clipfrac, approx_kl, ratio mean/max."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_max": ratio.masked_fill(mask == 0, float("-inf")).max(),
        }
    return loss, stats


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
               cliprange_value: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss 0.5 * max((v - R)^2, (v_clip - R)^2), v_clip within cliprange of the old value."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped_err > unclipped_err).float(), mask)}
    return loss, stats
