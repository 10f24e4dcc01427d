"""The fusion modules start as the identity (explanations have no say until trained) and can learn; the
verdict re-ranker's closed-form fit is the optimum of its objective and makes a verdict count."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recpie.components.fusion import CandidateReranker, GatedFusion, VerdictReranker, fit_listwise
from recpie.evaluation.ranking import ranks_from_scores


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


def test_the_listwise_fit_equals_a_long_gradient_descent():
    """fit_listwise (LBFGS) reaches the optimum of its convex objective: a long plain gradient descent on the
    same objective ends at the same weights."""
    g = torch.Generator().manual_seed(0)
    n, k, f, ridge = 200, 4, 6, 1e-2
    x, offset = torch.randn(n, k, f, generator=g), torch.randn(n, k, generator=g)
    true = torch.tensor([1.5, -1.0, 0.5, 0.0, 2.0, -0.5])
    slot = torch.multinomial(torch.softmax(offset + x @ true, -1), 1, generator=g).squeeze(1)
    fitted = fit_listwise(x, slot, offset, ridge)
    w = torch.zeros(f, dtype=torch.float64, requires_grad=True)
    for _ in range(1000):
        loss = F.cross_entropy(offset.double() + x.double() @ w, slot) + ridge * w.square().sum()
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= grad
    torch.testing.assert_close(fitted, w.detach().float(), atol=1e-5, rtol=1e-5)
    assert (fitted - true).abs().max() < 1.0  # and it is near the weights that drew the data
    assert fit_listwise(x[:0], slot[:0], offset[:0]).abs().max() == 0  # no rows: the identity


def verdict_rows(n: int, k: int = 5, pois: int = 30, agree: float = 0.6, seed: int = 0):
    """Synthetic explained rows: logits over all POIs, the top-K candidates, a target among them drawn by the
    logits, and a verdict whose "may like" names the target with probability ``agree`` (else a random
    candidate) and whose "may not like" names another candidate; a fifth of the rows have no explanation."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, pois, generator=g)
    candidates = logits.topk(k, -1).indices
    slot = torch.multinomial(torch.softmax(logits.gather(1, candidates), -1), 1, generator=g).squeeze(1)
    liked = torch.where(torch.rand(n, generator=g) < agree, slot, torch.randint(k, (n,), generator=g))
    disliked = (liked + torch.randint(1, k, (n,), generator=g)) % k
    z = torch.zeros(n, k, 2)
    z[torch.arange(n), liked, 0] = 1.0
    z[torch.arange(n), disliked, 1] = 1.0
    present = (torch.rand(n, generator=g) < 0.8)[:, None].expand(n, k)
    return logits, candidates, slot, z, present


def fitted_reranker(n: int = 600, k: int = 5) -> VerdictReranker:
    logits, candidates, slot, z, present = verdict_rows(n, k)
    head = VerdictReranker(k, folds=2)
    phi = head.verdict_features(logits, candidates, z, present)
    head.fit(phi, logits.gather(1, candidates), slot, torch.arange(n), ridge=1e-3)
    return head


def test_the_verdict_reranker_starts_as_the_identity_and_is_cross_fitted():
    logits, candidates, slot, z, present = verdict_rows(50)
    head = VerdictReranker(5, folds=2)
    rescored, bonus = head(logits, candidates, z, present)
    torch.testing.assert_close(rescored, logits, rtol=0, atol=0)
    assert bonus.abs().max() == 0 and not list(head.parameters())  # fitted, never trained by an optimizer
    head = fitted_reranker()
    assert not torch.allclose(head.weight[0], head.weight[1])  # each fold's weights come from the other fold
    ids = torch.arange(50)
    _, by_fold = head(logits, candidates, z, present, crossfit_ids=ids)
    phi = head.verdict_features(logits, candidates, z, present)
    want = (phi * head.weight[ids % 2][:, None, :]).sum(-1)
    torch.testing.assert_close(by_fold, want - want.min(1, keepdim=True).values)
    _, unseen = head(logits, candidates, z, present)  # samples never fitted on: the all-rows weights
    want = phi @ head.weight[2]
    torch.testing.assert_close(unseen, want - want.min(1, keepdim=True).values)


def test_a_verdict_naming_the_target_raises_its_rank_on_a_fitted_reranker():
    head = fitted_reranker()
    assert head.liked_bonus() > 1.0  # "may like" names the target 60% of the time: worth over a logit
    logits, candidates, slot, z, present = verdict_rows(200, seed=1)
    third = candidates[:, 2]  # a target at the third rank
    named = torch.zeros_like(z)
    named[:, 2, 0] = 1.0  # "may like" names it
    rank = {}
    for name, (zz, on) in {"named": (named, torch.ones_like(present)),
                           "null": (named, torch.zeros_like(present))}.items():
        rescored, _ = head(logits, candidates, zz, on)
        rank[name] = ranks_from_scores(rescored, third)
    plain = ranks_from_scores(logits, third)
    assert (plain == 3).all() and (rank["named"] < rank["null"]).float().mean() > 0.9
    assert (rank["named"] == 1).float().mean() > 0.5
    rescored, _ = head(logits, candidates, named, torch.ones_like(present))
    # no candidate falls below a POI outside the K
    outside = rescored.scatter(1, candidates, float("-inf")).max(1).values
    assert (rescored.gather(1, candidates).min(1).values >= outside).all()
