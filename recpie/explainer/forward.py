"""The LLM's forward helpers: token log-probs of sampled responses, the output head (whole vocabulary or
a subset), and the masks and position ids of left-padded batches. Generation, the encoder, the soft prompt
and PPO (recpie.rl, the layer above) all forward the LLM through these.

A rollout row is [left-padded prompt | response of R tokens]. The forward stops at the last hidden
states; the output head is applied only on the R positions that predict response tokens, a chunk of
positions at a time, and each chunk's logits are recomputed in the backward instead of kept: with a
262k vocabulary, [N, R, V] float32 logits were gigabytes.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from recpie.utils.batching import in_row_order


def left_pad_position_ids(attention_mask: Tensor) -> Tensor:
    """Position ids that start at 0 on the first real token of each left-padded row (as generate uses)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_mask(responses: Tensor, eos_token_id: int | list[int]) -> tuple[Tensor, Tensor]:
    """(mask [N, R], has_eos [N]): 1 on tokens up to and including the first EOS (any of the ids), 0 after."""
    is_eos = torch.isin(responses, torch.tensor(eos_token_id, device=responses.device))
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


class OutputHead:
    """The LM's output layer, over the whole vocabulary or a subset of token ids (`ids`, sorted): sampling and
    every log-prob use the same head, so a policy restricted to the subset stays on-policy."""

    def __init__(self, model: nn.Module, ids: Tensor | None = None):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.layer = base.get_output_embeddings()
        self.softcap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
        self.ids = ids
        self.index = None  # full id -> position in the head (-1: not in it)
        if ids is not None:
            self.index = torch.full((self.layer.weight.shape[0],), -1, dtype=torch.long, device=ids.device)
            self.index[ids] = torch.arange(len(ids), device=ids.device)

    def weight(self) -> Tensor:
        return self.layer.weight if self.ids is None else self.layer.weight[self.ids]

    def logits(self, hidden: Tensor, weight: Tensor | None = None) -> Tensor:
        """float32 logits [..., V'] of last hidden states."""
        logits = (hidden @ (self.weight() if weight is None else weight).T).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def to_head(self, tokens: Tensor) -> Tensor:
        """Full-vocabulary ids -> head positions (ids outside the head, e.g. padding, map to 0)."""
        return tokens if self.index is None else self.index[tokens].clamp(min=0)

    def contains(self, tokens: Tensor) -> Tensor:
        """bool, per token: the head can produce it."""
        return torch.ones_like(tokens, dtype=torch.bool) if self.index is None else self.index[tokens] >= 0

    def to_vocab(self, positions: Tensor) -> Tensor:
        return positions if self.ids is None else self.ids[positions]


def decoder_of(model: nn.Module) -> nn.Module:
    """The transformer body (returns last hidden states, no logits) of a HF causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


@dataclass
class ResponseOutput:
    logprobs: Tensor  # [N, R] float32 log p(response token | prefix) at the sampling temperature
    entropy: Tensor  # [N, R] float32 entropy of the tempered next-token distribution (no grad)
    hidden: Tensor  # [N, R, H] last hidden state at the positions that predict the response tokens


def trim_padding(sequences: Tensor, attention_mask: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The rows without the columns that are padding in every row: left of the longest prompt and right of
    the longest response (what a row scores does not depend on its batch's padding)."""
    first = int(attention_mask.any(0).nonzero()[0])
    kept = int(response_mask.any(0).nonzero().max()) + 1 if response_mask.any() else 1
    end = sequences.shape[1] - response_mask.shape[1] + kept
    return sequences[:, first:end], attention_mask[:, first:end], response_mask[:, :kept]


def scatter_rows(parts: list[tuple[Tensor, ResponseOutput]], width: int) -> ResponseOutput:
    """One ResponseOutput of ``width`` response positions, rows in their original order, from parts computed
    on row groups (row indices, output over a prefix of the positions); positions a part lacks are 0."""
    groups = [index for index, _ in parts]

    def widened(value: Tensor) -> Tensor:
        return torch.nn.functional.pad(value, [0, 0] * (value.dim() - 2) + [0, width - value.shape[1]])

    return ResponseOutput(*(in_row_order(groups, [widened(getattr(part, name)) for _, part in parts])
                            for name in ("logprobs", "entropy", "hidden")))


