"""The recommender that reads explanations: the backbone and one fusion head, chosen once at construction.

The three heads share one interface (``fuse``), so nothing downstream asks which granularity or encoder
a run uses:

- ``UserFusion``: the sample's one explanation refines the user state (gated residual); the refined
  state scores every POI;
- ``CandidateFusion``: one explanation per top-K candidate re-ranks that candidate;
- ``VerdictFusion``: the sample's one explanation, read as a (liked, disliked) verdict on each of its K
  candidates, re-ranks them with weights fitted in closed form (``fit_verdicts``; also in the control,
  with the null verdict, so both have the same fusion).

Each head returns the logits with what the training log shows about it (``Fused.diagnostics``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recpie.components.fusion import CandidateReranker, GatedFusion, VerdictReranker
from recpie.evaluation.ranking import ranks_from_scores
from recpie.evaluation.verdicts import verdict_pairs

Batch = dict[str, torch.Tensor]


@dataclass
class Fused:
    """Scores over all POIs with the explanations fused in, and the head's scalars for the training log."""

    logits: torch.Tensor
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


class UserFusion(GatedFusion):
    """One explanation per sample (slot 0) refines the user state; candidates are not needed."""

    per_candidate, reranks = False, False

    def fuse(self, backbone: nn.Module, batch: Batch, h, z, present, candidates=None, crossfit_ids=None) -> Fused:
        refined, gate = self(h, z[:, 0], present[:, 0])
        return Fused(backbone.score(refined, batch), {"fusion/gate_mean": gate.detach().mean()})


class CandidateFusion(CandidateReranker):
    """One explanation per candidate (slot k: candidate k) re-ranks the top-K it is about; without
    ``candidates`` the scores are the backbone's own."""

    per_candidate, reranks = True, True

    def fuse(self, backbone: nn.Module, batch: Batch, h, z, present, candidates=None, crossfit_ids=None) -> Fused:
        logits = backbone.score(h, batch)
        if candidates is None:
            return Fused(logits)
        return Fused(self(logits, h, candidates, z, present)[0])


class VerdictFusion(VerdictReranker):
    """The sample's one explanation (z [B,1,2K]) is a (liked, disliked) verdict on each of its K candidates;
    ``crossfit_ids``: the sample ids of rows the fit may have seen (fusion.VerdictReranker: cross-fitting)."""

    per_candidate, reranks = False, True

    def fuse(self, backbone: nn.Module, batch: Batch, h, z, present, candidates=None, crossfit_ids=None) -> Fused:
        logits = backbone.score(h, batch)
        if candidates is None:
            return Fused(logits)
        k = candidates.shape[1]
        z, present = verdict_pairs(z, k), present.expand(-1, k)
        logits, bonus = self(logits, candidates, z, present, crossfit_ids)
        # a null row's stored z is not a verdict: only present rows count as liked or unnamed
        liked, unnamed = (z[..., 0] > 0) & present, (z.sum(-1) == 0) & present
        diagnostics = {}
        if liked.any() and unnamed.any():  # how much the recommender trusts "may like" over the unnamed candidates
            diagnostics["fusion/liked_bonus"] = (bonus[liked].mean() - bonus[unnamed].mean()).detach()
        return Fused(logits, diagnostics)


