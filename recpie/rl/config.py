"""The PPO / RL section of the config; the defaults are those of shared/DESIGN.md."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

Estimator = StrEnum("Estimator", ["gae", "grpo", "rloo"])  # how PPO's advantages are estimated
KLReference = StrEnum("KLReference", ["base", "warmup"])  # the policy the KL penalty holds the explainer near


@dataclass
class KLConfig:
    """Coefficient of the per-token KL penalty (k1) against the reference policy (rl.kl_reference)."""

    init_coef: float = 0.05  # the coefficient at the start (and always, when adaptive is false)
    adaptive: bool = False  # adapt the coefficient towards `target` (Ziegler et al. 2019)
    target: float = 6.0  # adaptive only: wanted KL per sequence (sum over response tokens, nats)
    horizon: int = 10000  # adaptive only: samples over which the coefficient may change by ~e^0.2


@dataclass
class RewardConfig:
    """How a raw score (e.g. log-likelihood gain) becomes the PPO score at the last response token."""

    normalise: bool = True  # divide by a running std (and subtract the running mean)
    clip: float = 5.0  # clip the normalised score to [-clip, clip]; 0 disables clipping
    missing_eos_penalty: float = -1.0  # added when the response ends without an EOS token
    unparseable_penalty: float = -1.0  # added when the parse check rejects the response text


@dataclass
class RLConfig:
    """PPO update settings: estimator, epochs, minibatches, clipping (the sampling temperature, which every
    log-prob shares, is explainer.temperature)."""

    estimator: Estimator = Estimator.gae  # "gae" (value head), "grpo" or "rloo" (groups of samples, no value head)
    group_size: int = 4  # grpo/rloo: samples per prompt, contiguous rows of the rollout (gae ignores it)
    ppo_epochs: int = 4  # passes over the rollout per PPO iteration (the design says 2-4)
    minibatch_size: int = 4  # rollout rows per optimizer step
    cliprange: float = 0.2  # policy ratio clip epsilon
    cliprange_value: float = 0.2  # value clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss (gae only)
    gamma: float = 1.0  # GAE discount
    lam: float = 0.95  # GAE lambda
    whiten_advantages: bool = True  # masked whitening of the advantages over the whole rollout
    # what the per-token KL is measured against: "base" (the adapter-disabled LLM, same soft prompt) or
    # "warmup" (a frozen copy of LoRA + soft prompt right after the format warm-up, RLHF's SFT reference:
    # the warm-up itself moves the policy far from the base; docs/decisions.md)
    kl_reference: KLReference = KLReference.base
    kl: KLConfig = field(default_factory=KLConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
