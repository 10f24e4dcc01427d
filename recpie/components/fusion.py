"""Feeding an explanation back into the recommender.

``user`` granularity refines the user state with one explanation per sample (gated residual); the
refined state scores every POI. ``candidate`` granularity re-ranks the recommender's top-K with one
explanation per (sample, candidate). Both start as the identity (closed gate, zero bonus), and both have
a learned *null explanation*, so "without explanation" is always defined and trained.

``VerdictReranker`` re-ranks the top-K by what one explanation says about each candidate (liked,
disliked, unnamed, or no explanation at all): a linear score of a few features per candidate, its weights
fitted in closed form (``fit_listwise``: the listwise softmax over the K, convex, solved by LBFGS), not by
Adam (issue 22: Adam moves a weight by about its learning rate per step, so a head trained from zero at
lr 1e-4 could not reach 0.01 logits in 80 steps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VERDICT_CLASSES = ("liked", "disliked", "unnamed", "null")  # what an explanation says about a candidate


class GatedFusion(nn.Module):
    """h' = h + g * W LN(z), g = sigmoid(u . [h, W LN(z)] + b) with b negative at the start."""

    def __init__(self, state_dim: int, explanation_dim: int, gate_bias: float = -2.0):
        super().__init__()
        self.norm = nn.LayerNorm(explanation_dim)
        self.proj = nn.Linear(explanation_dim, state_dim)
        # W = 0: the identity at the start. A random W moved every explained state by ~0.5 (|h| ~ 8) through
        # the initial gate: noise the recommender had to unlearn (demo, RecPIE - control MRR: -0.025 -> -0.001)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.gate = nn.Linear(2 * state_dim, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, gate_bias)
        self.null = nn.Parameter(torch.zeros(explanation_dim))

    def forward(self, h: torch.Tensor, z: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B,d], z [B,dz], present [B] bool (False: use the null explanation). Returns h', gate [B]."""
        z = torch.where(present[:, None], z.to(h.dtype), self.null.to(h.dtype))
        delta = self.proj(self.norm(z))
        gate = torch.sigmoid(self.gate(torch.cat([h, delta], dim=-1))).squeeze(-1)
        return h + gate[:, None] * delta, gate


