"""Generation: padding-invariant soft prompts and positions, log-probs on responses, EOS masking, cache."""
from __future__ import annotations

import pytest
import torch
from test_explainer_llm import PROMPTS, tiny_cfg
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.explainer.cache import ExplanationCache
from recpie.explainer.explainer import Explainer
from recpie.explainer.forward import OutputHead, head_logprobs, response_mask
from recpie.explainer.generate import eos_ids
from recpie.utils.batching import length_groups

THREE = [*PROMPTS, "Candidates (distance from the last place):\n1. Bar, 1.1 km\nExplanation: may like:"]


def make(tiny_llm_dir, **kw) -> Explainer:  # noqa: F811
    torch.manual_seed(0)
    ex = Explainer(tiny_cfg(tiny_llm_dir, **kw), user_dim=8)
    with torch.no_grad():  # non-zero LoRA so the adapted and the reference policy differ
        for n, p in ex.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return ex


def test_response_mask_keeps_the_first_of_any_eos_only():
    seq = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [9, 2, 3, 4]])
    mask, ended = response_mask(seq, [1, 9])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_batched_generation_and_logprobs_do_not_depend_on_padding(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir)
    h = torch.randn(3, 8)
    batch = ex.generate(THREE, h, sample=False)
    assert len(set(batch.prompt_mask.sum(1).tolist())) == 3  # really padded
    lp_batch = ex.response_logprobs(*batch.rows(), h).logprobs
    for i, prompt in enumerate(THREE):
        alone = ex.generate([prompt], h[i:i + 1], sample=False)
        assert alone.texts[0] == batch.texts[i]
        lp_alone = ex.response_logprobs(*alone.rows(), h[i:i + 1]).logprobs
        torch.testing.assert_close(lp_alone[0], lp_batch[i], atol=1e-4, rtol=1e-4)


def test_a_row_scores_the_same_with_responses_of_other_lengths_beside_it(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir, forward_tokens=10**6)  # one forward for the whole batch
    tok = ex.tokenizer
    enc = tok(THREE, return_tensors="pt", padding=True)
    ids = tok(" the Bar, 1 km away, never visited")["input_ids"]
    lengths = [len(ids), 3, 6]  # right padding after the shorter responses
    resp = torch.tensor([ids[:n] + [tok.pad_token_id] * (len(ids) - n) for n in lengths])
    rmask = (torch.arange(len(ids))[None] < torch.tensor(lengths)[:, None]).long()
    h = torch.randn(3, 8)
    batch = ex.response_logprobs(torch.cat([enc.input_ids, resp], 1), torch.cat([enc.attention_mask, rmask], 1),
                                 rmask, h).logprobs
    for r, n in enumerate(lengths):
        real = int(enc.attention_mask[r].sum())
        row = torch.cat([enc.input_ids[r, -real:], resp[r, :n]])[None]
        alone = ex.response_logprobs(row, torch.ones_like(row), rmask[r:r + 1, :n], h[r:r + 1]).logprobs
        torch.testing.assert_close(batch[r, :n], alone[0], atol=1e-4, rtol=1e-4)


def test_logprobs_at_the_one_temperature_match_a_plain_forward_and_greedy_picks_the_argmax(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir, soft_tokens=0, temperature=0.7)  # sampling's temperature is the log-probs' too
    gen = ex.generate(THREE, None, sample=False)
    out = ex.response_logprobs(*gen.rows(), None)
    lp, hidden = out.logprobs, out.hidden
    assert hidden.shape == (*gen.sequences.shape, ex.hidden_size)
    for i in range(len(THREE)):
        ids = torch.cat([gen.prompt_ids[i][gen.prompt_mask[i] == 1], gen.sequences[i]])[None]
        with torch.no_grad():
            logits = ex.model(input_ids=ids).logits[0, -gen.sequences.shape[1] - 1:-1].float()
        full = torch.log_softmax(logits / 0.7, -1)
        ref = full.gather(-1, gen.sequences[i][:, None]).squeeze(-1) * gen.response_mask[i]
        torch.testing.assert_close(lp[i].detach(), ref, atol=1e-4, rtol=1e-4)
        steps = gen.response_mask[i] == 1
        assert torch.equal(full.argmax(-1)[steps], gen.sequences[i][steps])


