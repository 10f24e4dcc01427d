"""Batched, left-padded generation with the soft prompt, and the log-prob forward PPO needs on responses."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from recpie.explainer.soft_prompt import build_inputs
from recpie.rl.logprobs import response_logprobs as token_logprobs


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


def eos_ids(model, tok: PreTrainedTokenizerBase) -> list[int]:
    ids = {tok.eos_token_id}
    extra = model.generation_config.eos_token_id
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


def mask_after_eos(seq: torch.Tensor, eos: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B,T] keeping tokens up to and including the first EOS, ended [B])."""
    is_eos = torch.isin(seq, torch.tensor(eos, device=seq.device))
    before = is_eos.long().cumsum(1) - is_eos.long()  # EOS seen strictly before t
    return (before == 0).long(), is_eos.any(1)


@torch.no_grad()
def generate(
    model, tok: PreTrainedTokenizerBase, prompts: list[str], soft: torch.Tensor | None, *,
    sample: bool, temperature: float, max_new_tokens: int, static_cache: bool = False, text_prefix: str = "",
) -> Generation:
    """Sampling uses do_sample, top_k=0, top_p=1 at `temperature` (what PPO's log-probs assume); greedy
    otherwise. Dropout is off during generation; the module's mode is restored afterwards. `text_prefix`
    (the forced start the prompts end with) is prepended to the decoded texts."""
    device = model.get_input_embeddings().weight.device
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
    embeds, mask, _ = build_inputs(model, enc.input_ids, enc.attention_mask, soft)
    eos = eos_ids(model, tok)
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=sample, eos_token_id=eos, pad_token_id=tok.pad_token_id,
        cache_implementation="static" if static_cache else None,
        **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sample else {}),
    )
    was_training = model.training
    model.eval()
    try:
        seq = model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_cfg)
    finally:
        model.train(was_training)
    resp_mask, ended = mask_after_eos(seq, eos)
    seq = seq.masked_fill(resp_mask == 0, tok.pad_token_id)
    texts = [text_prefix + t for t in tok.batch_decode(seq, skip_special_tokens=True)]
    return Generation(texts, seq, resp_mask, enc.input_ids, enc.attention_mask, ended)


def response_logprobs(
    model, gen: Generation, soft: torch.Tensor | None, temperature: float, attn: str | None = "eager"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs [B,T] (0 where masked) of the responses and the last hidden states [B,T,H]
    that predicted them, through the PPO code's forward (logits on response positions only; eager
    attention by default, since SDPA gives NaN gradients with left padding on CUDA)."""
    ids = torch.cat([gen.prompt_ids, gen.sequences], 1)
    mask = torch.cat([gen.prompt_mask, gen.response_mask], 1)
    embeds, full_mask, pos = build_inputs(model, ids, mask, soft)
    out = token_logprobs(model, gen.sequences, temperature, attn=attn, inputs_embeds=embeds,
                         attention_mask=full_mask, position_ids=pos)
    return out.logprobs * gen.response_mask, out.hidden