class CandidateReranker(nn.Module):
    """Adds bonus_k = v . tanh(A [h, LN(z_k)]) to the logit of each top-K candidate k (v starts at 0)."""

    def __init__(self, state_dim: int, explanation_dim: int, hidden: int = 128):
        super().__init__()
        self.norm = nn.LayerNorm(explanation_dim)
        self.inner = nn.Linear(state_dim + explanation_dim, hidden)
        self.outer = nn.Linear(hidden, 1)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)
        self.null = nn.Parameter(torch.zeros(explanation_dim))

    def forward(
        self, logits: torch.Tensor, h: torch.Tensor, candidates: torch.Tensor, z: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B,P], h [B,d], candidates [B,K], z [B,K,dz], present [B,K]. Returns re-scored logits, bonus."""
        z = torch.where(present[..., None], z.to(h.dtype), self.null.to(h.dtype))
        hk = h[:, None, :].expand(-1, candidates.shape[1], -1)
        bonus = self.outer(torch.tanh(self.inner(torch.cat([hk, self.norm(z)], dim=-1)))).squeeze(-1)
        return logits.scatter_add(1, candidates, bonus.to(logits.dtype)), bonus


def fit_listwise(x: torch.Tensor, slot: torch.Tensor, offset: torch.Tensor | None = None, ridge: float = 1e-4,
                 steps: int = 300) -> torch.Tensor:
    """The weights w [F] minimising  mean_i CE(softmax_k(offset_ik + x_ik . w), slot_i) + ridge |w|^2  over
    rows i with their K candidates' features x [n, K, F] and the target's position ``slot`` [n] among them
    (``offset`` [n, K]: scores w adds to, e.g. the recommender's logits; default 0).

    A multinomial logistic regression: convex, strictly so with ridge > 0, so LBFGS (strong Wolfe line
    search, float64) reaches the one optimum that a long gradient descent also reaches (tests/test_fusion.py);
    a few hundred rows and a dozen weights take well under a second. No rows: w = 0."""
    w = torch.zeros(x.shape[-1], dtype=torch.float64, requires_grad=True)
    if len(x) == 0:
        return w.detach().float()
    x64, target = x.detach().double(), slot.long()
    base = torch.zeros(x.shape[:2], dtype=torch.float64) if offset is None else offset.detach().double()
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(base + x64 @ w, target) + ridge * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # callers fit under no_grad (the fusion's fit, a recommender predicting)
        opt.step(closure)
    return w.detach().float()


class VerdictReranker(nn.Module):
    """Adds bonus_k = w . phi_k to the logit of each top-K candidate k, then lowers the K bonuses of a sample
    by their smallest, so no candidate falls below a POI outside the K (the shift does not change the order
    among the K, nor the listwise fit).

    phi_k (``verdict_features``): the candidate's rank (one-hot over the K), its logit margin to the top-1,
    one value per verdict class (liked / disliked / unnamed / null: its share of "may like", its share of
    "may not like", what is left of a present explanation, and 1 without an explanation), and each class
    times the rank (centred: -0.5 at the top, +0.5 at the K-th), so "may like" can be trusted differently at
    rank 1 and rank K. No LayerNorm: a share is a number, not a direction. The weights are buffers, fitted by
    ``fit`` (``fit_listwise``), never by an optimizer; all 0 (the identity) until the first fit.

    Cross-fitting: ``fit`` fits one weight row per fold of the fitted samples' ids (``folds`` folds, by
    id modulo ``folds``) on the other folds' rows, and one on all rows. A sample that was in the fit is
    scored by the weights of its own fold (``crossfit_ids``), so the fit never scores its own rows; any
    other sample (val, test, a rollout) by the weights fitted on all rows."""

    def __init__(self, num_candidates: int, folds: int = 2):
        super().__init__()
        if folds < 2:
            raise ValueError(f"recpie.fusion_folds={folds}: cross-fitting needs at least 2 folds")
        self.k, self.folds = num_candidates, folds
        self.register_buffer("weight", torch.zeros(folds + 1, self.num_features))

    @property
    def num_features(self) -> int:
        return self.k + 1 + 2 * len(VERDICT_CLASSES)

    def feature_index(self, name: str) -> int:
        """Where a verdict class's value (``name`` in VERDICT_CLASSES) sits in phi."""
        return self.k + 1 + VERDICT_CLASSES.index(name)

    def verdict_features(self, logits: torch.Tensor, candidates: torch.Tensor, z: torch.Tensor,
                         present: torch.Tensor) -> torch.Tensor:
        """phi [B, K, F] from logits [B, P] over all POIs, candidates [B, K] (the order the explanation's
        prompt showed), z [B, K, 2] ("may like", "may not like" share per candidate) and present [B, K]."""
        b, k = candidates.shape
        cand = logits.gather(1, candidates)
        margin = (cand - cand[:, :1])[..., None]
        rank = torch.eye(k, dtype=cand.dtype, device=cand.device).expand(b, k, k)
        on = present.to(cand.dtype)[..., None]
        liked, disliked = z[..., :1].to(cand.dtype) * on, z[..., 1:].to(cand.dtype) * on
        classes = torch.cat([liked, disliked, on * (1 - liked - disliked).clamp(min=0), 1 - on], -1)
        centred = (torch.arange(k, dtype=cand.dtype, device=cand.device) / max(k - 1, 1) - 0.5)[None, :, None]
        return torch.cat([rank, margin, classes, classes * centred], -1)

    def forward(self, logits: torch.Tensor, candidates: torch.Tensor, z: torch.Tensor, present: torch.Tensor,
                crossfit_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B,P], candidates [B,K], z [B,K,2], present [B,K]; crossfit_ids [B]: the samples' ids when they
        may have been in the fit (train rows), else None. Returns the re-scored logits and the bonus [B,K]."""
        phi = self.verdict_features(logits, candidates, z, present)
        if crossfit_ids is None:
            w = self.weight[self.folds].to(phi.dtype).expand(len(phi), -1)
        else:
            w = self.weight[crossfit_ids.to(self.weight.device) % self.folds].to(phi.dtype)
        bonus = (phi * w[:, None, :]).sum(-1)
        bonus = bonus - bonus.min(1, keepdim=True).values.detach()
        return logits.scatter_add(1, candidates, bonus.to(logits.dtype)), bonus

    @torch.no_grad()
    def fit(self, phi: torch.Tensor, offset: torch.Tensor, slot: torch.Tensor, ids: torch.Tensor,
            ridge: float) -> None:
        """Fit every weight row on rows phi [n, K, F] (with their logits ``offset`` [n, K] and the target's
        slot [n], rows whose target is among the K) of samples ``ids`` [n]: row f on the samples of the other
        folds, the last row on all."""
        fold = ids.cpu() % self.folds
        phi, offset, slot = phi.cpu(), offset.cpu(), slot.cpu()
        for f in range(self.folds + 1):
            use = fold != f  # f == folds: every row
            self.weight[f] = fit_listwise(phi[use], slot[use], offset[use], ridge).to(self.weight.device)

    @torch.no_grad()
    def fit_explained(self, logits: torch.Tensor, z: torch.Tensor, present: torch.Tensor, slot: torch.Tensor,
                      ids: torch.Tensor, ridge: float) -> dict[str, float]:
        """``fit`` on samples given by their K candidates' logits [n, K] (in the order the prompt showed them),
        verdicts z [n, K, 2], present [n] (False: no explanation), the target's position slot [n] (-1: not
        among the K; such rows say nothing about the order of the K and are left out) and ids [n]: each row
        once with its explanation (where present) and once with the null one, so the null path (the control,
        null dropout, unexplained samples) is fitted too. Returns the fit's summary for the training log."""
        n, k = logits.shape
        logits, z, present, slot, ids = (t.cpu() for t in (logits, z, present, slot, ids))
        cand = torch.arange(k).expand(n, k)
        inside = slot >= 0
        own = inside & present
        on = present[:, None].expand(n, k)
        phi = torch.cat([self.verdict_features(logits[own], cand[own], z[own], on[own]),
                         self.verdict_features(logits[inside], cand[inside], z[inside], torch.zeros_like(on[inside]))])
        self.fit(phi, torch.cat([logits[own], logits[inside]]), torch.cat([slot[own], slot[inside]]),
                 torch.cat([ids[own], ids[inside]]), ridge)
        return {"fusion/fit_rows": float(len(phi)), "fusion/fit_explained_rows": float(own.sum()),
                "fusion/fitted_liked_bonus": self.liked_bonus().item(),
                **{f"fusion/fitted_{c}": self.class_value(c).item() for c in ("liked", "disliked", "unnamed")}}

    def class_value(self, name: str) -> torch.Tensor:
        """The all-rows fit's value of a verdict class at the middle rank, in logits."""
        return self.weight[self.folds, self.feature_index(name)]

    def liked_bonus(self) -> torch.Tensor:
        """How much more the fitted fusion adds for "may like" than for an unnamed candidate (middle rank)."""
        return self.class_value("liked") - self.class_value("unnamed")
