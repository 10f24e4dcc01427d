"""The explainer's compute: the CPU's dtype under explainer.dtype=auto, bf16 against float32 greedy tokens, and
the decoding's shortcuts (ended rows dropped, LoRA merged) giving the tokens of the plain loop."""
from __future__ import annotations

import pytest
import torch
from test_explainer_generation import THREE, make
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)
from transformers import AutoConfig, AutoTokenizer, Gemma3ForCausalLM

import recpie.explainer.generate as generation
from recpie.explainer.forward import decoder_of
from recpie.explainer.generate import decode, eos_ids, merged_lora
from recpie.explainer.llm import resolve_dtype
from recpie.explainer.soft_prompt import build_inputs
from recpie.utils.machine import cpu_features

CPU = torch.device("cpu")
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""
AVX512_NO_BF16 = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: fpu avx avx2 avx512f avx512bw avx512vl\n"
EPYC_AVX2 = "model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n"
# bf16 keeps 8 significant bits: the tiny model's step logits in bf16 stay within 0.06 of float32's (measured);
# the stated tolerance is 0.25, and where float32's top two logits are twice that apart both pick one token
BF16_TOL = 0.25


@pytest.fixture(scope="module")
def untied_llm_dir(tiny_llm_dir, tmp_path_factory):  # noqa: F811
    """The tiny model with an output head of its own: the tied one echoes the last token forever in greedy
    decoding, this one writes varied tokens (rows can end at different steps)."""
    config = AutoConfig.from_pretrained(tiny_llm_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("untied") / "tiny_untied"
    Gemma3ForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(out)
    return out


def test_auto_dtype_is_bf16_only_on_cpus_with_native_bf16_matmuls():
    amx, avx512, epyc, unknown = (cpu_features(t) for t in (XEON_AMX, AVX512_NO_BF16, EPYC_AVX2, ""))
    assert amx.model.startswith("Intel(R) Xeon(R) Platinum") and amx.native_bf16
    assert amx.flags == ("amx_bf16", "avx512_bf16", "amx_tile", "amx_int8", "avx512f", "avx2")
    assert not avx512.native_bf16 and avx512.flags == ("avx512f", "avx2")
    assert not epyc.native_bf16 and epyc.flags == ("avx2",) and "native bf16 no" in epyc.describe()
    assert not unknown.native_bf16 and unknown.describe().startswith("unknown CPU")
    assert resolve_dtype("auto", CPU, amx) == torch.bfloat16
    assert [resolve_dtype("auto", CPU, c) for c in (avx512, epyc, unknown)] == [torch.float32] * 3
    assert resolve_dtype("auto", torch.device("cuda"), epyc) == torch.bfloat16  # CUDA keeps its own rule
    assert resolve_dtype("float32", CPU, amx) == torch.float32  # an explicit dtype is kept
    here = cpu_features()  # this machine: the same rule on its own /proc/cpuinfo
    assert resolve_dtype("auto", CPU) == (torch.bfloat16 if here.native_bf16 else torch.float32)


def step_logits(ex, gen, h) -> torch.Tensor:
    """float32 logits [B, T, V] of a no-cache forward at the positions that chose each response token."""
    seq, mask, _ = gen.rows()
    embeds, mask, pos = build_inputs(ex.model, seq, mask, ex.soft(h))
    with torch.no_grad():
        hidden = decoder_of(ex.model)(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).last_hidden_state
    return ex.head.logits(hidden[:, -gen.sequences.shape[1] - 1:-1].float(), ex.head.weight().float())


def test_bf16_and_float32_pick_the_same_greedy_tokens_where_the_top_two_are_far_apart(tiny_llm_dir):  # noqa: F811
    h = torch.randn(3, 8)
    f32 = make(tiny_llm_dir, max_new_tokens=16)
    b16 = make(tiny_llm_dir, max_new_tokens=16, dtype="bfloat16")
    assert b16.model.get_input_embeddings().weight.dtype == torch.bfloat16
    a, b = f32.generate(THREE, h, sample=False), b16.generate(THREE, h, sample=False)
    logits = step_logits(f32, a, h)
    top2 = logits.topk(2, -1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 2 * BF16_TOL  # the premise: no near tie on this model
    assert torch.equal(b.sequences, a.sequences)
    torch.testing.assert_close(step_logits(b16, a, h), logits, atol=BF16_TOL, rtol=0)


def decoded(ex, prompts, h, **kw) -> torch.Tensor:
    """Greedy response ids of the decoding loop itself (no merged LoRA), with ``kw`` passed to it."""
    enc = ex.tokenizer(prompts, return_tensors="pt", padding=True)
    embeds, mask, pos = build_inputs(ex.model, enc.input_ids, enc.attention_mask, ex.soft(h))
    ex.model.eval()
    return decode(ex.model, ex.head, embeds, mask, pos, eos=eos_ids(ex.model, ex.tokenizer),
                  pad=ex.tokenizer.pad_token_id, sample=False, temperature=1.0, max_new_tokens=14,
                  prefill_tokens=10**6, **kw)


def test_rows_that_ended_leave_the_batch_without_changing_any_row_s_tokens(untied_llm_dir, monkeypatch):
    ex = make(untied_llm_dir)
    prompts = [*THREE, "Now: Tue 07:25 (morning)\nExplanation: may like:", "Candidates:\n1. Bar\nmay like:"]
    h = torch.randn(len(prompts), 8)
    with torch.no_grad():
        free = decoded(ex, prompts, h, drop_share=None)
    # the EOS: the token whose first appearance varies most across rows, so rows end at different steps
    def first(tok):
        return [next((t for t, x in enumerate(row.tolist()) if x == tok), 99) for row in free]
    eos = max(set(free.flatten().tolist()), key=lambda tok: len(set(first(tok))))
    ex.model.generation_config.eos_token_id = eos
    ends = first(eos)
    assert len({e for e in ends if e < 13}) >= 2  # at least two rows end early, at different steps
    drops = []
    keep_rows = generation.keep_rows
    monkeypatch.setattr(generation, "keep_rows", lambda cache, rows: drops.append(len(rows)) or keep_rows(cache, rows))
    with torch.no_grad():
        kept = decoded(ex, prompts, h, drop_share=None)
        dropped = decoded(ex, prompts, h, drop_share=1e-9)  # drop every row the step it ends
    assert drops and drops == sorted(drops, reverse=True) and drops[-1] < len(prompts)  # rows left the batch
    assert torch.equal(dropped, kept)
    assert dropped.shape[1] == kept.shape[1] == min(14, max(ends) + 1)


def test_merged_lora_decodes_the_adapted_model_and_leaves_it_as_it_was(untied_llm_dir):
    ex = make(untied_llm_dir, max_new_tokens=14)
    h = torch.randn(3, 8)
    weights = {n: p for n, p in ex.model.named_parameters() if "base_layer" in n}
    before = {n: p.clone() for n, p in weights.items()}
    with torch.no_grad():
        plain = decoded(ex, THREE, h, drop_share=None)
        with merged_lora(ex.model) as merged:
            inside = decoded(ex, THREE, h, drop_share=None)
    assert merged and torch.equal(inside, plain)
    after = dict(ex.model.named_parameters())
    assert all(after[n] is p and torch.equal(p, before[n]) for n, p in weights.items())  # the very tensors
    assert all(p.requires_grad == ("lora_" in n) for n, p in ex.model.named_parameters())  # adapters back on
    gen = ex.generate(THREE, h, sample=False)  # generate merges
    assert torch.equal(gen.sequences, plain.masked_fill(gen.response_mask == 0, ex.tokenizer.pad_token_id))
    with merged_lora(make(untied_llm_dir, dtype="bfloat16").model) as merged:  # bf16 weights: not merged
        assert not merged
