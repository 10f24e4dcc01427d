"""The tokens an explanation of this data can use: the output head of explainer.vocabulary=data.

Gemma's head has 262k rows; on a CPU it was most of every decoding step and, as float32 logits, most of
the memory of a log-prob pass. An explanation restates what its prompt shows (places, categories, times,
distances, the templates' phrases), so the head keeps the tokens of prompts and templated explanations of
a seeded sample of train samples, every POI label and category, every single printable character (any
word can still be spelt) and EOS. Deterministic in (data, cfg): a checkpoint's policy is rebuilt exactly.
"""
from __future__ import annotations

import string

import numpy as np
import torch

from recpie.data.types import CheckinData
from recpie.explainer.prompts import FEW_SHOT, build_prompt
from recpie.explainer.warmup import templated_explanation


def vocabulary_texts(data: CheckinData, cfg, samples: int = 256, seed: int = 0) -> list[str]:
    """Prompts and templated explanations (the last distinct history places as candidates), labels, characters."""
    rng = np.random.default_rng(seed)
    texts = [FEW_SHOT, *string.printable]
    split = data.splits["train"]
    for i in rng.choice(len(split), min(samples, len(split)), replace=False).tolist():
        places = data.poi[data.history("train", i)][::-1]
        candidates = list(dict.fromkeys(places.tolist()))[: cfg.num_candidates]
        texts += [build_prompt(data, "train", i, candidates, cfg),
                  templated_explanation(data, "train", i, candidates, cfg)]
    labels = [data.catalogue.label(p) for p in range(data.num_pois)]
    return texts + [" ".join(labels), " ".join(data.catalogue.category_names)]


def data_vocabulary(tok, data: CheckinData, cfg) -> torch.Tensor:
    """Sorted unique token ids (int64) of `vocabulary_texts`, plus EOS."""
    ids = {tok.eos_token_id}
    for row in tok(vocabulary_texts(data, cfg), add_special_tokens=False).input_ids:
        ids.update(row)
    return torch.tensor(sorted(ids), dtype=torch.long)
