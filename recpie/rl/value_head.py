"""The critic for GAE: a zero-initialised Linear on the policy's last hidden state, outside peft."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ValueHead(nn.Module):
    """Maps hidden states [N, R, H] to values [N, R] in float32; zero init so early values are 0."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1).float()


def value_head_for(model: nn.Module) -> ValueHead:
    """A value head sized for a Hugging Face model's config.hidden_size (text config for multimodal ones)."""
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ValueHead(int(config.hidden_size)).to(torch.float32)
