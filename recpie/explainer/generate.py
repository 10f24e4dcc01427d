"""Batched, left-padded decoding with the soft prompt through the explainer's output head.

The loop is ours, not `model.generate`: it runs the transformer body with a KV cache and applies only the
output head the log-prob forward uses (the whole vocabulary or the data's tokens, see vocabulary.py), so
sampling and PPO's log-probs are one distribution, and no step computes 262k logits it does not need.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from recpie.explainer.forward import OutputHead, decoder_of, response_mask
from recpie.explainer.kv_cache import grouped_prefill, keep_rows
from recpie.explainer.soft_prompt import build_inputs


@dataclass
class Generation:
    """One batch of explanations. Responses are right-padded after the first EOS, which stays in the mask."""

    texts: list[str]  # text_prefix + decoded response, without special tokens and what follows the first EOS
    sequences: torch.Tensor  # int64 [B, T]: response token ids (pad after EOS)
    response_mask: torch.Tensor  # int64 [B, T]: 1 up to and including the first EOS
    prompt_ids: torch.Tensor  # int64 [B, L]: left-padded prompt ids
    prompt_mask: torch.Tensor  # int64 [B, L]
    ended: torch.Tensor  # bool [B]: the response contains an EOS (else it hit max_new_tokens)

    @property
    def prompt_len(self) -> int:
        return self.prompt_ids.shape[1]

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sequences [B, L+T], attention mask, response mask): what `Explainer.response_logprobs` reads."""
        return (torch.cat([self.prompt_ids, self.sequences], 1), torch.cat([self.prompt_mask, self.response_mask], 1),
                self.response_mask)


def eos_ids(model, tok: PreTrainedTokenizerBase) -> list[int]:
    ids = {tok.eos_token_id}
    extra = model.generation_config.eos_token_id
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


# A batch drops its ended rows once they are this share of its rows. A drop copies the kept rows' KV cache
# (about one step's attention reads); each dropped row saves its share of every later step.
DROP_SHARE = 1 / 8


