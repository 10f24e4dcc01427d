"""Explanation quality: parse rate, grounding, hallucinated names, length, distinct-n; per-sample JSONL.

Mentions are found by matching the catalogue's own place names (longest first) and category names.
A mention is grounded if that place or category is in the sample's history or candidates. A place is
hallucinated when the text shows something in the prompts' 'Name (Category)' form, with a real
category, whose name is no POI's name in the catalogue.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from recpie.data.types import CheckinData
from recpie.explainer.parse import parse
from recpie.explainer.prompts import Context
from recpie.utils.files import write_or_explain

MIN_NAME = 4  # shorter names ("NY", "Q") match inside ordinary words
_PLACE, _CAT = "\x00", "\x01"
_UNKNOWN_PLACE = re.compile(r"([A-Z0-9][^\x00\x01()/:,]{1,60}?)\s*\(\x01\)")


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[k:k + n]) for k in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over the whole set (0 when there are none)."""
    grams = [g for t in texts for g in _ngrams(t.lower().split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _take(text: str, vocabulary: list[tuple[str, str]]) -> tuple[list[str], list[str], str]:
    """(places, categories, rest): known strings taken longest first (a category inside a longer name
    or a name inside a longer category is not counted), each replaced by its kind's mark."""
    found: dict[str, list[str]] = {_PLACE: [], _CAT: []}
    for v, mark in vocabulary:
        if v in text:
            found[mark] += [v] * text.count(v)
            text = text.replace(v, mark)
    return found[_PLACE], found[_CAT], text


class QualityScorer:
    def __init__(self, data: CheckinData):
        cat = data.catalogue
        self.data = data
        categories = {c for c in cat.category_names if c}
        # a venue named like a category ("Subway") is read as the category
        names = {n for n in cat.names if len(n) >= MIN_NAME} - categories
        self.known = {n.lower() for n in cat.names if n}
        vocab = [(n, _PLACE) for n in names] + [(c, _CAT) for c in categories]
        self.vocabulary = sorted(vocab, key=lambda x: len(x[0]), reverse=True)

    def sample(self, text: str, ctx: Context) -> dict:
        """One explanation's record: parse outcome, mentions, grounded/hallucinated counts, length."""
        d, cat = self.data, self.data.catalogue
        seen = np.concatenate([d.poi[ctx.history], ctx.candidates])
        seen_names = {cat.names[p] for p in seen}
        seen_cats = {cat.category_names[cat.category[p]] for p in seen}
        places, cats, rest = _take(text, self.vocabulary)
        shown = [m.strip() for m in _UNKNOWN_PLACE.findall(rest)]  # 'Name (Category)' not matched above
        places += [m for m in shown if m.lower() in self.known]
        unknown = [m for m in shown if m.lower() not in self.known]
        grounded = sum(p in seen_names for p in places) + sum(c in seen_cats or c in seen_names for c in cats)
        p = parse(text)
        return {
            "key": ctx.key, "text": text, "parsed": p.ok, "like": p.like, "dislike": p.dislike,
            "places": places, "categories": cats, "hallucinated": unknown,
            "mentions": len(places) + len(cats) + len(unknown), "grounded": grounded,
            "words": len(text.split()),
        }

    def report(self, texts: list[str], contexts: list[Context], jsonl: str | Path | None = None) -> dict:
        """Aggregate metrics; with `jsonl`, also one record per sample written there."""
        recs = [self.sample(t, c) for t, c in zip(texts, contexts, strict=True)]
        if jsonl is not None:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            write_or_explain(Path(jsonl), "".join(json.dumps(r) + "\n" for r in recs), "run.output_dir")
        mentions = sum(r["mentions"] for r in recs)
        places = sum(len(r["places"]) + len(r["hallucinated"]) for r in recs)
        return {
            "n": len(recs),
            "parse_rate": float(np.mean([r["parsed"] for r in recs])) if recs else 0.0,
            "grounding": sum(r["grounded"] for r in recs) / mentions if mentions else 0.0,
            "hallucinated_name_rate": sum(len(r["hallucinated"]) for r in recs) / places if places else 0.0,
            "mean_words": float(np.mean([r["words"] for r in recs])) if recs else 0.0,
            "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2),
        }
