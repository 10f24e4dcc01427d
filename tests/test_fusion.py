"""The fusion modules start as the identity (explanations have no say until trained) and can learn."""
from __future__ import annotations

import torch

from recpie.components.fusion import CandidateReranker, GatedFusion


def test_gated_fusion_starts_as_identity_and_learns():
    torch.manual_seed(0)
    fusion = GatedFusion(state_dim=8, explanation_dim=16)
    h, z = torch.randn(5, 8), 10 * torch.randn(5, 16)
    present = torch.tensor([True, False, True, True, False])
    refined, gate = fusion(h, z, present)
    torch.testing.assert_close(refined, h, rtol=0, atol=0)  # explained and null rows alike
    assert torch.allclose(gate, torch.sigmoid(torch.tensor(-2.0)))
    opt = torch.optim.SGD(fusion.parameters(), lr=0.5)
    for _ in range(3):  # pull explained states toward a direction only z can supply
        refined, _ = fusion(h, z, present)
        loss = -(refined[present] * z[present, :8]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    refined, gate = fusion(h, z, present)
    assert (refined[present] - h[present]).norm() > 0.1
    assert not torch.allclose(gate, torch.sigmoid(torch.tensor(-2.0)))  # the gate moves once W has


def test_candidate_reranker_starts_with_zero_bonus():
    torch.manual_seed(0)
    reranker = CandidateReranker(state_dim=8, explanation_dim=16)
    logits, candidates = torch.randn(3, 20), torch.randint(0, 20, (3, 4))
    present = torch.ones(3, 4, dtype=torch.bool)
    rescored, bonus = reranker(logits, torch.randn(3, 8), candidates, torch.randn(3, 4, 16), present)
    torch.testing.assert_close(rescored, logits, rtol=0, atol=0)
    assert bonus.abs().max() == 0