def head_logprobs(head: OutputHead, hidden: Tensor, tokens: Tensor, temperature: float,
                  chunk: int = 16) -> tuple[Tensor, Tensor]:
    """(log p(tokens) [N, R], entropy [N, R]) under `head` at `temperature`, `chunk` positions at a time:
    log-softmax via logsumexp, the chunk's logits recomputed in the backward (never all kept at once)."""
    weight, targets = head.weight(), head.to_head(tokens)

    def part(h: Tensor, w: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        logits = head.logits(h, w) / temperature
        log_norm = torch.logsumexp(logits, -1)
        with torch.no_grad():
            entropy = log_norm - (torch.softmax(logits, -1) * logits).sum(-1)
        return logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - log_norm, entropy

    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    parts = [checkpoint(part, hidden[:, s:s + chunk], weight, targets[:, s:s + chunk], use_reentrant=False)
             if grad else part(hidden[:, s:s + chunk], weight, targets[:, s:s + chunk])
             for s in range(0, tokens.shape[1], chunk)]
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


def response_logprobs(model: nn.Module, responses: Tensor, temperature: float, attn: str | None = None,
                      head: OutputHead | None = None, **model_inputs: Tensor) -> ResponseOutput:
    """Forward `model` (a HF causal LM, peft-wrapped or not) on `model_inputs` whose last R tokens are
    `responses` [N, R]; the head (default: the whole vocabulary) only on the R positions that predict them,
    divided by `temperature`.

    model_inputs: input_ids or inputs_embeds (e.g. with soft prompts prepended), attention_mask and
    position_ids (see `left_pad_position_ids`). attn: attention kernel for this forward (see
    `attention_implementation`; pass the same one, rl.logprob_attention, to every log-prob forward).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (sampling and log-probs share it)")
    length = responses.shape[1]
    with attention_implementation(model, attn):
        last = decoder_of(model)(**model_inputs, use_cache=False).last_hidden_state
    hidden = last[:, -length - 1:-1]
    logprobs, entropy = head_logprobs(head or OutputHead(model), hidden, responses, temperature)
    return ResponseOutput(logprobs, entropy, hidden)


def continuation_logprobs(model: nn.Module, head: OutputHead, temperature: float, continuations: Tensor,
                          continuation_mask: Tensor, attn: str | None = None, **prompt_inputs: Tensor) -> Tensor:
    """[B, C] log p(continuation c | prompt b) at ``temperature``, each summed over its tokens: the prompt
    (left-padded ``prompt_inputs``: inputs_embeds, attention_mask, position_ids) is forwarded once, its KV
    cache repeated for its C continuations (``continuations`` [B * C, W] token ids, right-padded, grouped
    by prompt; ``continuation_mask`` [B * C, W]). With grad when grad is enabled (the cache keeps the
    prompt's graph): the choice loss of explainer.choice=scored."""
    mask, pos = prompt_inputs["attention_mask"], prompt_inputs["position_ids"]
    b, c = len(mask), len(continuations) // len(mask)
    body = decoder_of(model)
    with attention_implementation(model, attn):
        pre = body(**prompt_inputs, use_cache=True)
        cache = pre.cache
        cache.batch_repeat_interleave(c)
        width = continuations.shape[1]
        cont_pos = pos[:, -1:].repeat_interleave(c, 0) + 1 + torch.arange(width, device=pos.device)
        after = body(input_ids=continuations, attention_mask=torch.cat([mask.repeat_interleave(c, 0),
                                                                         continuation_mask], 1),
                     position_ids=cont_pos, cache=cache, use_cache=True).last_hidden_state
    # the hidden state that predicts continuation token t: the prompt's last for t = 0, else token t - 1's
    hidden = torch.cat([pre.last_hidden_state[:, -1:].repeat_interleave(c, 0), after[:, :-1]], 1)
    logprobs, _ = head_logprobs(head, hidden, continuations, temperature)
    return (logprobs * continuation_mask).sum(1).view(b, c)
