"""Writing explanations: prompts, greedy explanations through the store and the disk cache, their encoding,
the per-cycle refresh of train explanations and, under DDP, their exchange between ranks.

The writer owns the ``ExplanationStore``. What it needs from the Lightning module that runs it (the
device, the rank, logging) comes through ``WriterHost``, so it runs as well under a plain test double.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Protocol

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.explained_recommender import Batch, ExplainedRecommender
from recpie.data.types import CheckinData
from recpie.explainer.choice import choice_positions
from recpie.explainer.explainer import Explainer
from recpie.explainer.parse import parse
from recpie.explainer.prompts import build_prompt
from recpie.explainer.store import ExplanationStore
from recpie.explainer.warmup import templated_choice

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class WriterHost(Protocol):
    """The Lightning module running the writer (or a test double)."""

    device: torch.device
    global_rank: int
    current_epoch: int

    @property
    def world_size(self) -> int: ...

    def log(self, name: str, value, **kwargs) -> None: ...


def progress(iterable, desc: str, rank: int):
    """A progress bar on rank 0 for the explainer's phases (Lightning's bar covers the rest)."""
    return tqdm(iterable, desc=desc, leave=False, disable=rank != 0)


class ExplanationWriter:
    """Explanations of (split, sample) by the current policy, kept in ``store`` (one per slot)."""

    def __init__(self, cfg: DictConfig, data: CheckinData, recommender: ExplainedRecommender,
                 explainer: Explainer | None, cache_tag: str, host: WriterHost):
        """cache_tag: the run, seed and config fingerprint the disk cache keys start with (policy versions of
        different runs are different policies). ``explainer`` None (the control): nothing is ever written."""
        self.cfg, self.data, self.recommender, self.explainer = cfg, data, recommender, explainer
        self.cache_tag, self.host = cache_tag, host
        self.generation_batch = cfg.recpie.generation_batch
        self.datasets = {s: SampleDataset(data, s, cfg.data.max_len, cfg.data.history_summary) for s in SPLITS}
        self.store = ExplanationStore({s: len(ds) for s, ds in self.datasets.items()}, recommender.slots,
                                      recommender.explanation_dim)

    @property
    def slots(self) -> int:
        return self.recommender.slots

    def batch(self, split: str, ids: torch.Tensor) -> Batch:
        """The recommender's input rows of samples ``ids``, on the host's device."""
        rows = self.datasets[split].__getitems__(ids.tolist())
        return {k: v.to(self.host.device) for k, v in to_tensors(rows).items()}

    def focus(self, candidates: list[int]) -> list[int | None]:
        """What each slot's explanation is about: every candidate, or the sample."""
        return candidates if self.recommender.per_candidate else [None]

    def prompts(self, split: str, ids: torch.Tensor, candidates: torch.Tensor, logits: torch.Tensor | None = None
                ) -> list[str]:
        """One prompt per (sample, slot), sample-major; ``logits`` [n, K]: the candidates' logits (the prompt
        states their shares with explainer.show_scores, which needs them)."""
        prompts = []
        rows = logits.tolist() if logits is not None else [None] * len(ids)
        for i, cands, row in zip(ids.tolist(), candidates.tolist(), rows, strict=True):
            prompts += [build_prompt(self.data, split, i, cands, self.cfg.explainer, focus=f, logits=row)
                        for f in self.focus(cands)]
        return prompts

    def cache_key(self, split: str, i: int, slot: int, prompt: str) -> str:
        """A cached text is reused only for the very prompt it was generated from: the key ends in the
        prompt's hash, whose candidates move with the recommender."""
        return f"{self.cache_tag}/{split}/{i}/{slot}/{hashlib.sha1(prompt.encode()).hexdigest()[:12]}"

    def explain(self, split: str, ids: torch.Tensor, batch: Batch, version: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy explanations of samples ``ids`` by policy ``version``, for those the store lacks (the disk
        cache answers prompts explained before); returns (h, candidates) of the batch for reuse."""
        h, candidates, logits = self.recommender.predict_top(batch)
        scored = logits if self.cfg.explainer.show_scores else None  # what the prompt states beside the candidates
        todo = self.store.missing(split, ids, version, candidates, scored)
        if len(todo) and self.explainer is not None:
            pick = torch.isin(ids, todo)
            prompts = self.prompts(split, ids[pick], candidates[pick], logits[pick])
            slots = [(i, s) for i in ids[pick].tolist() for s in range(self.slots)]
            keys = [self.cache_key(split, i, s, p) for (i, s), p in zip(slots, prompts, strict=True)]
            states = h[pick].repeat_interleave(self.slots, 0)
            rows = list(zip(ids[pick].tolist(), candidates[pick].tolist(), logits[pick].tolist(), strict=True))

            def explain(sl: slice) -> list[str]:
                def write(todo: list[int]) -> list[str]:  # a K-way choice: only the prompts not cached
                    return self.chosen_texts(split, [rows[sl][t] for t in todo], [prompts[sl][t] for t in todo],
                                             states[sl][todo])
                if self.k_way:
                    return self.explainer.explain(prompts[sl], keys[sl], states[sl], version, write=write)
                return self.explainer.explain(prompts[sl], keys[sl], states[sl], version)

            texts = self.in_batches(len(prompts), f"explaining {len(prompts)} {split} prompts (batches)", explain)
            z, present = self.encode(texts, candidates[pick].repeat_interleave(self.slots, 0))
            grouped = [texts[k * self.slots:(k + 1) * self.slots] for k in range(len(todo))]
            self.store.put(split, ids[pick], z.view(len(todo), self.slots, -1), grouped, version,
                           candidates[pick].tolist(), present.view(len(todo), self.slots), logits[pick].tolist())
        return h, candidates

    def in_batches(self, n: int, desc: str, generate) -> list[str]:
        """The texts of ``n`` prompts, ``generate(slice)`` of recpie.generation_batch prompts at a time."""
        texts = []
        for start in progress(range(0, n, self.generation_batch), desc, self.host.global_rank):
            texts += generate(slice(start, start + self.generation_batch))
        return texts

    def drafts(self, split: str, ids: torch.Tensor, batch: Batch) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Greedy explanations of samples ``ids`` (their ``batch``) by the current policy, from the prompts
        ``explain`` writes, in the same batches, but outside the store and the disk cache: the warm-up
        curve's texts, by an intermediate policy that no later explanation may find. Returns (texts, one per
        (sample, slot); candidates [n, K]; their logits [n, K])."""
        h, candidates, logits = self.recommender.predict_top(batch)
        prompts = self.prompts(split, ids, candidates, logits)
        states = h.repeat_interleave(self.slots, 0)
        rows = list(zip(ids.tolist(), candidates.tolist(), logits.tolist(), strict=True))

        def draft(sl: slice) -> list[str]:
            if self.k_way:
                return self.chosen_texts(split, rows[sl], prompts[sl], states[sl])
            return self.explainer.generate(prompts[sl], states[sl], sample=False).texts

        texts = self.in_batches(len(prompts), f"drafting {len(prompts)} {split} prompts (batches)", draft)
        return texts, candidates, logits

    @property
    def k_way(self) -> bool:
        """explainer.choice=scored or readout: texts are the templates of the explainer's K-way choice, never
        decoded."""
        return self.cfg.explainer.choice != "generated"

    def chosen_texts(self, split: str, rows: list[tuple[int, list[int], list[float]]], prompts: list[str],
                     states: torch.Tensor | None) -> list[str]:
        """explainer.choice=scored/readout: per (sample id, its candidates, their logits) and its prompt, the
        templated explanation of the explainer's greedy choice (explainer/choice.py): "may like" its most
        likely candidate where it beats candidate 1 by more than explainer.depart_margin (else candidate 1),
        "may not like" its least likely one of another label."""
        labels = [[self.data.catalogue.label(p) for p in cands] for _, cands, _ in rows]
        like, dislike = choice_positions(self.explainer.choice_logprobs(prompts, labels, states), labels,
                                         self.cfg.explainer.depart_margin)
        return self.choice_texts(split, rows, like, dislike)

    def choice_texts(self, split: str, rows: list[tuple[int, list[int], list[float]]], like: list[int],
                     dislike: list[int]) -> list[str]:
        """The templated explanation of each row (sample id, its candidates, their logits) liking the
        candidate at position ``like`` and disliking the one at ``dislike`` (the greedy choice, or PPO's draw)."""
        return [templated_choice(self.data, split, i, cands, self.cfg.explainer, like=cands[a], dislike=cands[b],
                                 logits=z).text
                for (i, cands, z), a, b in zip(rows, like, dislike, strict=True)]

    def labels(self, candidates: torch.Tensor) -> list[list[str]]:
        """The names a prompt shows for each row of candidates [n,K] (what a text names them by)."""
        return [[self.data.catalogue.label(p) for p in row] for row in candidates.tolist()]

    def encode(self, texts: list[str], candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [n, dz], present [n]) of explanation texts on the host's device; ``candidates`` [n,K]:
        what each text's prompt showed (the verdict encoder reads their labels to tell which candidate a part
        names). present is False where a verdict encoder cannot read the text (unparseable): the recommender
        then reads the null explanation, not a verdict that names no candidate."""
        z = self.explainer.encode(texts, self.labels(candidates)).to(self.host.device)
        present = torch.ones(len(texts), dtype=torch.bool)
        if self.cfg.explainer.encoder == "verdict":
            present = torch.tensor([parse(t).ok for t in texts], dtype=torch.bool)
        return z, present.to(self.host.device)

    def refresh(self, ids: torch.Tensor, version: int) -> None:
        """Fresh greedy explanations of train samples ``ids`` (this rank's share of the cycle's refresh),
        then every rank gets every rank's."""
        began = time.perf_counter()
        for start in range(0, len(ids), self.generation_batch):
            chunk = ids[start:start + self.generation_batch]
            self.explain("train", chunk, self.batch("train", chunk), version)
        self.share_train_explanations(ids, version)
        elapsed = time.perf_counter() - began
        log.info("cycle %d: %d train samples explained in %.1f s", self.host.current_epoch, len(ids), elapsed)
        self.host.log("speed/refresh_s", elapsed, on_epoch=True)

    def share_train_explanations(self, ids: torch.Tensor, version: int) -> None:
        """Under DDP each rank explained its own samples; every rank (and the checkpoint) gets them all."""
        if self.host.world_size == 1:
            return
        gathered = [None] * self.host.world_size
        store = self.store
        logits = [store.logits["train"].get(i) for i in ids.tolist()]
        payload = (ids, store.z["train"][ids], [store.texts["train"][i] for i in ids.tolist()],
                   [store.candidates["train"][i] for i in ids.tolist()], store.present["train"][ids],
                   None if any(row is None for row in logits) else logits)
        torch.distributed.all_gather_object(gathered, payload)
        for other_ids, z, texts, candidates, present, other_logits in gathered:
            store.put("train", other_ids, z, texts, version, candidates, present, other_logits)
