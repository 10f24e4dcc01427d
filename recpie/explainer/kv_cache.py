"""A KV cache allocated once for the whole decoding, and prefill in groups of rows of similar length.

transformers' DynamicCache concatenates every layer's whole cache with each new token: copies that cost
time and, on a CPU, left gigabytes of freed blocks resident (docs/results.md). Here every layer owns one buffer of
[batch, kv heads, prompt + max new tokens, head dim], each step writes its token in place and attention
reads a view; rows that ended can be dropped from every layer at once (``keep_rows``). Sliding-window
layers return what transformers' sliding layer returns (the last window - 1 + new positions), so the
attention masks it builds from ``get_mask_sizes`` still apply.

Prefill runs in groups of rows sorted by length (each left-padded only to its group's longest), then
each group's keys and values are placed, right-aligned, into the batch's buffers: a batch of mixed
lengths no longer computes every row at the longest row's length.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer, DynamicSlidingWindowLayer

from recpie.utils.batching import length_groups


class _Buffered:
    """Keys and values in preallocated buffers; ``length`` positions are filled."""

    capacity: int
    length: int = 0

    def allocate(self, like: torch.Tensor, batch: int) -> None:
        self.lazy_initialization(like, like)  # the parent layer's device bookkeeping
        shape = (batch, like.shape[1], self.capacity, like.shape[3])
        self.key_buffer = like.new_zeros(shape)
        self.value_buffer = like.new_zeros(shape)

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> int:
        """Append [B, heads, n, dim] keys and values in place; returns the new length."""
        if not self.is_initialized:
            self.allocate(keys, keys.shape[0])
        end = self.length + keys.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer of {self.capacity} positions overflows at {end}")
        self.key_buffer[:, :, self.length:end] = keys
        self.value_buffer[:, :, self.length:end] = values
        self.set_length(end)
        return end

    def set_length(self, end: int) -> None:
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (the decoding drops rows that ended; one copy of the kept rows)."""
        self.key_buffer = self.key_buffer.index_select(0, rows)
        self.value_buffer = self.value_buffer.index_select(0, rows)
        self.set_length(self.length)

    def place(self, rows: torch.Tensor, group: _Buffered, end: int) -> None:
        """Copy a prefilled group's keys and values into batch rows ``rows``, ending at position ``end``."""
        if not self.is_initialized:
            raise RuntimeError("allocate the batch buffer before placing groups into it")
        start = end - group.length
        self.key_buffer[rows, :, start:end] = group.key_buffer[:, :, :group.length]
        self.value_buffer[rows, :, start:end] = group.value_buffer[:, :, :group.length]


class BufferLayer(_Buffered, DynamicLayer):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def update(self, key_states, value_states, *args, **kwargs):
        self.write(key_states, value_states)
        return self.keys, self.values


class SlidingBufferLayer(_Buffered, DynamicSlidingWindowLayer):
    def __init__(self, sliding_window: int, capacity: int):
        super().__init__(sliding_window=sliding_window)
        self.capacity = capacity

    def set_length(self, end: int) -> None:
        super().set_length(end)
        self.cumulative_length = end  # what the parent's get_mask_sizes reads

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.write(key_states, value_states)
        start = max(0, end - (self.sliding_window - 1 + key_states.shape[-2]))
        return self.key_buffer[:, :, start:end], self.value_buffer[:, :, start:end]


def keep_rows(cache: Cache, rows: torch.Tensor) -> None:
    """Keep only batch rows ``rows`` of a ``buffer_cache``, in every layer."""
    for layer in cache.layers:
        layer.keep_rows(rows)


def buffer_cache(config, capacity: int) -> Cache:
    """A cache of ``capacity`` positions per row, one layer per decoder layer of ``config``."""
    text = config.get_text_config(decoder=True)
    kinds = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
    window = getattr(text, "sliding_window", None)
    return Cache(layers=[SlidingBufferLayer(window, capacity) if kind == "sliding_attention" and window
                         else BufferLayer(capacity) for kind in kinds])


@torch.no_grad()
def grouped_prefill(body, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, capacity: int,
                    budget: int) -> tuple[Cache, torch.Tensor]:
    """(cache, last hidden state [B, H]) of left-padded inputs, prefilled ``budget`` tokens at a time in
    groups of similar length; the cache holds ``capacity`` positions per row, the prompt's filled."""
    width = embeds.shape[1]
    cache = buffer_cache(body.config, capacity)
    last = embeds.new_empty(len(embeds), embeds.shape[-1])
    for rows in length_groups(mask.sum(1), budget):
        cut = width - int(mask[rows].sum(1).max())  # the group's common left padding, dropped
        group = buffer_cache(body.config, width - cut)
        out = body(inputs_embeds=embeds[rows, cut:], attention_mask=mask[rows, cut:],
                   position_ids=position_ids[rows, cut:], cache=group, use_cache=True)
        last[rows] = out.last_hidden_state[:, -1]
        for layer, part in zip(cache.layers, group.layers, strict=True):
            if not layer.is_initialized:
                layer.allocate(part.key_buffer, len(embeds))
            layer.place(rows, part, width)
    for layer in cache.layers:
        layer.set_length(width)
    return cache, last
