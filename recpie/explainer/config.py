"""Configuration of the LLM explainer: which model, how it is adapted, prompted, sampled and encoded."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from recpie.errors import ConfigError

EMBEDDED_GEMMA = "embedded:gemma3-270m"
EMBEDDED_MINILM = "embedded:all-minilm-l6-v2"


Quantization = StrEnum("Quantization", ["none", "nf4"])  # weights of the base LLM
Device = StrEnum("Device", ["auto", "cpu", "cuda"])  # where the LLM runs
Dtype = StrEnum("Dtype", ["auto", "bfloat16", "float32", "float16"])  # the LLM's compute dtype
# what one explanation is about: the sample, or each of its top-K candidates
Granularity = StrEnum("Granularity", ["user", "candidate"])
Vocabulary = StrEnum("Vocabulary", ["full", "data"])  # the output head decoding and every log-prob use
# how "may like" and "may not like" are chosen: generated token by token, or a K-way choice (ExplainerConfig.choice)
Choice = StrEnum("Choice", ["generated", "scored", "readout"])
LogprobAttention = StrEnum("LogprobAttention", ["auto", "eager", "sdpa"])  # attention kernel of the log-prob forwards


@dataclass
class LoraSection:
    rank: int = 8  # LoRA rank r of every adapted projection
    alpha: int = 16  # LoRA scaling numerator (scale = alpha / rank)
    dropout: float = 0.0  # LoRA dropout; 0 because PPO needs identical log-probs in rollout and update
    target_modules: list[str] = field(  # module names (suffixes) that get adapters
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ExplainerConfig:
    model: str = EMBEDDED_GEMMA  # local HF dir, hub id, path to a .gguf file, or "embedded:gemma3-270m"
    # "none" or "nf4" (bitsandbytes 4-bit, double quantisation, bf16 compute)
    quantization: Quantization = Quantization.none
    device: Device = Device.auto  # "auto" (cuda if present), "cpu" or "cuda"
    # unquantised weights: auto, bfloat16, float32, float16. auto: bf16 on CUDA and on CPUs with native bf16
    # matmuls (AMX-BF16 or AVX512-BF16 in /proc/cpuinfo), float32 on other CPUs (AVX2: bf16 emulated, ~2x slower);
    # the choice and the CPU's features are logged at load and stated in results.md (recpie.utils.machine). Sampling,
    # the warm-up and every log-prob pass run the one loaded model, so they share the dtype
    dtype: Dtype = Dtype.auto
    cache_dir: str = ""  # where converted models are kept; "" = $RECPIE_CACHE or ~/.cache/recpie
    lora: LoraSection = field(default_factory=LoraSection)
    soft_tokens: int = 4  # m: virtual tokens the soft prompt prepends (0 = no soft prompt)
    soft_hidden: int = 256  # hidden width of the soft-prompt MLP
    # "user": one explanation per sample; "candidate": one per top-K candidate
    granularity: Granularity = Granularity.user
    history_len: int = 8  # most recent check-ins shown in a prompt
    num_candidates: int = 5  # top-K candidates of the recommender shown in a prompt
    few_shot: bool = True  # prepend one worked example to each prompt (format hint for a base model)
    # each candidate line also states the recommender's score: the candidate's share of the recommender's
    # probability among the K shown (softmax of their logits) in percent to two significant digits
    # ("recommender 34%", "0.081%", "<0.01%"), so a reader of the prompt (the LLM, the facts teacher, the
    # information bound) may weigh it; false keeps every prompt as it was (the bounds: docs/results.md)
    show_scores: bool = False
    # a visited candidate's line also says whether its usual part of the day is the sample's: "mostly
    # evening, as now" / "mostly morning, not now": the same fact the facts reader reads, otherwise stated
    # only across two lines (the "Now:" line and the candidate's), where a readout at the line's end did not
    # compare them (docs/results.md). False keeps every prompt as it was
    habit_match: bool = False
    # how the explanation chooses its candidates. "generated": the LLM writes the whole text after 'may like:'
    # (its choice is whatever names it writes). "scored" (granularity=user): a K-way choice, the softmax over
    # the K candidates of the LLM's log-likelihood of "<label>," after 'may like:' (Explainer.choice_groups);
    # "may like" names the most likely candidate, "may not like" the least likely one of another label, and
    # the reasons are the warm-up's templates of what the prompt states about them (explainer/warmup.py), so
    # every reason is true. PPO samples the choice (one "may like" position per rollout row, its log-prob the
    # choice's; rl.estimator rloo or grpo). The warm-up trains the choice as a listwise cross-entropy on its target
    # order (the facts teacher's, recpie.sft_target=facts) and never decodes: the gate measured a generated
    # choice that did not learn the teacher's (issue 22); a run writes no token by token (speed: docs/results.md).
    # "readout": the same K-way choice, trained and written the same way, but each candidate's score is a
    # linear readout (a trainable head, zero at the start) of the LLM's last hidden state at the end of the
    # candidate's line in the prompt, where the model has read that line's facts, instead of the likelihood
    # of its name (a reranker's cross-encoder reading; the name's likelihood measured at 3% did not learn
    # the teacher's order from 512 examples: docs/results.md)
    choice: Choice = Choice.generated
    # explainer.choice=readout: the LLM's hidden states the head reads at a candidate line's end, concatenated:
    # indices into transformers' hidden_states (0 the embeddings, i the output of layer i, -1 the last layer's,
    # as the default reads; -2 the output of the layer before it, ...), each through the LLM's final norm (as
    # if the LLM ended at that layer). A middle layer may hold a line's numbers (distance, visits, share) in a
    # more linear form than the last, tuned to the next token (benchmarks/readout_probe.py --layers measures
    # it on a finished run); the forward stops at the deepest layer read, so reading layer i alone costs i of
    # the LLM's layers in every readout pass (warm-up, PPO, test)
    readout_layers: list[int] = field(default_factory=lambda: [-1])
    # explainer.choice=scored/readout: the greedy "may like" names another candidate than the recommender's
    # first only where its log pi beats candidate 1's by more than this (0: pi's argmax), to keep only the
    # departures pi is sure of (a departure that is not the facts teacher's costs: docs/results.md;
    # benchmarks/departure_margin.py measures every margin on a finished run, val first). Greedy texts only:
    # PPO's draws and the warm-up's loss read pi itself
    depart_margin: float = 0.0
    max_new_tokens: int = 96  # generation budget per explanation (templated ones take 25-85 Gemma tokens)
    # sampling temperature; every log-prob forward (PPO's old, new and reference passes) uses this one too
    temperature: float = 1.0
    # output head: "full" (the whole vocabulary) or "data" (the tokens of the data's prompts, templated
    # explanations and POI labels). Sampling, greedy decoding and every log-prob use the same head, so PPO
    # stays on-policy (speed and the default: docs/decisions.md)
    vocabulary: Vocabulary = Vocabulary.full
    # transformers' generate with a static KV cache, which compiles the decode step (vocabulary=full only;
    # each new shape may compile again; GPU speed: docs/decisions.md)
    static_cache: bool = False
    # padded tokens per forward of the explainer: its decoding's prefill, the log-prob passes, and each
    # forward/backward micro-batch of the warm-up and PPO (rows of similar length together; a step's gradient
    # is the sum over its micro-batches). Bounds memory; on CPU 1024 was fastest (docs/decisions.md)
    forward_tokens: int = 1024
    # attention kernel of the log-prob forwards: "auto" (eager on CUDA, where SDPA's backward gave NaN LoRA
    # gradients with left padding; sdpa on CPU, faster and without [B, heads, T, T] tensors), "eager", "sdpa"
    logprob_attention: LogprobAttention = LogprobAttention.auto
    # "llm" (adapter-disabled LLM, mean-pooled), a sentence-transformers directory, EMBEDDED_MINILM, or
    # "verdict" (user granularity: which candidate each part names; the fusion then re-ranks the top-K)
    encoder: str = "llm"
    encoder_max_tokens: int = 96  # explanation tokens the encoder reads
    explanation_cache: str = ""  # directory of the on-disk explanation cache; "" = no cache


def check_models(explainer: Any) -> None:
    """What explainer.model and explainer.encoder name must exist where it can be known before loading."""
    for key, value, embedded in (("explainer.model", explainer.model, EMBEDDED_GEMMA),
                                 ("explainer.encoder", explainer.encoder, EMBEDDED_MINILM)):
        if value.startswith("embedded:") and value != embedded:
            raise ConfigError(f"{key}={value!r}: the embedded model here is {embedded}")
    if explainer.model.endswith(".gguf") and not Path(explainer.model).expanduser().is_file():
        raise ConfigError(f"explainer.model={explainer.model!r}: GGUF file not found")
    if explainer.encoder not in ("llm", "verdict", EMBEDDED_MINILM) and not Path(explainer.encoder).is_dir():
        raise ConfigError(f"explainer.encoder={explainer.encoder!r}: not 'llm', 'verdict', {EMBEDDED_MINILM} or a "
                          "local sentence-transformers directory")
