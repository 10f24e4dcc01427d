"""The tokens an explanation of this data can use: the output head of explainer.vocabulary=data.

Gemma's head has 262k rows; on a CPU it was most of every decoding step and, as float32 logits, most of
the memory of a log-prob pass. An explanation restates what its prompt shows (places, categories, times,
distances, the templates' phrases), so the head keeps the tokens of prompts and templated explanations of
a seeded sample of train samples, every POI label and category, every single printable character (any
word can still be spelt) and EOS. With explainer.show_scores the prompts state seeded made-up scores (no
recommender exists yet) and every printed share from "<0.01%" to "100%" is added. Deterministic in (data,
cfg): a checkpoint's policy is rebuilt exactly.
"""
from __future__ import annotations

import string

import numpy as np
import torch

from recpie.data.types import CheckinData
from recpie.explainer.prompts import FEW_SHOT, FEW_SHOT_SCORED, build_prompt, share_text
from recpie.explainer.warmup import templated_explanation


def vocabulary_texts(data: CheckinData, cfg, samples: int = 256, seed: int = 0) -> list[str]:
    """Prompts and templated explanations (the last distinct history places as candidates), labels, characters."""
    rng = np.random.default_rng(seed)
    texts = [FEW_SHOT, *string.printable]
    scores = np.random.default_rng([seed, 1])  # made-up logits of the prompts with show_scores
    if cfg.show_scores:
        every = [0.0, 100.0] + [round(m * 10.0 ** e, 3) for e in range(-3, 1) for m in range(10, 100)]
        texts += [FEW_SHOT_SCORED, ", ".join(f"recommender {share_text(s)}" for s in every)]
    split = data.splits["train"]
    for i in rng.choice(len(split), min(samples, len(split)), replace=False).tolist():
        places = data.poi[data.history("train", i)][::-1]
        candidates = list(dict.fromkeys(places.tolist()))[: cfg.num_candidates]
        logits = np.sort(scores.normal(0.0, 2.0, len(candidates)))[::-1] if cfg.show_scores else None
        texts += [build_prompt(data, "train", i, candidates, cfg, logits=logits),
                  templated_explanation(data, "train", i, candidates, cfg, logits=logits)]
    labels = [data.catalogue.label(p) for p in range(data.num_pois)]
    return texts + [" ".join(labels), " ".join(data.catalogue.category_names)]


def data_vocabulary(tok, data: CheckinData, cfg) -> torch.Tensor:
    """Sorted unique token ids (int64) of `vocabulary_texts`, plus EOS."""
    ids = {tok.eos_token_id}
    for row in tok(vocabulary_texts(data, cfg), add_special_tokens=False).input_ids:
        ids.update(row)
    return torch.tensor(sorted(ids), dtype=torch.long)
