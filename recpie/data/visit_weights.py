"""How much a past visit counts for a request: the one definition of the hour kernel.

A visit counts ``decay ** age`` (age in check-ins) and, time-aware, also ``exp(-gap^2 / (2 bandwidth^2))``
with ``gap`` the circular distance in hours between its local hour of day and the request's. The counter
baselines (numpy) and the backbone's copy features (torch) both weigh visits with these functions, which
take numpy arrays and torch tensors alike.
"""
from __future__ import annotations

import numpy as np
import torch

HOURS_PER_DAY = 24


def hour_gap(hour, request_hour):
    """Circular distance in hours (0..12) between hours of day in [0, 24)."""
    half = HOURS_PER_DAY / 2
    return half - abs(half - abs(hour - request_hour))


def hour_kernel(gap, bandwidth_h: float):
    """Gaussian weight of a visit ``gap`` hours of day away from the request."""
    exp = torch.exp if isinstance(gap, torch.Tensor) else np.exp
    return exp(-(gap**2) / (2 * bandwidth_h**2))
