"""The PPO / RL section of the config; the defaults are those of shared/DESIGN.md."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# how PPO's advantages are estimated; "expected" (a K-way choice only, explainer.choice=scored/readout): no
# draws, every one of a prompt's K choices rewarded and weighted by pi (ExplainerTrainer.expected_choice_iteration)
Estimator = StrEnum("Estimator", ["gae", "grpo", "rloo", "expected"])
KLReference = StrEnum("KLReference", ["base", "warmup"])  # the policy the KL penalty holds the explainer near
# what the reward compares the sample's own explanation with (see RewardConfig.baseline)
RewardBaseline = StrEnum("RewardBaseline", ["other", "null"])
# what the reward measures of the target under the fused recommender (see RewardConfig.metric)
RewardMetric = StrEnum("RewardMetric", ["log_likelihood", "reciprocal_rank"])
# what PPO's steps move: everything the warm-up trained, or the readout choice's head alone
Trainable = StrEnum("Trainable", ["all", "head"])


@dataclass
class KLConfig:
    """Coefficient of the per-token KL penalty (k1) against the reference policy (rl.kl_reference)."""

    init_coef: float = 0.05  # the coefficient at the start (and always, when adaptive is false)
    adaptive: bool = False  # adapt the coefficient towards `target` (Ziegler et al. 2019)
    target: float = 6.0  # adaptive only: wanted KL per sequence (sum over response tokens, nats)
    horizon: int = 10000  # adaptive only: samples over which the coefficient may change by ~e^0.2


@dataclass
class RewardConfig:
    """How a raw score (the recommender's log-likelihood gain) becomes the PPO score of a response."""

    # the raw score: log p(target | own explanation) - log p(target | the baseline's), recommender in eval
    # mode. "other": another sample's explanation of the same rollout (a seeded derangement of its prompts), so
    # only what the text says about *this* sample pays, not that an explanation is present; "null": the
    # fusion's learned null explanation (the gain over having none). Either is 0 while the fusion is the
    # identity. Texts the fusion cannot read (a verdict encoder's unparseable ones) count as the null
    baseline: RewardBaseline = RewardBaseline.other
    # the target's value the gain is measured in: "log_likelihood" (log p over all POIs, dense) or
    # "reciprocal_rank" (1 / its rank over all POIs, the reported MRR's term). The verdict fusion re-ranks the
    # top K and is fitted on samples whose target is among them; on the others (about 45% at 3%) a verdict
    # moves only the softmax normaliser, so their log-likelihood gain prices how much mass the fusion gives
    # the K, not the ranking, while their reciprocal rank is unchanged unless a candidate crosses the target
    metric: RewardMetric = RewardMetric.log_likelihood
    normalise: bool = True  # divide by a running std (and subtract the running mean)
    # floor of that std, in the raw score's units (nats; reciprocal rank under metric=reciprocal_rank): a
    # zero-variance start (the identity fusion's zeros) must not turn 1e-4 noise into unit scores; below it
    # a gain of std_floor is one unit
    std_floor: float = 0.05
    clip: float = 5.0  # clip the normalised score to [-clip, clip]; 0 disables clipping
    missing_eos_penalty: float = -1.0  # added when the response ends without an EOS token
    unparseable_penalty: float = -1.0  # added when the parse check rejects the response text


@dataclass
class RLConfig:
    """PPO update settings: estimator, epochs, minibatches, clipping (the sampling temperature, which every
    log-prob shares, is explainer.temperature)."""

    # "rloo" or "grpo" (group_size samples per prompt, one advantage per response, no value head) or "gae"
    # (value head, per token). The reward is one number per response: a value head that starts at 0 and gets
    # a few steps per iteration passed only 0.09-0.23 of it back to the "may like" tokens at lambda 0.95
    # (the 3%/12% runs); RLOO's baseline, the mean score of the prompt's other samples, needs no learning
    estimator: Estimator = Estimator.rloo
    group_size: int = 4  # grpo/rloo: samples per prompt, contiguous rows of the rollout (gae ignores it)
    ppo_epochs: int = 4  # passes over the rollout per PPO iteration (the design says 2-4)
    # learning rate of PPO's steps on LoRA + soft prompt + value head; 0 = recpie.llm_lr, the warm-up's. Adam
    # moves a weight by about lr a step whatever the gradient's size: at the warm-up's 2e-4 the K-way policy
    # moved 1.1 nats from the warm-up in 16 PPO steps (issue 24)
    lr: float = 0.0
    minibatch_size: int = 4  # rollout rows per optimizer step
    cliprange: float = 0.2  # policy ratio clip epsilon
    cliprange_value: float = 0.2  # value clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss (gae only)
    gamma: float = 1.0  # GAE discount
    lam: float = 0.95  # GAE lambda
    # whiten the advantages over the rollout: gae over its response tokens; grpo/rloo over its responses
    # (one value each, however long), then back on their tokens. Off by default: whitening divides by the
    # rollout's spread, which turns the floored reward's small differences (rl.reward.std_floor) back into
    # unit advantages (RLOO's already have mean 0 over a rollout)
    whiten_advantages: bool = False
    # what the per-token KL is measured against: "warmup" (a frozen copy of LoRA + soft prompt right after
    # the format warm-up, RLHF's SFT reference) or "base" (the adapter-disabled LLM, same soft prompt: the
    # warm-up alone puts the policy ~80 nats from it, a penalty that fights the format; docs/decisions.md)
    kl_reference: KLReference = KLReference.warmup
    # what PPO's steps move: "all" (LoRA + soft prompt + the readout choice's head, as the warm-up) or "head"
    # (explainer.choice=readout with rl.estimator=expected: the head alone; LoRA and soft prompt stay at their
    # warm-up values, so each prompt's line states are computed once, without grad, and every step re-reads
    # them: a prompt costs one forward instead of a forward and a backward per epoch, so an iteration can
    # hold ~8x the prompts; issue 24)
    trainable: Trainable = Trainable.all
    kl: KLConfig = field(default_factory=KLConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
