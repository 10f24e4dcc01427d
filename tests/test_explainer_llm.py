"""Loading: pad token, LoRA-only training, NF4 on CPU keeps LoRA gradients after generate/eval passes."""
from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.explainer.config import ExplainerConfig
from recpie.explainer.explainer import Explainer
from recpie.explainer.llm import PAD_TOKEN, load_llm, resolve_device

PROMPTS = ["Recent check-ins (oldest first):\n- Mon 08:10 Coffee Shop\nExplanation: may like:",
           "Now: may like:"]


def tiny_cfg(model_dir, **kw) -> ExplainerConfig:
    base = dict(dtype="float32", device="cpu", max_new_tokens=6, soft_tokens=2, soft_hidden=16)
    return ExplainerConfig(model=str(model_dir), **{**base, **kw})


def test_dedicated_pad_token_left_padding_and_only_lora_trainable(tiny_llm_dir):  # noqa: F811
    model, tok = load_llm(tiny_cfg(tiny_llm_dir))
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_bad_settings_fail_with_the_key_named(tiny_llm_dir):  # noqa: F811
    with pytest.raises(ValueError, match="explainer.quantization"):
        load_llm(tiny_cfg(tiny_llm_dir, quantization="int8"))
    with pytest.raises(ValueError, match="explainer.device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="explainer.granularity"):
        Explainer(tiny_cfg(tiny_llm_dir, granularity="poi"), user_dim=8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU is present")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def test_nf4_lora_gets_gradients_after_generate_and_eval_forward(tiny_llm_dir):  # noqa: F811
    torch.manual_seed(0)
    ex = Explainer(tiny_cfg(tiny_llm_dir, quantization="nf4", dtype="bfloat16"), user_dim=8)
    layers = [m for m in ex.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
    h = torch.randn(2, 8)
    gen = ex.generate(PROMPTS, h, sample=True)  # eval mode, no grad: the pass that used to re-lay weights
    ex.model.eval()
    with torch.no_grad():
        ex.response_logprobs(*gen.rows(), h)
    ex.model.train()
    out = ex.response_logprobs(*gen.rows(), h)
    logp, hidden = out.logprobs, out.hidden
    (logp.sum() + hidden.float().pow(2).mean()).backward()
    lora = {n: p for n, p in ex.model.named_parameters() if p.requires_grad}
    assert all(p.grad is not None for p in lora.values()), [n for n, p in lora.items() if p.grad is None]
    # B starts at zero, so A's gradient is zero at init; B's must be non-zero everywhere
    assert all(p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    assert all(p.grad is not None for p in ex.soft_prompt.parameters())
