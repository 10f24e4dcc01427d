"""Statistics over masked positions (response tokens up to the first EOS)."""
from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the positions where mask is 1."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance over the masked positions (0 when fewer than two)."""
    mean = masked_mean(x, mask)
    n = mask.to(x.dtype).sum()
    if n < 2:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return ((x - mean) ** 2 * mask.to(x.dtype)).sum() / (n - 1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked positions; masked-out positions come back as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)
