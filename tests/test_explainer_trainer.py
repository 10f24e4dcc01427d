"""The explainer trainer: the one optimizer step zeroes, clips and steps; the warm-up runs once; the
reference policy is the snapshot, not the live weights; a PPO iteration moves the policy on."""
from __future__ import annotations

import pytest
import torch
from joint_parts import Host, joint_parts
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.models.recpie_module import ITERATION_SCALARS
from recpie.rl.explainer_trainer import optimizer_step
from recpie.rl.ppo import Rollout


def test_one_optimizer_step_zeroes_stale_gradients_sums_the_parts_clips_and_steps():
    host, w = Host(), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = torch.tensor([100.0, 100.0])  # left by another loss: must not count
    loss = optimizer_step(host, opt, [(w * torch.tensor([3.0, 4.0])).sum()], grad_clip=1.0)  # gradient norm 5 -> 1
    assert host.clipped_to == [1.0] and loss.item() == 0.0
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]))
    parts = iter([w[0] * 3.0, w[1] * 4.0])  # one loss in two parts, each backpropagated in turn
    loss = optimizer_step(host, opt, parts, grad_clip=0.0)  # 0: no clipping
    assert host.clipped_to == [1.0]
    torch.testing.assert_close(loss, torch.tensor(-5.0))
    torch.testing.assert_close(w.detach(), torch.tensor([-3.6, -4.8]))


@pytest.mark.slow
def test_warmup_once_then_the_reference_is_a_snapshot_and_ppo_moves_the_policy(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    writer, trainer, host = joint_parts(tmp_path, nyc_data, tiny_llm_dir, **{"rl.kl_reference": "warmup",
                                                                            "rl.estimator": "grpo", "rl.group_size": 2})
    explainer = trainer.explainer
    opt = torch.optim.AdamW(explainer.trainable_parameters(), lr=1e-2)
    trainer.prepare(opt)
    trainer.prepare(opt)  # a later cycle: no second warm-up
    assert len(host.logged["sft/loss"]) == trainer.rc.sft_steps and trainer.policy_version == 1 and trainer.sft_done
    assert trainer.reference_weights.keys() == explainer.trainable_state_dict().keys()

    ids = torch.tensor([50, 51])
    h, candidates = writer.recommender.predict(writer.batch("train", ids))
    gen = explainer.generate(writer.prompts("train", ids, candidates), h, sample=True)
    rollout = Rollout(*gen.rows(), torch.zeros(0), torch.zeros(0), torch.zeros(2), extras={"user_state": h})
    with torch.no_grad():
        live = trainer.policy_forward(rollout)[0]
        reference = trainer.policy_forward(rollout, reference=True)[0]
    torch.testing.assert_close(reference, live)  # right after the snapshot

    stats = trainer.ppo_iteration(opt, 0)
    assert trainer.policy_version == 2 and {"reward/raw_mean", "ppo/kl_k1_per_seq", "ppo/kl_coef"} <= set(stats)
    assert set(ITERATION_SCALARS) <= set(stats)  # what the module logs per iteration
    assert len(host.logged["explanations/rollout"]) == 1
    with torch.no_grad():
        moved = trainer.policy_forward(rollout)[0]
        still = trainer.policy_forward(rollout, reference=True)[0]
    torch.testing.assert_close(still, reference)  # the snapshot, not the live weights
    assert (moved - live).abs().max() > 1e-6
    state = trainer.state_dict()
    trainer.policy_version, trainer.sft_done = 0, False
    trainer.load_state_dict(state)
    assert (trainer.policy_version, trainer.sft_done) == (2, True)


@pytest.mark.slow
def test_the_facts_warm_up_and_rollouts_read_prompts_with_scores(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    """explainer.show_scores with the facts teacher: the warm-up's and PPO's prompts state each candidate's
    recommender share (the writer gets the candidates' logits), and the teacher reads them."""
    writer, trainer, host = joint_parts(tmp_path, nyc_data, tiny_llm_dir, **{"explainer.show_scores": "true",
                                                                            "recpie.sft_target": "facts"})
    seen, prompts = [], writer.prompts

    def recording(split, ids, candidates, logits=None):
        out = prompts(split, ids, candidates, logits)
        seen.append(out)
        return out

    writer.prompts = recording
    opt = torch.optim.AdamW(trainer.explainer.trainable_parameters(), lr=1e-2)
    trainer.prepare(opt)
    trainer.ppo_iteration(opt, 0)
    assert len(seen) == trainer.rc.sft_steps + 1 and len(host.logged["sft/loss"]) == trainer.rc.sft_steps
    assert all(", recommender " in p.split("Candidates")[1] for batch in seen for p in batch)
