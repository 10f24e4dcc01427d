"""Explanation generation speed: batched vs a naive one-prompt-at-a-time loop, same prompts, same run.

Real NYC test prompts of mixed length (history of 2..10 check-ins, the counter's top-5 candidates),
greedy decoding, the explainer's own generate(). Prints tokens/s, s/explanation and peak RSS.

    python benchmarks/bench_generation.py                     # embedded Gemma 3 270M on CPU
    python benchmarks/bench_generation.py --random-init       # Gemma-270M-shaped random model (GPU boxes)
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from recpie.components.baselines import DecayedCounter
from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.explainer import Explainer
from recpie.explainer.prompts import build_prompt

GEMMA_270M_SHAPE = dict(  # Gemma 3 270M's text config, for random-init runs where weights cannot travel
    vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
    num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
    max_position_embeddings=32768,
)


def nyc_prompts(n: int, cfg: ExplainerConfig, seed: int) -> list[str]:
    data = load_checkin_data(DataConfig())
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data.splits["test"]), n, replace=False)
    top = np.argsort(-DecayedCounter(0.99).fit(data).score(data, "test", rows), 1)[:, : cfg.num_candidates]
    lens = rng.integers(2, 11, n)
    return [build_prompt(data, "test", int(r), c, _with(cfg, history_len=int(k)))
            for r, c, k in zip(rows, top, lens, strict=True)]


def _with(cfg: ExplainerConfig, **kw) -> ExplainerConfig:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def random_init_dir(path: str) -> str:
    """Save a random-init Gemma-270M-shaped model with the embedded tokenizer (GPU speed runs)."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from recpie.explainer.llm import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(ExplainerConfig()))
    torch.manual_seed(0)
    Gemma3ForCausalLM(Gemma3TextConfig(**GEMMA_270M_SHAPE)).to(torch.bfloat16).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run(ex: Explainer, prompts: list[str], batch: int) -> tuple[float, int]:
    """(seconds, generated tokens) to explain all prompts `batch` at a time."""
    start, tokens = time.perf_counter(), 0
    for s in range(0, len(prompts), batch):
        gen = ex.generate(prompts[s:s + batch], None, sample=False)
        tokens += int(gen.response_mask.sum())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:gemma3-270m")
    ap.add_argument("--random-init", action="store_true", help="random weights of Gemma 270M's shape")
    ap.add_argument("--dtype", default="float32", help="float32 is ~2x faster than bfloat16 on this CPU")
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--n", type=int, default=32, help="prompts per configuration")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--static-cache", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_init_dir("/tmp/recpie_gemma_random") if args.random_init else args.model
    cfg = ExplainerConfig(model=model, dtype=args.dtype, quantization=args.quantization, soft_tokens=0,
                          max_new_tokens=args.max_new_tokens, static_cache=args.static_cache)
    ex = Explainer(cfg, user_dim=1)
    prompts = nyc_prompts(args.n, cfg, seed=0)
    plen = [len(ex.tokenizer(p).input_ids) for p in prompts]
    print(f"device {ex.device}, dtype {args.dtype}, quantization {args.quantization}, static cache "
          f"{args.static_cache}, {args.n} prompts of {min(plen)}-{max(plen)} tokens "
          f"(mean {np.mean(plen):.0f}), up to {args.max_new_tokens} new tokens, greedy")
    run(ex, prompts[:2], 2)  # warm-up (allocator, kernels)
    naive_s, naive_tok = run(ex, prompts, 1)
    for b in [int(x) for x in args.batches.split(",")]:
        sec, tok = (naive_s, naive_tok) if b == 1 else run(ex, prompts, b)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        gpu = ""
        if torch.cuda.is_available():
            gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        print(f"batch {b:>3}: {tok / sec:7.1f} tok/s, {sec / len(prompts):6.2f} s/explanation, "
              f"{naive_s / sec:5.2f}x naive ({naive_tok / naive_s:.1f} tok/s), peak RSS {peak:.2f} GiB{gpu}",
              flush=True)

if __name__ == "__main__":
    main()