def test_reference_policy_is_the_adapter_free_base(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir)
    h = torch.randn(2, 8)
    gen = ex.generate(PROMPTS, h, sample=True)
    policy = ex.response_logprobs(*gen.rows(), h).logprobs
    ref = ex.response_logprobs(*gen.rows(), h, reference=True).logprobs
    assert not ref.requires_grad and policy.requires_grad
    assert (policy - ref).abs().max() > 1e-3
    with ex.model.disable_adapter():
        again = ex.response_logprobs(*gen.rows(), h).logprobs
    torch.testing.assert_close(again.detach(), ref)


def test_eos_ends_a_response_and_is_masked_after(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir)
    h = torch.randn(2, 8)
    free = ex.generate(PROMPTS, h, sample=False)
    row = free.sequences[0].tolist()
    k = next((i for i in range(1, len(row)) if row[i] not in row[:i]), 0)  # a token not seen before it
    ex.model.generation_config.eos_token_id = row[k]  # row 0's (k+1)-th token ends it
    gen = ex.generate(PROMPTS, h, sample=False)
    mask = gen.response_mask[0].tolist()
    assert gen.ended[0] and mask[:k + 1] == [1] * (k + 1) and not any(mask[k + 1:])
    assert (gen.sequences[0, k + 1:] == ex.tokenizer.pad_token_id).all()
    assert gen.texts[0] == "may like:" + ex.tokenizer.decode(free.sequences[0, :k + 1], skip_special_tokens=True)


def test_sampling_is_seeded_and_differs_from_greedy(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir, max_new_tokens=12)
    h = torch.randn(2, 8)
    torch.manual_seed(3)
    a = ex.generate(PROMPTS, h, sample=True)
    torch.manual_seed(3)
    b = ex.generate(PROMPTS, h, sample=True)
    greedy = ex.generate(PROMPTS, h, sample=False)
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, greedy.sequences)


def test_explanation_cache_generates_nothing_twice_and_persists(tiny_llm_dir, tmp_path):  # noqa: F811
    ex = make(tiny_llm_dir, explanation_cache=str(tmp_path / "cache"))
    calls = []
    real = ex.generate
    ex.generate = lambda prompts, *a, **k: calls.append(len(prompts)) or real(prompts, *a, **k)
    h = torch.randn(3, 8)
    first = ex.explain(THREE, ["s0", "s1", "s2"], h, version=0)
    again = ex.explain(THREE, ["s0", "s1", "s2"], h, version=0)
    mixed = ex.explain(THREE[:2], ["s0", "s3"], h[:2], version=0)
    assert again == first and mixed[0] == first[0] and calls == [3, 1]
    ex.explain(THREE[:1], ["s0"], h[:1], version=1)  # a new policy version is a new explanation
    assert calls == [3, 1, 1]
    reread = ExplanationCache(tmp_path / "cache")
    assert len(reread) == 5 and reread.get(ex.cache_keys(["s2"], h[2:3])[0], 0) == first[2]
    assert ex.explain(THREE[:1], ["s0"], h[1:2], version=0) and calls == [3, 1, 1, 1]  # another user state


def test_chunked_head_logprobs_and_gradients_equal_a_plain_log_softmax(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir)
    head = OutputHead(ex.model)
    hidden = torch.randn(3, 7, ex.hidden_size, requires_grad=True)
    tokens = torch.randint(len(ex.tokenizer), (3, 7))
    chunked, entropy = head_logprobs(head, hidden, tokens, 0.7, chunk=2)
    (grad,) = torch.autograd.grad(chunked.sum(), hidden)
    full = torch.log_softmax((hidden @ head.layer.weight.T).float() / 0.7, -1)
    plain = full.gather(-1, tokens[..., None])[..., 0]
    (plain_grad,) = torch.autograd.grad(plain.sum(), hidden)
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, plain_grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1).detach(), atol=1e-4, rtol=1e-4)


