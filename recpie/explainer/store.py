"""Explanations the recommender reads: one embedding (and text) per (split, sample, slot).

A slot is the one explanation of a sample (``user`` granularity) or one of its top-K candidates
(``candidate`` granularity). Train entries are refreshed a budget at a time and persist in checkpoints;
val/test entries are tagged with the policy version that wrote them and the candidates their prompt
showed, so a changed policy or a moved recommender regenerates (the disk cache answers unchanged prompts).
The candidates' logits are kept beside them: with explainer.show_scores the prompt states each candidate's
share of the recommender's probability, so its entry is stale when a printed share moves, and the prompt
of a stored explanation can be built again exactly (``prompts.context``'s ``logits``).
"""
from __future__ import annotations

import torch

from recpie.explainer.prompts import shares


class ExplanationStore:
    """Dense per-split tables: z [n, S, dz] (float16), present [n, S], version [n], texts."""

    def __init__(self, sizes: dict[str, int], slots: int, dim: int) -> None:
        """The tables live on the CPU whatever the default device (Lightning builds the module under
        the accelerator's device context: on a GPU they would otherwise land there)."""
        self.slots, self.dim = slots, dim
        cpu = torch.device("cpu")
        self.z = {s: torch.zeros(n, slots, dim, dtype=torch.float16, device=cpu) for s, n in sizes.items()}
        self.present = {s: torch.zeros(n, slots, dtype=torch.bool, device=cpu) for s, n in sizes.items()}
        self.version = {s: torch.full((n,), -1, dtype=torch.long, device=cpu) for s, n in sizes.items()}
        self.texts: dict[str, dict[int, list[str]]] = {s: {} for s in sizes}
        self.candidates: dict[str, dict[int, list[int]]] = {s: {} for s in sizes}  # what each prompt showed
        self.logits: dict[str, dict[int, list[float]]] = {s: {} for s in sizes}  # the logits of those candidates

    def put(self, split: str, ids: torch.Tensor, z: torch.Tensor, texts: list[list[str]], version: int,
            candidates: list[list[int]], present: torch.Tensor | None = None,
            logits: list[list[float]] | None = None) -> None:
        """z [b, S, dz] for samples ids [b]; texts[i] holds the S texts of sample ids[i]; present [b, S]:
        False for a text the recommender cannot read (it gets the null explanation; default: all read);
        logits[i]: the recommender's logits of candidates[i] (None: not kept)."""
        ids = ids.cpu()
        self.z[split][ids] = z.detach().to("cpu", torch.float16)
        self.present[split][ids] = True if present is None else present.cpu()
        self.version[split][ids] = version
        for r, (i, t, c) in enumerate(zip(ids.tolist(), texts, candidates, strict=True)):
            self.texts[split][i], self.candidates[split][i] = t, c
            if logits is not None:
                self.logits[split][i] = [float(v) for v in logits[r]]
            else:
                self.logits[split].pop(i, None)

    def get(self, split: str, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.cpu()
        return self.z[split][ids].to(device, torch.float32), self.present[split][ids].to(device)

    def shown(self, split: str, ids: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """[b, K] the candidates each sample's stored explanation is about; ``fallback``'s row where none is
        stored (its null explanation then re-scores those). The recommender moves between refreshes, so
        its current top-K is not what a train explanation talks about."""
        stored = [self.candidates[split].get(i) for i in ids.tolist()]
        rows = [r for r, c in enumerate(stored) if c is not None]
        if not rows:
            return fallback
        out = fallback.clone()  # one copy to the device for the whole batch
        out[rows] = torch.tensor([stored[r] for r in rows], dtype=out.dtype).to(out.device)
        return out

    def missing(self, split: str, ids: torch.Tensor, version: int, candidates: torch.Tensor,
                logits: torch.Tensor | None = None) -> torch.Tensor:
        """The ids among ``ids`` without an explanation written by policy ``version`` for the prompt
        showing ``candidates`` (one row per id): a frozen policy still re-explains a sample whose
        recommender candidates have moved since. ``logits`` (with explainer.show_scores, whose prompt
        states each candidate's share): also stale where a printed share (``prompts.shares``) has moved."""
        stored, versions = self.candidates[split], self.version[split][ids.cpu()].tolist()
        stale = [v != version or stored.get(i) != c
                 for i, v, c in zip(ids.tolist(), versions, candidates.tolist(), strict=True)]
        if logits is not None:
            kept = self.logits[split]
            stale = [s or i not in kept or shares(kept[i]) != shares(row)
                     for s, i, row in zip(stale, ids.tolist(), logits.tolist(), strict=True)]
        return ids[torch.tensor(stale, dtype=torch.bool, device=ids.device)]

    def coverage(self, split: str) -> float:
        return self.present[split].any(1).float().mean().item()

    def state_dict(self) -> dict:
        return {"z": self.z, "present": self.present, "version": self.version, "texts": self.texts,
                "candidates": self.candidates, "logits": self.logits}

    def load_state_dict(self, state: dict) -> None:
        """A store saved before the logits were kept loads with none (its prompts stated no score)."""
        self.z, self.present, self.version = state["z"], state["present"], state["version"]
        self.texts, self.candidates = state["texts"], state["candidates"]
        self.logits = state.get("logits", {s: {} for s in self.texts})
