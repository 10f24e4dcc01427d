"""PPO / RL machinery for the explainer: small explicit functions the joint LightningModule calls.

One PPO iteration, as the module runs it (manual optimization)::

    cfg = RLConfig()                       # recpie.rl.config, section `rl`
    kl_ctl, moments = KLController(cfg.kl), RunningMoments()   # both state_dict-able: checkpoint them
    value_head = value_head_for(llm)       # zero-init Linear, outside peft, in the LoRA optimizer (gae only)
    # 1. sample: llm.generate(..., do_sample=True, top_k=0, top_p=1.0, temperature=cfg.temperature)
    #    (group_size rows per prompt, contiguous, for grpo/rloo: num_return_sequences=cfg.group_size)
    mask, has_eos = response_mask(responses, eos_token_id)
    pos = left_pad_position_ids(attention_mask)
    with torch.no_grad():      # attn: SDPA's backward gives NaN LoRA grads on CUDA with left padding
        out = response_logprobs(llm, responses, cfg.temperature, attn=cfg.logprob_attention, input_ids=seqs,
                                attention_mask=attention_mask, position_ids=pos)   # old log-probs, hidden
        with llm.disable_adapter():
            ref = response_logprobs(llm, responses, cfg.temperature, ...).logprobs
    # 2. score: parts = explanation_reward(recommender, ..., z, present, other_rows(rows, generator))
    #    raw = parts.raw(cfg.reward.baseline)   # own explanation's log p(target) minus another sample's (or null)
    #    scores, reward_stats = shape_scores(raw, has_eos, parse_flags(texts, parse_ok), moments, cfg.reward)
    rollout = Rollout(seqs, attention_mask, mask, out.logprobs, ref, scores,
                      values=value_head(out.hidden) * mask, extras={...})
    # 3. update: policy_forward(mb: Rollout) -> (logprobs, values or None, entropy or None)
    stats = ppo_update(rollout, policy_forward, optimize=optimize, cfg=cfg, kl_coef=kl_ctl.value)
    # optimize(losses): opt.zero_grad(), manual_backward(part) for each part as it comes, clip_gradients, opt.step()
    kl_ctl.update(stats["ppo/kl_k1_per_seq"], n_samples=len(rollout.scores))

Choices: gae puts -kl_coef*k1 on every token and the score on the last response token; grpo/rloo subtract
kl_coef * (summed k1) from each sequence's score, then compare it within its group of group_size rows
(the default: rloo, 4 samples per prompt; whitening, when on, is over tokens for gae, over responses for these).
Under DDP each rank whitens, normalises and adapts the KL coefficient on its own rows unless the caller
all-gathers raw scores before RunningMoments.update and averages the KL stat before KLController.update.

API
- advantages: masked_whiten(x, mask), token_rewards(scores, mask, logprobs, ref_logprobs, kl_coef),
  gae(rewards, values, mask, gamma, lam) -> (adv, returns), grpo_advantages(scores, group_size),
  rloo_advantages(scores, group_size), advantage_estimator(name in "gae" | "grpo" | "rloo"),
  whiten(advantages, mask, estimator).
- losses: policy_loss(logprobs, old, adv, mask, cliprange) -> (loss, stats),
  value_loss(values, old_values, returns, mask, cliprange_value) -> (loss, stats), kl_k1, kl_k3.
- reward: explanation_reward(...) -> ExplanationReward (own / other / null log p of the target),
  derangement(n, generator), other_rows(rows, generator), RunningMoments (normalise with a std floor),
  parse_flags(texts, parse_ok), shape_scores(...), KLController(cfg.kl).
- the LLM's forward helpers live one layer down, in recpie.explainer.forward (the explainer generates and
  encodes with them too): left_pad_position_ids, response_mask -> (mask, has_eos), response_logprobs(model,
  responses, temperature, attn=None, **model_inputs) -> ResponseOutput, attention_implementation(model, name).
- ppo: Rollout, compute_advantages(rollout, cfg, kl_coef), ppo_update(...) -> dict of stats.
- value_head: ValueHead(hidden_size), value_head_for(model).
"""
from recpie.rl.advantages import advantage_estimator, gae, grpo_advantages, rloo_advantages, token_rewards
from recpie.rl.config import KLConfig, RewardConfig, RLConfig
from recpie.rl.losses import kl_k1, kl_k3, policy_loss, value_loss
from recpie.rl.masked import masked_mean, masked_whiten
from recpie.rl.ppo import Rollout, compute_advantages, ppo_update
from recpie.rl.reward import KLController, RunningMoments, parse_flags, shape_scores
from recpie.rl.value_head import ValueHead, value_head_for

__all__ = [
    "KLConfig", "KLController", "RLConfig", "RewardConfig", "Rollout", "RunningMoments", "ValueHead",
    "advantage_estimator", "compute_advantages", "gae", "grpo_advantages", "kl_k1", "kl_k3", "masked_mean",
    "masked_whiten", "parse_flags", "policy_loss", "ppo_update", "rloo_advantages", "shape_scores",
    "token_rewards", "value_head_for", "value_loss",
]