def test_own_decoding_loop_gives_generate_s_greedy_tokens(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir, max_new_tokens=10)
    h = torch.randn(3, 8)
    gen = ex.generate(THREE, h, sample=False)
    ex.cfg.static_cache = True  # the other path: transformers' generate (static cache)
    hf = ex.generate(THREE, h, sample=False)
    assert torch.equal(gen.sequences, hf.sequences[:, :gen.sequences.shape[1]]) and gen.texts == hf.texts
    with pytest.raises(ValueError, match="static_cache"):
        Explainer(tiny_cfg(tiny_llm_dir, static_cache=True, vocabulary="data"), user_dim=8)


def test_prefill_in_length_groups_gives_the_tokens_of_one_batch_past_the_sliding_window(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir, max_new_tokens=12, forward_tokens=10**6)  # first: one prefill forward
    window = ex.model.config.get_text_config().sliding_window
    history = "".join(f"- Mon 0{k}:10 Coffee Shop\n" for k in range(8))  # past the tiny model's window
    prompts = [history + p for p in THREE] + THREE
    lengths = [len(ex.tokenizer(p).input_ids) for p in prompts]
    assert max(lengths) > window > min(lengths)
    h = torch.randn(len(prompts), 8)
    whole = ex.generate(prompts, h, sample=False)
    ex.cfg.forward_tokens = 2 * max(lengths)  # several groups, one of them a single row
    grouped = ex.generate(prompts, h, sample=False)
    ex.cfg.static_cache = True  # transformers' generate with its own sliding-window cache
    hf = ex.generate(prompts, h, sample=False)
    assert torch.equal(grouped.sequences, whole.sequences) and grouped.texts == whole.texts
    assert torch.equal(whole.sequences, hf.sequences[:, :whole.sequences.shape[1]])
    for i in (0, 4):
        alone = ex.generate(prompts[i:i + 1], h[i:i + 1], sample=False)
        assert alone.texts[0] == whole.texts[i]


def test_length_groups_cover_every_row_once_longest_first_within_the_budget():
    lengths = torch.tensor([5, 30, 12, 30, 7, 100])
    groups = length_groups(lengths, budget=60)
    assert sorted(torch.cat(groups).tolist()) == list(range(6))
    assert [g.tolist() for g in groups] == [[5], [1, 3], [2, 4, 0]]
    for g in groups[1:]:
        assert len(g) * lengths[g].max() <= 60


def test_a_restricted_head_samples_and_scores_over_its_tokens_only(tiny_llm_dir):  # noqa: F811
    ex = make(tiny_llm_dir, soft_tokens=0, max_new_tokens=12)
    allowed = torch.tensor(sorted({*range(3, 200, 2), *eos_ids(ex.model, ex.tokenizer)}))
    ex.head = OutputHead(ex.model, allowed)
    torch.manual_seed(0)
    gen = ex.generate(THREE, None, sample=True)
    assert torch.isin(gen.sequences[gen.response_mask == 1], allowed).all()
    lp = ex.response_logprobs(*gen.rows(), None).logprobs
    ids = torch.cat([gen.prompt_ids[0][gen.prompt_mask[0] == 1], gen.sequences[0]])[None]
    with torch.no_grad():
        logits = ex.model(input_ids=ids).logits[0, -gen.sequences.shape[1] - 1:-1, allowed].float()
    ref = torch.log_softmax(logits, -1).gather(-1, ex.head.to_head(gen.sequences[0])[:, None])[:, 0]
    torch.testing.assert_close(lp[0].detach(), ref * gen.response_mask[0], atol=1e-4, rtol=1e-4)
