"""Token log-probs of sampled responses, and the masks and position ids of left-padded batches.

A rollout row is [left-padded prompt | response of R tokens]. Logits are computed only on the R
positions that predict response tokens (`logits_to_keep`), since the vocabulary can be 262k.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def left_pad_position_ids(attention_mask: Tensor) -> Tensor:
    """Position ids that start at 0 on the first real token of each left-padded row (as generate uses)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_mask(responses: Tensor, eos_token_id: int) -> tuple[Tensor, Tensor]:
    """(mask [N, R], has_eos [N]): 1 on tokens up to and including the first EOS, 0 after it."""
    is_eos = responses == eos_token_id
    has_eos = is_eos.any(-1)
    eos_before = torch.cumsum(is_eos.long(), -1) - is_eos.long()  # EOS tokens strictly before t
    return (eos_before == 0).long(), has_eos


@contextmanager
def attention_implementation(model: nn.Module, name: str | None) -> Iterator[None]:
    """Run a HF model (peft-wrapped or not) with another attention kernel inside the block; None: as is.

    Why: on CUDA, SDPA's backward through left-padded rows (query rows with every key masked) gives NaN
    to every LoRA gradient while the forward stays finite (seen on an H200, torch 2.11, transformers
    5.17). "eager" is as fast for these lengths; keep "sdpa" for generate() only.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = base.config._attn_implementation
    if name is None or name == previous:
        yield
        return
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


@dataclass
class ResponseOutput:
    logprobs: Tensor  # [N, R] float32 log p(response token | prefix) at the sampling temperature
    entropy: Tensor  # [N, R] float32 entropy of the tempered next-token distribution (no grad)
    hidden: Tensor  # [N, R, H] last hidden state at the positions that predict the response tokens


def response_logprobs(model: nn.Module, responses: Tensor, temperature: float, attn: str | None = None,
                      **model_inputs: Tensor) -> ResponseOutput:
    """Forward `model` (a HF causal LM, peft-wrapped or not) on `model_inputs` whose last R tokens are
    `responses` [N, R]; logits only on the R positions that predict them, divided by `temperature`.

    model_inputs: input_ids or inputs_embeds (e.g. with soft prompts prepended), attention_mask and
    position_ids (see `left_pad_position_ids`). attn: attention kernel for this forward (see
    `attention_implementation`; pass the same one, rl.logprob_attention, to every log-prob forward).
    """
    if temperature <= 0:
        raise ValueError(f"rl.temperature={temperature} must be > 0 (sampling and log-probs share it)")
    length = responses.shape[1]
    with attention_implementation(model, attn):
        out = model(**model_inputs, logits_to_keep=length + 1, output_hidden_states=True, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)  # no second [N, R, V] log-softmax tensor in the graph
    logprobs = logits.gather(-1, responses.unsqueeze(-1)).squeeze(-1) - log_norm
    with torch.no_grad():
        entropy = log_norm - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    hidden = out.hidden_states[-1][:, -length - 1:-1]
    return ResponseOutput(logprobs, entropy, hidden)
