"""Explanation encoders read the text alone and stay frozen: the base LLM (adapters off) or MiniLM offline."""
from __future__ import annotations

import torch
from test_explainer_llm import tiny_cfg
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.explainer.config import EMBEDDED_MINILM
from recpie.explainer.encoder import SentenceEncoder
from recpie.explainer.explainer import Explainer

TEXTS = [
    "may like: the Coffee Shop they visit on weekday mornings / may not like: the Bar far away",
    "may like: Coffee Shop on weekday mornings / may not like: a distant Bar",
    "may like: the Stadium on Sunday afternoons / may not like: the Airport",
]


def test_llm_encoder_ignores_adapters_padding_and_user_state(tiny_llm_dir):  # noqa: F811
    torch.manual_seed(0)
    ex = Explainer(tiny_cfg(tiny_llm_dir), user_dim=8)
    z = ex.encode(TEXTS)
    assert z.shape == (3, ex.encoding_dim) and not z.requires_grad
    torch.testing.assert_close(ex.encode(TEXTS[2:])[0], z[2], atol=1e-5, rtol=1e-5)  # no padding effect
    with torch.no_grad():
        for n, p in ex.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    torch.testing.assert_close(ex.encode(TEXTS), z)  # the policy's adapters do not reach the encoding
    assert ex.model.training  # the encoder restores the module's mode


def test_sentence_transformers_encoder_offline():
    enc = SentenceEncoder(EMBEDDED_MINILM, torch.device("cpu"))
    z = torch.nn.functional.normalize(enc(TEXTS), dim=-1)
    assert z.shape == (3, 384) and enc.dim == 384
    sim = z @ z.T
    assert sim[0, 1] > sim[0, 2] + 0.1  # paraphrases closer than a different explanation


def test_verdict_encoder_reads_which_candidate_each_part_names():
    from recpie.explainer.encoder import VerdictEncoder

    labels = ["Bar", "Coffee Shop", "Sports Bar", "Bar"]
    enc = VerdictEncoder(num_candidates=4)
    z = enc([
        "may like: the Coffee Shop, visited 3 times / may not like: the Sports Bar, 2.0 km away",
        "may like: a bar, never visited / may not like: nothing nearby",  # a shared label; no candidate
        "the Bar, I guess",  # unparseable: the null verdict
        "may like: the Sports Bar, then a Coffee Shop / may not like: the Bar",  # first mention; longest
    ], [labels] * 4).view(4, 4, 2)
    assert enc.dim == 8
    assert z[0, :, 0].tolist() == [0, 1, 0, 0] and z[0, :, 1].tolist() == [0, 0, 1, 0]
    assert z[1, :, 0].tolist() == [0.5, 0, 0, 0.5] and z[1, :, 1].tolist() == [0] * 4
    assert z[2].abs().sum() == 0
    assert z[3, :, 0].tolist() == [0, 0, 1, 0] and z[3, :, 1].tolist() == [0.5, 0, 0, 0.5]
