"""A tiny Gemma3-style causal LM with a tokenizer trained here on real NYC text: fast tests, no downloads.

``make_tiny_llm(out_dir, data_root)`` saves model and tokenizer with ``save_pretrained`` so tests go
through the same ``from_pretrained`` path as a real model directory. The tokenizer has no pad token on
purpose (the explainer must add a dedicated one).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

NYC_FILE = "foursquare_nyc_tsmc2014/dataset_TSMC2014_NYC.txt"
NAMES_FILE = "foursquare_nyc_tsmc2014_raw_rows/poi_metadata_NYC.csv"
FORMAT_TEXT = "may like: may not like: Recent check-ins (oldest first): Candidates: Now: Explanation: km"


def _corpus(data_root: Path, rows: int = 4000) -> list[str]:
    lines = [FORMAT_TEXT]
    for path in (data_root / NYC_FILE, data_root / NAMES_FILE):
        with open(path, encoding="latin-1") as f:
            lines += [next(f, "") for _ in range(rows)]
    return lines


def make_tiny_llm(out_dir: Path, data_root: Path, seed: int = 0) -> Path:
    """Build, save and return the directory of a 2-layer Gemma3 text model (~0.1M parameters)."""
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<unk>", "<eos>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(_corpus(data_root), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>"
    )
    cfg = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
        sliding_window=64, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=None, tie_word_embeddings=True, initializer_range=0.2,  # logits able to be confident
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg)
    out = Path(out_dir) / "tiny_gemma3"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, data_root) -> Path:
    """Session-wide tiny model directory (import this fixture into a test module to use it)."""
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm"), data_root)

