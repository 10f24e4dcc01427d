"""Clipped policy and value losses and the KL estimators against values worked out by hand."""
from __future__ import annotations

import math

import torch

from recpie.rl import kl_k1, kl_k3, policy_loss, value_loss

T = torch.tensor


def test_policy_loss_clips_only_in_the_direction_of_the_advantage():
    # ratios exp(log r): 1.5 (A=+1, clipped to 1.2), 0.5 (A=+1, not clipped: the surrogate keeps 0.5),
    # 1.5 (A=-1, not clipped: the surrogate keeps 1.5), 0.5 (A=-1, clipped to 0.8); 5th masked.
    ratio = T([[1.5, 0.5, 1.5, 0.5, 3.0]])
    old = torch.zeros_like(ratio)
    adv = T([[1.0, 1.0, -1.0, -1.0, 1.0]])
    mask = T([[1, 1, 1, 1, 0]])
    loss, stats = policy_loss(ratio.log(), old, adv, mask, cliprange=0.2)
    # per-token losses max(-A r, -A clip(r)): -1.2, -0.5, 1.5, 0.8 -> mean 0.15
    torch.testing.assert_close(loss, T(0.15))
    torch.testing.assert_close(stats["clipfrac"], T(0.5))
    torch.testing.assert_close(stats["ratio_mean"], T(1.0))
    torch.testing.assert_close(stats["ratio_max"], T(1.5))
    torch.testing.assert_close(stats["approx_kl"], T(0.5 * 2 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 4))


def test_policy_loss_gradient_vanishes_on_clipped_tokens():
    logp = T([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = policy_loss(logp, torch.zeros(1, 2), T([[1.0, 1.0]]), T([[1, 1]]), cliprange=0.2)
    loss.backward()
    # d/dlogp of -A r / 2 is -r/2 on the unclipped token, 0 on the clipped one.
    torch.testing.assert_close(logp.grad, T([[0.0, -1.1 / 2]]))


def test_value_loss_by_hand():
    # old 0, returns 1: v=0.5 (within the clip range 0.2 -> clipped 0.2): max(0.25, 0.64) = 0.64;
    # v=0.1 (within): 0.81; v=-0.5, returns -1 (clipped -0.2): max(0.25, 0.64) = 0.64; masked 4th.
    values, old = T([[0.5, 0.1, -0.5, 5.0]]), T([[0.0, 0.0, 0.0, 0.0]])
    returns, mask = T([[1.0, 1.0, -1.0, 0.0]]), T([[1, 1, 1, 0]])
    loss, stats = value_loss(values, old, returns, mask, cliprange_value=0.2)
    torch.testing.assert_close(loss, T(0.5 * (0.64 + 0.81 + 0.64) / 3))
    torch.testing.assert_close(stats["vf_clipfrac"], T(2 / 3))


def test_kl_estimators():
    logp, ref = T([-1.0, -2.0]), T([-2.0, -1.0])
    torch.testing.assert_close(kl_k1(logp, ref), T([1.0, -1.0]))
    # k3 = e^(ref-logp) - 1 - (ref-logp): e^-1 - 1 + 1 = e^-1, e^1 - 1 - 1 = e - 2
    torch.testing.assert_close(kl_k3(logp, ref), T([math.exp(-1), math.e - 2]))
    assert kl_k3(T([-1.0]), T([-1.0])).item() == 0.0
