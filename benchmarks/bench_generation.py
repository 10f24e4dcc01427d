"""Explanation generation speed: batched vs a naive one-prompt-at-a-time loop, same prompts, same run.

Real NYC test prompts of mixed length (history of 2..10 check-ins, the counter's top-5 candidates),
greedy decoding, the explainer's own generate(). Prints tokens/s, s/explanation and peak RSS.

    python benchmarks/bench_generation.py                     # embedded Gemma 3 270M on CPU
    python benchmarks/bench_generation.py --save-prompts p.json --n 64   # prompts for a machine without data
    python benchmarks/bench_generation.py --model DIR --random-init --prompts-file p.json --train-check
        # random weights of DIR's config (+ its tokenizer): for GPU boxes the real weights cannot reach
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from recpie.explainer.config import ExplainerConfig
from recpie.explainer.explainer import Explainer
from recpie.explainer.llm import resolve_model_path
from recpie.explainer.prompts import build_prompt
from recpie.utils.machine import cpu_features


def nyc_data():
    from recpie.data.config import DataConfig
    from recpie.data.load import load_checkin_data

    return load_checkin_data(DataConfig())


def nyc_prompts(n: int, cfg: ExplainerConfig, seed: int) -> list[str]:
    from recpie.components.baselines import DecayedCounter

    data = nyc_data()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data.splits["test"]), n, replace=False)
    top = np.argsort(-DecayedCounter(0.99).fit(data).score(data, "test", rows), 1)[:, : cfg.num_candidates]
    lens = rng.integers(2, 11, n)
    scores = np.random.default_rng([seed, 1]).normal(0.0, 2.0, top.shape)  # made-up logits (show_scores)
    scores = np.sort(scores, 1)[:, ::-1]
    return [build_prompt(data, "test", int(r), c, dataclasses.replace(cfg, history_len=int(k)), logits=z)
            for r, c, k, z in zip(rows, top, lens, scores, strict=True)]


def random_init_dir(src: str, out: str) -> str:
    """A model with `src`'s config and tokenizer but random weights (speed runs where weights cannot go)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def train_check(ex: Explainer, prompts: list[str]) -> str:
    """Soft prompt + LoRA (+ NF4 if configured): sample, then backward through the response log-probs."""
    h = torch.randn(len(prompts), 8, device=ex.device)
    gen = ex.generate(prompts, h, sample=True, max_new_tokens=16)
    ex.response_logprobs(*gen.rows(), h).logprobs.sum().backward()
    missing = [n for n, p in ex.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise SystemExit(f"train check failed: no gradient for {missing[:3]}")
    return f"train check ok: {len(ex.trainable_parameters())} trainable tensors all received gradients"


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
    ap.add_argument("--dtype", default="auto",
                    help="auto: bf16 on CPUs with native bf16 matmuls (AMX, AVX512-BF16), else float32")
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--n", type=int, default=32, help="prompts per configuration")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--static-cache", action="store_true")
    ap.add_argument("--vocabulary", default="full", help="output head: full or data (the NYC data's tokens)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--prompts-file", help="JSON list of prompts (default: built from the NYC data)")
    ap.add_argument("--save-prompts", help="write the NYC prompts to this JSON file and stop")
    ap.add_argument("--show-scores", action="store_true",
                    help="prompts state each candidate's recommender share (explainer.show_scores; made-up logits)")
    ap.add_argument("--train-check", action="store_true", help="also sample + backward with soft prompt/LoRA")
    ap.add_argument("--no-naive", action="store_true", help="skip the one-prompt-at-a-time loop")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one greedy batch of the largest size (torch.profiler, ops by self CPU)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="passes per batch size, each over a new shuffle of the prompts (so other padded "
                         "lengths): with --static-cache the first pass compiles, the later ones show whether "
                         "new shapes compile again")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ExplainerConfig(model=args.model, dtype=args.dtype, quantization=args.quantization, soft_tokens=4,
                          max_new_tokens=args.max_new_tokens, static_cache=args.static_cache,
                          vocabulary=args.vocabulary, show_scores=args.show_scores)
    if args.prompts_file:
        prompts = json.loads(Path(args.prompts_file).read_text())[: args.n]
    else:
        prompts = nyc_prompts(args.n, cfg, seed=0)
    if args.save_prompts:
        Path(args.save_prompts).write_text(json.dumps(prompts))
        return
    if args.random_init:
        src = resolve_model_path(cfg)
        cfg = dataclasses.replace(cfg, model=random_init_dir(src, "/tmp/recpie_random_init"))
    ex = Explainer(cfg, user_dim=8, data=nyc_data() if args.vocabulary == "data" else None)
    if args.train_check:
        print(train_check(ex, prompts[:8]), flush=True)
    plen = [len(ex.tokenizer(p).input_ids) for p in prompts]
    dtype = str(ex.model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    print(f"CPU: {cpu_features().describe()}")
    print(f"device {ex.device} ({torch.backends.cpu.get_cpu_capability()}), dtype {dtype} ({args.dtype}), quantization "
          f"{args.quantization}, {args.vocabulary} vocabulary, static cache {args.static_cache}, {args.n} prompts "
          f"of {min(plen)}-{max(plen)} tokens "
          f"(mean {np.mean(plen):.0f}), up to {args.max_new_tokens} new tokens, greedy")
    run(ex, prompts[:2], 2)  # warm-up (allocator, kernels)
    naive_s, naive_tok = (float("nan"), 0) if args.no_naive else run(ex, prompts, 1)
    for b in [int(x) for x in args.batches.split(",")]:
        for r in range(args.repeats):
            order = np.random.default_rng(r).permutation(len(prompts)) if r else np.arange(len(prompts))
            sec, tok = (naive_s, naive_tok) if b == 1 else run(ex, [prompts[i] for i in order], b)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            gpu = ""
            if torch.cuda.is_available():
                gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
            print(f"batch {b:>3}, pass {r + 1}: {tok / sec:7.1f} tok/s, {sec / len(prompts):6.2f} s/explanation, "
                  f"{naive_s / sec:5.2f}x naive ({naive_tok / naive_s:.1f} tok/s), peak RSS {peak:.2f} GiB{gpu}",
                  flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(ex, prompts[:max(int(x) for x in args.batches.split(","))], len(prompts))  # one batch
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
