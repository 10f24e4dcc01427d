"""PPO on a tiny Gemma3 causal LM with LoRA: log-probs match generate's, and each estimator raises a
programmatic reward (the share of one chosen token in the response) within a bounded number of iterations.

Integer token ids only (no tokenizer, no downloads): 0 pad, 1 EOS, 2..11 ordinary tokens.
"""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from recpie.explainer.forward import attention_implementation, left_pad_position_ids, response_logprobs, response_mask
from recpie.rl import (
    KLController,
    RewardConfig,
    RLConfig,
    Rollout,
    RunningMoments,
    ppo_update,
    shape_scores,
    value_head_for,
)

PAD, EOS, VOCAB = 0, 1, 12
TARGET_RANK = 2  # reward the base policy's 2nd most likely ordinary token: rare, but never absent
NEW_TOKENS = 6
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and 2 threads on a busy 2-core machine run ~25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_policy(seed: int = 0):
    """A 2-layer Gemma3 text model (sliding + full attention) wrapped in LoRA, dropout off.

    initializer_range 0.15: at 0.02 the tied-embedding logits stay within about +-1 whatever LoRA does;
    at 0.3 sampling is near-deterministic and the group estimators see no variance to learn from.
    """
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=64,
        bos_token_id=2, eos_token_id=EOS, pad_token_id=PAD, attention_dropout=0.0, initializer_range=0.15,
    )
    torch.manual_seed(seed)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS)
    return get_peft_model(Gemma3ForCausalLM(cfg), lora)


