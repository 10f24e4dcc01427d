"""benchmarks/prompt_information.py: the LLM's label log-likelihoods through one shared prefill equal a
plain forward of each prompt + label, and the re-ranker's ranks are those of its scores."""
from __future__ import annotations

import numpy as np
import torch
from test_explainer_llm import tiny_cfg
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from benchmarks.prompt_information import llm_label_logprobs
from recpie.explainer.explainer import Explainer
from recpie.explainer.information import reranked_ranks


def test_label_logprobs_with_a_shared_prefill_equal_full_forwards(tiny_llm_dir):  # noqa: F811
    torch.manual_seed(0)
    ex = Explainer(tiny_cfg(tiny_llm_dir), user_dim=8)
    prompts = ["Recent check-ins: Coffee Shop, Office. Explanation: may like:", "Now: Bar. may like:"]
    labels = [["Coffee Shop", "Bar", "Office"], ["Gym", "Coffee Shop (Food)", "Park"]]
    got = llm_label_logprobs(ex, prompts, labels, None, batch=2)
    tok, model = ex.tokenizer, ex.model
    for r, prompt in enumerate(prompts):
        for j, label in enumerate(labels[r]):
            p, c = tok(prompt).input_ids, tok(" " + label, add_special_tokens=False).input_ids
            with torch.no_grad():
                logp = model(input_ids=torch.tensor([p + c])).logits[0].float().log_softmax(-1)
            want = sum(logp[len(p) - 1 + t, c[t]].item() for t in range(len(c)))
            assert abs(got[r, j] - want) < 1e-3, (r, j, got[r, j], want)


def test_reranked_ranks_reorder_the_top_k_only():
    class Scores(torch.nn.Module):  # scores = the single feature
        def forward(self, x):
            return x
    x = torch.tensor([[[0.0], [2.0], [1.0]], [[3.0], [2.0], [1.0]], [[0.0], [0.0], [1.0]]])
    slot, ranks = np.array([1, 2, -1]), np.array([2, 3, 40])
    assert reranked_ranks(Scores(), x, slot, ranks).tolist() == [1, 3, 40]
