"""ppo_update's mechanics on a table policy (one free logit vector per row and position)."""
from __future__ import annotations

import pytest
import torch

from recpie.rl import RLConfig, Rollout, ppo_update

N, R, V = 6, 3, 5


def table_rollout(scores: torch.Tensor, values: torch.Tensor | None) -> tuple[Rollout, torch.nn.Parameter]:
    """A rollout whose 'policy' is a free logit table; extras['row'] tells policy_forward which rows."""
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(N, R, V))
    responses = torch.randint(0, V, (N, R))
    with torch.no_grad():
        old = torch.log_softmax(logits, -1).gather(-1, responses[..., None])[..., 0]
    sequences = torch.cat([torch.zeros(N, 2, dtype=torch.long), responses], 1)
    mask = torch.tensor([[1, 1, 1]] * (N - 1) + [[1, 0, 0]])
    rollout = Rollout(sequences, torch.ones_like(sequences), mask, old, old.clone(), scores, values,
                      extras={"row": torch.arange(N)})
    return rollout, logits


def run(rollout: Rollout, logits: torch.nn.Parameter, cfg: RLConfig, value_param: torch.nn.Parameter | None,
        microbatch_tokens: int | None = None):
    opt = torch.optim.SGD([logits] + ([value_param] if value_param is not None else []), lr=0.5)
    steps = []

    def policy_forward(mb: Rollout):
        rows = mb.extras["row"]
        logp = torch.log_softmax(logits[rows], -1).gather(-1, mb.responses[..., None])[..., 0]
        return logp, None if value_param is None else value_param[rows], None

    def optimize(losses):
        steps.append(1)
        opt.zero_grad()
        for loss in losses:
            loss.backward()
        opt.step()

    stats = ppo_update(rollout, policy_forward, optimize, cfg, kl_coef=0.0,
                       generator=torch.Generator().manual_seed(0), microbatch_tokens=microbatch_tokens)
    return stats, len(steps)


@pytest.mark.parametrize("estimator", ["gae", "rloo"])
def test_steps_per_epoch_and_the_direction_of_the_update(estimator):
    scores = torch.tensor([2.0, -2.0, 2.0, -2.0, 2.0, -2.0])
    values = torch.zeros(N, R) if estimator == "gae" else None
    rollout, logits = table_rollout(scores, values)
    value_param = torch.nn.Parameter(torch.zeros(N, R)) if estimator == "gae" else None
    cfg = RLConfig(estimator=estimator, group_size=2, ppo_epochs=3, minibatch_size=4)
    stats, steps = run(rollout, logits, cfg, value_param)
    assert steps == 3 * 2  # ceil(6 / 4) minibatches per epoch
    new = torch.log_softmax(logits.detach(), -1).gather(-1, rollout.responses[..., None])[..., 0]
    moved = ((new - rollout.old_logprobs) * rollout.response_mask).sum(-1)
    assert (moved[scores > 0] > 0).all() and (moved[scores < 0] < 0).all()
    assert ("ppo/value_loss" in stats) == (estimator == "gae")
    assert stats["ppo/kl_k1_per_seq"] == 0.0 and stats["ppo/ratio_max"] > 1.0


def test_micro_batches_take_the_same_steps_as_whole_minibatches():
    scores = torch.tensor([2.0, -1.0, 0.5, -2.0, 1.0, -0.5])
    results = []
    for tokens in (None, 5, 10):  # whole minibatches; one row (5 tokens) per part; two rows per part
        rollout, logits = table_rollout(scores, torch.zeros(N, R))
        rollout.attention_mask[1:3, 0] = 0  # rows of other lengths: parts are length groups
        value_param = torch.nn.Parameter(torch.zeros(N, R))
        cfg = RLConfig(estimator="gae", ppo_epochs=2, minibatch_size=4)
        stats, steps = run(rollout, logits, cfg, value_param, microbatch_tokens=tokens)
        results.append((logits.detach(), value_param.detach(), stats, steps))
    for logits, values, stats, steps in results[1:]:
        torch.testing.assert_close(logits, results[0][0])
        torch.testing.assert_close(values, results[0][1])
        assert stats == pytest.approx(results[0][2]) and steps == results[0][3]


def test_clear_errors():
    rollout, logits = table_rollout(torch.ones(N), None)
    with pytest.raises(ValueError, match="values"):
        run(rollout, logits, RLConfig(estimator="gae"), None)
    attached, logits = table_rollout(torch.ones(N), torch.zeros(N, R, requires_grad=True))
    with pytest.raises(ValueError, match=r"Rollout.values require grad"):
        run(attached, logits, RLConfig(estimator="gae"), None)
    with pytest.raises(ValueError, match="rl.minibatch_size"):
        run(rollout, logits, RLConfig(estimator="rloo", group_size=2, minibatch_size=0), None)