def left_padded_prompts(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n prompts of 2-5 ordinary tokens, left-padded to 5."""
    g = torch.Generator().manual_seed(seed)
    ids, mask = torch.full((n, 5), PAD), torch.zeros((n, 5), dtype=torch.long)
    for row in range(n):
        length = int(torch.randint(2, 6, (1,), generator=g))
        ids[row, 5 - length:] = torch.randint(2, VOCAB, (length,), generator=g)
        mask[row, 5 - length:] = 1
    return ids, mask


def sample(model, prompts, prompt_mask, group: int, temperature: float, **generate_kwargs):
    """Sequences and their attention mask; `group` samples per prompt, contiguous."""
    seqs = model.generate(
        input_ids=prompts, attention_mask=prompt_mask, do_sample=True, top_k=0, top_p=1.0,
        temperature=temperature, max_new_tokens=NEW_TOKENS, num_return_sequences=group,
        pad_token_id=PAD, eos_token_id=EOS, **generate_kwargs,
    )
    if not isinstance(seqs, torch.Tensor):
        return seqs
    response_len = seqs.shape[1] - prompts.shape[1]
    attention = torch.cat([prompt_mask.repeat_interleave(group, 0),
                           torch.ones(seqs.shape[0], response_len, dtype=torch.long)], 1)
    return seqs, attention


LOGPROB_ATTENTION = "sdpa"  # the explainer's choice on a CPU (explainer.logprob_attention=auto)
TEMPERATURE = 1.0


def forward(model, seqs, attention, responses, temperature, attn=LOGPROB_ATTENTION):
    return response_logprobs(model, responses, temperature, attn=attn, input_ids=seqs,
                             attention_mask=attention, position_ids=left_pad_position_ids(attention))


def ranked_token(model, prompts: torch.Tensor, prompt_mask: torch.Tensor, rank: int) -> int:
    """The ordinary token of the given rank (1 = most likely) in the base policy's mean next-token
    distribution after the prompts: a target the group estimators see in some samples from the start."""
    with torch.no_grad():
        logits = model(input_ids=prompts, attention_mask=prompt_mask,
                       position_ids=left_pad_position_ids(prompt_mask)).logits[:, -1]
    probs = torch.softmax(logits, -1).mean(0)[2:]
    return int(probs.argsort(descending=True)[rank - 1]) + 2


def target_share(responses: torch.Tensor, mask: torch.Tensor, target: int) -> torch.Tensor:
    """The programmatic reward: share of `target` among the response tokens up to the first EOS."""
    return ((responses == target) & (mask == 1)).sum(-1) / mask.sum(-1).clamp(min=1)


def train(estimator: str, iterations: int, seed: int = 0) -> list[float]:
    """PPO iterations on fresh rollouts; returns the mean raw reward of each rollout."""
    group = 1 if estimator == "gae" else 4
    cfg = RLConfig(estimator=estimator, group_size=group, ppo_epochs=4, minibatch_size=4)
    model = tiny_policy(seed)
    value_head = value_head_for(model)
    lora_params = [p for p in model.parameters() if p.requires_grad]
    lora_before = [p.detach().clone() for p in lora_params]
    opt = torch.optim.Adam(lora_params + list(value_head.parameters()), lr=1e-2)
    kl_ctl, moments = KLController(cfg.kl), RunningMoments()
    reward_cfg = RewardConfig(missing_eos_penalty=0.0, unparseable_penalty=0.0)
    prompts, prompt_mask = left_padded_prompts(16 // group, seed)
    target = ranked_token(model, prompts, prompt_mask, TARGET_RANK)
    torch.manual_seed(seed)
    curve = []

    def policy_forward(mb: Rollout):
        out = forward(model, mb.sequences, mb.attention_mask, mb.responses, TEMPERATURE)
        return out.logprobs, value_head(out.hidden) if estimator == "gae" else None, out.entropy

    def optimize(losses):
        opt.zero_grad()
        for loss in losses:
            loss.backward()
        opt.step()

    for _ in range(iterations):
        with torch.no_grad():
            seqs, attention = sample(model, prompts, prompt_mask, group, TEMPERATURE)
            responses = seqs[:, prompts.shape[1]:]
            mask, has_eos = response_mask(responses, EOS)
            out = forward(model, seqs, attention, responses, TEMPERATURE)
            with model.disable_adapter():
                ref = forward(model, seqs, attention, responses, TEMPERATURE).logprobs
            raw = target_share(responses, mask, target)
            scores, _ = shape_scores(raw, has_eos, torch.ones_like(has_eos), moments, reward_cfg)
            values = value_head(out.hidden) * mask
        curve.append(raw.mean().item())
        rollout = Rollout(seqs, attention, mask, out.logprobs, ref, scores, values=values)
        stats = ppo_update(rollout, policy_forward, optimize, cfg, kl_ctl.value)
        kl_ctl.update(stats["ppo/kl_k1_per_seq"], len(scores))
        assert 0.0 <= stats["ppo/clipfrac"] <= 1.0 and stats["ppo/ratio_max"] >= 1.0 - cfg.cliprange
    changed = [not torch.equal(p, b) for p, b in zip(lora_params, lora_before, strict=True)]
    assert all(changed), "some LoRA weights did not train"
    return curve


def test_masks_and_position_ids_by_hand():
    mask, has_eos = response_mask(torch.tensor([[3, 1, 4, 1], [3, 4, 5, 6], [1, 0, 0, 0]]), EOS)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]
    assert left_pad_position_ids(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])).tolist() == [
        [0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_match_the_sampling_distribution_of_generate(temperature):
    model = tiny_policy(seed=1).eval()
    prompts, prompt_mask = left_padded_prompts(4, seed=1)
    torch.manual_seed(1)
    with torch.no_grad():
        gen = sample(model, prompts, prompt_mask, 1, temperature, output_scores=True,
                     return_dict_in_generate=True)
        responses = gen.sequences[:, prompts.shape[1]:]
        attention = torch.cat([prompt_mask, torch.ones_like(responses)], 1)
        out = forward(model, gen.sequences, attention, responses, temperature)
    mask, _ = response_mask(responses, EOS)
    sampling_logp = torch.log_softmax(torch.stack(gen.scores, 1).float(), -1)
    sampled = sampling_logp.gather(-1, responses[..., None])[..., 0]
    torch.testing.assert_close(out.logprobs * mask, sampled * mask, atol=1e-4, rtol=0)
    assert (value_head_for(model)(out.hidden) == 0).all()  # zero init: the critic starts neutral


def test_attention_implementation_switches_the_kernel_and_restores_it():
    model = tiny_policy(seed=3).eval()
    seqs, attention = left_padded_prompts(3, seed=3)
    base = model.get_base_model()
    assert base.config._attn_implementation == "sdpa"
    with attention_implementation(model, "eager"):
        assert base.config._attn_implementation == "eager"
    assert base.config._attn_implementation == "sdpa"
    with torch.no_grad():
        eager = forward(model, seqs, attention, seqs[:, -1:], 1.0, attn="eager")  # prompts have >= 2 tokens
        sdpa = forward(model, seqs, attention, seqs[:, -1:], 1.0, attn=None)
    torch.testing.assert_close(eager.logprobs, sdpa.logprobs, atol=1e-5, rtol=0)


def test_response_logprobs_through_inputs_embeds_as_soft_prompts_use_them():
    model = tiny_policy(seed=2).eval()
    seqs, attention = left_padded_prompts(3, seed=2)
    responses = seqs[:, -1:]  # the prompts have >= 2 real tokens: the response has a real context
    embeds = model.get_input_embeddings()(seqs)  # Gemma scales by sqrt(hidden) inside the embedding
    with torch.no_grad():
        by_ids = forward(model, seqs, attention, responses, 1.0)
        by_embeds = response_logprobs(model, responses, 1.0, attn=LOGPROB_ATTENTION, inputs_embeds=embeds,
                                      attention_mask=attention, position_ids=left_pad_position_ids(attention))
        soft = torch.cat([torch.randn(3, 2, embeds.shape[-1]) * embeds.std(), embeds], 1)
        soft_mask = torch.cat([torch.ones(3, 2, dtype=torch.long), attention], 1)
        by_soft = response_logprobs(model, responses, 1.0, attn=LOGPROB_ATTENTION, inputs_embeds=soft,
                                    attention_mask=soft_mask, position_ids=left_pad_position_ids(soft_mask))
    torch.testing.assert_close(by_embeds.logprobs, by_ids.logprobs, atol=1e-5, rtol=0)
    assert by_soft.logprobs.shape == by_ids.logprobs.shape
    assert not torch.allclose(by_soft.logprobs, by_ids.logprobs, atol=1e-3)


@pytest.mark.parametrize("estimator", ["gae", "grpo", "rloo"])
def test_ppo_raises_a_programmatic_reward(estimator):
    curve = train(estimator, iterations=12)
    start, end = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    assert end > start + 0.25, f"{estimator}: reward {start:.3f} -> {end:.3f}, curve {curve}"