@torch.no_grad()
def decode(model, head: OutputHead, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, *,
           eos: list[int], pad: int, sample: bool, temperature: float, max_new_tokens: int,
           prefill_tokens: int, drop_share: float | None = DROP_SHARE) -> torch.Tensor:
    """Response ids [B, <= max_new_tokens] after left-padded inputs: greedy (argmax) or sampled from
    softmax(logits / temperature) (no top-k/top-p: what PPO's log-probs assume); pad after a row's EOS.
    The prompts are prefilled ``prefill_tokens`` at a time in groups of similar length (kv_cache.py).
    Rows that ended leave the batch (inputs and KV cache) once they are ``drop_share`` of it (None: never);
    a row's tokens do not depend on the rows beside it, so greedy tokens are the same either way."""
    body = decoder_of(model)
    cache, hidden = grouped_prefill(body, embeds, mask, position_ids, embeds.shape[1] + max_new_tokens,
                                    prefill_tokens)
    weight = head.weight()
    eos_t = torch.tensor(eos, device=embeds.device)
    pos = position_ids[:, -1:]
    out = torch.full((len(embeds), max_new_tokens), pad, dtype=torch.long, device=embeds.device)
    live = torch.arange(len(embeds), device=embeds.device)  # the batch rows still being decoded
    done = torch.zeros(len(embeds), dtype=torch.bool, device=embeds.device)  # per live row: it has ended
    for step in range(max_new_tokens):
        logits = head.logits(hidden, weight)
        if sample:
            pick = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
        else:
            pick = logits.argmax(-1)
        token = head.to_vocab(pick).masked_fill(done, pad)
        out[live, step] = token
        done |= torch.isin(token, eos_t)
        ended = int(done.sum())
        if ended == len(live) or step + 1 == max_new_tokens:
            break
        if drop_share is not None and ended and ended >= drop_share * len(live):
            keep = (~done).nonzero().squeeze(1)
            live, token, mask, pos, done = live[keep], token[keep], mask[keep], pos[keep], done[keep]
            keep_rows(cache, keep)
        mask, pos = torch.cat([mask, mask.new_ones(len(mask), 1)], 1), pos + 1
        out_step = body(input_ids=token[:, None], attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        hidden = out_step.last_hidden_state[:, -1]
    return out[:, :step + 1]


@contextmanager
def merged_lora(model) -> Iterator[bool]:
    """Inside the block every LoRA projection of ``model`` runs as one matmul: its float32 base weight is
    swapped for a merged copy (W + scale * B @ A) and the adapters are off; on exit the weights and
    adapters are as before. Yields whether it merged.

    Why: an adapted projection costs its base matmul plus two thin matmuls, a scaling and an add over
    [tokens, out] (about a tenth of a prefill's CPU time, docs/results.md); the copies cost about 0.3 s and
    400 MB for Gemma 3 270M per generate call. Only plain float32 nn.Linear bases are merged: a delta rounded
    into bf16/fp16 or 4-bit weights would move sampling away from the log-prob passes (which add the
    float32 LoRA path); in float32 the two differ by float rounding (about 1e-6 relative in hidden states)."""
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    if not layers or not hasattr(model, "disable_adapter") or not all(
            type(m.base_layer) is nn.Linear and m.base_layer.weight.dtype == torch.float32 and not m.merged
            and not m.lora_variant for m in layers):
        yield False
        return
    originals = [m.base_layer.weight for m in layers]
    try:
        for m, weight in zip(layers, originals, strict=True):
            delta = sum(m.get_delta_weight(a) for a in m.active_adapters if a in m.lora_A)
            m.base_layer.weight = nn.Parameter(weight + delta, requires_grad=False)
        with model.disable_adapter():
            yield True
    finally:
        for m, weight in zip(layers, originals, strict=True):
            m.base_layer.weight = weight


def static_generate(model, embeds: torch.Tensor, mask: torch.Tensor, *, eos: list[int], pad: int, sample: bool,
                    temperature: float, max_new_tokens: int) -> torch.Tensor:
    """transformers' generate with a static KV cache, which compiles the decode step (an H200: five times
    faster once compiled); the whole vocabulary's head, sampled as `decode` samples."""
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, eos_token_id=eos, pad_token_id=pad,
                           cache_implementation="static",
                           **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sample else {}))
    return model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=cfg)


@torch.no_grad()
def generate(
    model, tok: PreTrainedTokenizerBase, prompts: list[str], soft: torch.Tensor | None, *, head: OutputHead,
    sample: bool, temperature: float, max_new_tokens: int, prefill_tokens: int, static_cache: bool = False,
    text_prefix: str = "",
) -> Generation:
    """Explanations of `prompts` (dropout off while decoding, LoRA merged where exact to float rounding; the
    module's mode is restored afterwards).
    `text_prefix` (the forced start the prompts end with) is prepended to the decoded texts."""
    device = model.get_input_embeddings().weight.device
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
    embeds, mask, pos = build_inputs(model, enc.input_ids, enc.attention_mask, soft)
    eos = eos_ids(model, tok)
    was_training = model.training
    model.eval()
    try:
        kwargs = dict(eos=eos, pad=tok.pad_token_id, sample=sample, temperature=temperature,
                      max_new_tokens=max_new_tokens)
        with merged_lora(model):
            if static_cache:
                seq = static_generate(model, embeds, mask, **kwargs)
            else:
                seq = decode(model, head, embeds, mask, pos, prefill_tokens=prefill_tokens, **kwargs)
    finally:
        model.train(was_training)
    resp_mask, ended = response_mask(seq, eos)
    seq = seq.masked_fill(resp_mask == 0, tok.pad_token_id)
    texts = [text_prefix + t for t in tok.batch_decode(seq, skip_special_tokens=True)]
    return Generation(texts, seq, resp_mask, enc.input_ids, enc.attention_mask, ended)