class ExplainedRecommender(nn.Module):
    """The backbone and its fusion head. Explanations come as z [B, slots, explanation_dim] with present
    [B, slots] (False: the head's learned null explanation); re-ranking heads need the candidates [B, K]
    the explanations are about."""

    def __init__(self, backbone: nn.Module, fusion: UserFusion | CandidateFusion | VerdictFusion, explanation_dim: int,
                 num_candidates: int):
        super().__init__()
        self.backbone, self.fusion = backbone, fusion
        self.explanation_dim, self.num_candidates = explanation_dim, num_candidates

    @classmethod
    def build(cls, backbone: nn.Module, granularity: str, verdicts: bool, explanation_dim: int,
              num_candidates: int, gate_bias: float, fusion_folds: int = 2) -> ExplainedRecommender:
        """The head for explainer.granularity / a verdict encoder (``explanation_dim`` is then 2K;
        ``fusion_folds``: its cross-fitting folds)."""
        d = backbone.hidden_size
        if verdicts:
            fusion = VerdictFusion(num_candidates, fusion_folds)
        elif granularity == "candidate":
            fusion = CandidateFusion(d, explanation_dim)
        else:
            fusion = UserFusion(d, explanation_dim, gate_bias)
        return cls(backbone, fusion, explanation_dim, num_candidates)

    @property
    def slots(self) -> int:
        """Explanations per sample: one per candidate, or one about the sample."""
        return self.num_candidates if self.fusion.per_candidate else 1

    @property
    def per_candidate(self) -> bool:
        return self.fusion.per_candidate

    @property
    def reranks(self) -> bool:
        """Whether the head needs the candidates its explanations are about."""
        return self.fusion.reranks

    @staticmethod
    def target(batch: Batch) -> torch.Tensor:
        """The true next POI of each sample."""
        return batch["target"][:, -1]

    def user_state(self, batch: Batch) -> torch.Tensor:
        return self.backbone.user_state(batch)

    def null_explanations(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, present) of "no explanation" for every slot of the batch of user states h."""
        b = h.shape[0]
        return (torch.zeros(b, self.slots, self.explanation_dim, device=h.device),
                torch.zeros(b, self.slots, dtype=torch.bool, device=h.device))

    @property
    def fitted(self) -> bool:
        """Whether the head's weights come from a closed-form fit (``fit_verdicts``), not an optimizer."""
        return isinstance(self.fusion, VerdictFusion)

    def fuse(self, batch: Batch, h, z, present, candidates=None, crossfit_ids=None) -> Fused:
        """Logits with the explanations fused in; crossfit_ids [B]: the sample ids of train rows (a fitted
        head scores a row by the weights fitted without it), None for rows never fitted on."""
        return self.fusion.fuse(self.backbone, batch, h, z, present, candidates, crossfit_ids)

    def logits(self, batch: Batch, h, z, present, candidates=None, crossfit_ids=None) -> torch.Tensor:
        return self.fuse(batch, h, z, present, candidates, crossfit_ids).logits

    def top(self, batch: Batch, h: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidates, their logits), each [B, K]: the recommender's own top-K with the null explanation,
        what a prompt shows (explainer.show_scores: with each one's share of their softmax)."""
        top = self.logits(batch, h, *self.null_explanations(h)).topk(k or self.num_candidates, dim=-1)
        return top.indices, top.values

    def candidates(self, batch: Batch, h: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The recommender's own top-K with the null explanation: what a prompt shows."""
        return self.top(batch, h, k)[0]

    @contextmanager
    def predicting(self):
        """The recommender as it predicts (no dropout, no grad), for prompts, candidates and rewards."""
        modes = [(m, m.training) for m in (self.backbone, self.fusion)]
        for m, _ in modes:
            m.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for m, training in modes:
                m.train(training)

    def predict(self, batch: Batch, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, top-k candidates; k defaults to num_candidates) as the recommender predicts before any explanation."""
        return self.predict_top(batch, k)[:2]

    def predict_top(self, batch: Batch, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, top-k candidates, their logits) as the recommender predicts before any explanation."""
        with self.predicting():
            h = self.user_state(batch)
            return h, *self.top(batch, h, k)

    def target_gain(self, batch: Batch, h, candidates, rows: torch.Tensor, slot: torch.Tensor,
                    z: torch.Tensor, metric: str = "log_likelihood") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the target's value with this explanation minus with the null one, null value, explained value) per
        row: row r puts explanation z[r] into slot ``slot[r]`` of sample ``rows[r]``, the other slots stay null.
        ``metric``: "log_likelihood" (log p(target) over all POIs) or "reciprocal_rank" (1 / the target's rank
        over all POIs, ties counted half as the evaluation does: the metric the runs report).

        A re-scored candidate that is not the target still moves the target's probability through the
        softmax normaliser, so the log-likelihood gain is defined (and small) when the target is not among the
        top-K; its rank moves only where a re-scored candidate crosses it."""
        with self.predicting():
            hb, bb, cand = h[rows], {k: v[rows] for k, v in batch.items()}, candidates[rows]
            zeros, none = self.null_explanations(hb)
            target = self.target(bb)
            zz, present = zeros.clone(), none.clone()
            zz[torch.arange(len(rows)), slot] = z
            present[torch.arange(len(rows)), slot] = True
            null_v, with_v = (target_value(self.logits(bb, hb, e, p, cand), target, metric)
                              for e, p in ((zeros, none), (zz, present)))
        return with_v - null_v, null_v, with_v

    @torch.no_grad()
    def fit_verdicts(self, batches, ridge: float) -> dict[str, float]:
        """Fit the verdict head's weights in closed form (fusion.VerdictReranker.fit_explained, cross-fitted)
        on ``batches``: an iterable of (batch, z, present, candidates, ids), each sample with the candidates
        its explanation is about. Returns what the training log shows."""
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in ("logits", "z", "present", "slot", "ids")}
        with self.predicting():
            for batch, z, present, candidates, ids in batches:
                hit = candidates == self.target(batch)[:, None]
                values = (self.backbone.score(self.user_state(batch), batch).gather(1, candidates),
                          verdict_pairs(z, candidates.shape[1]), present[:, 0],
                          torch.where(hit.any(1), hit.float().argmax(1), -1), ids)
                for name, value in zip(parts, values, strict=True):
                    parts[name].append(value.cpu())
        if not parts["ids"]:  # no samples to fit on (e.g. nothing refreshed yet): the weights stay
            return {"fusion/fit_rows": 0.0, "fusion/fit_explained_rows": 0.0}
        return self.fusion.fit_explained(*(torch.cat(v) for v in parts.values()), ridge=ridge)


def target_value(logits: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor:
    """[B] the target's log-probability over all POIs (metric "log_likelihood") or its reciprocal rank
    ("reciprocal_rank": ``ranks_from_scores``' fractional rank, as evaluated) under ``logits`` [B, P]."""
    if metric == "log_likelihood":
        return F.log_softmax(logits, -1).gather(1, target[:, None]).squeeze(1)
    if metric == "reciprocal_rank":
        return (1.0 / ranks_from_scores(logits, target)).to(logits.dtype)
    raise ValueError(f"unknown reward metric {metric!r}: log_likelihood or reciprocal_rank")
