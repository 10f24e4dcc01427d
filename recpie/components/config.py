"""The ``backbone``, ``train`` and ``baselines`` config sections (the recommender and its baselines)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

Geo = StrEnum("Geo", ["fourier", "grid"])  # how the backbone sees a POI's location


@dataclass
class BackboneConfig:
    hidden_size: int = 64  # d: width of embeddings, Transformer and the user state h
    num_layers: int = 2  # causal Transformer blocks
    num_heads: int = 2  # attention heads per block
    dropout: float = 0.3  # dropout on embeddings, attention and feed-forward
    use_user: bool = False  # add a user embedding to every step's input (defaults: docs/decisions.md)
    geo: Geo = Geo.fourier  # POI location features: "fourier" (sin/cos of lat/lon) or "grid" (cell embedding)
    fourier_bands: int = 16  # frequencies per coordinate of the Fourier geo features
    grid_cells: int = 64  # "grid": cells per axis over the POIs' bounding box
    copy: bool = True  # add copy logits from the history (visit counts weighted by recency and hour)
    # recency decays per age (0.995: the val-tuned counter's, so the backbone can rank as it does)
    copy_decays: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.99, 0.995])
    copy_bandwidths_h: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])  # hour-kernel widths
    copy_kernel_decay: float = 0.99  # recency decay applied inside the hour-kernel copy features
    copy_time_scales_days: list[float] = field(default_factory=lambda: [7.0, 60.0])  # exp(-elapsed days / tau)
    copy_daytype: bool = True  # a copy feature for visits on the request's day type (weekday/weekend) and hour
    # copy features count the whole history: add the batch's summary of the check-ins before the window
    # (needs data.history_summary=true; its decays, time scales and kernel decay come from data_modules.batches)
    copy_full_history: bool = True
    # each count feature enters as log1p(count / scale) per scale (small scales resolve small kernel weights)
    copy_log_scales: list[float] = field(default_factory=lambda: [1.0, 0.01])
    # add w(h) * log1p(km from the request's last check-in) to every POI's logit, w linear in h: where the
    # user is now sets which places (new ones too) are within reach
    distance_prior: bool = True
    # add w(h) * log1p(train-period count of steps from the request's last POI to each POI) (first-order
    # transitions of all users, the Markov baseline's counts; a train step's own transition is left out)
    transition_prior: bool = True


@dataclass
class TrainConfig:
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 0.1  # AdamW weight decay
    # The budget's unit, an "epoch": one validation (and checkpoint) every ``steps_per_epoch`` optimizer steps,
    # the train windows drawn from an endless seeded stream of shuffled passes (0: one pass over the windows,
    # ~69 steps on NYC at every train fraction). A fixed step count makes early stopping and the epoch cap
    # mean the same number of updates whatever the data size; windows without a kept target are never drawn.
    steps_per_epoch: int = 0
    max_epochs: int = 12  # upper bound on epochs (of steps_per_epoch steps, or passes over the windows)
    patience: int = 3  # early stopping: epochs without a val MRR gain before stopping
    # learning rate: linear warm-up from lr / warmup_steps to lr over the first warmup_steps optimizer steps,
    # then cosine decay to lr * min_lr_ratio over the next decay_steps (0: constant after the warm-up), then
    # constant; in steps, not epochs, so a schedule means the same at every train fraction
    warmup_steps: int = 0
    decay_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # gradient norm clipping (0 = off)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    # loss weight of targets that end their trajectory (val/test samples all do), relative to other steps
    trajectory_end_weight: float = 5.0
    # loss weight of targets the user never visited before (new POIs), relative to revisits: new POIs are
    # rarely predictable and their gradients otherwise blur the ordering of the visited places
    new_poi_weight: float = 0.3
    fast_max_epochs: int = 2  # max_epochs when run.fast is set
    fast_limit_batches: float = 0.2  # fraction of train batches per epoch when run.fast is set


@dataclass
class BaselinesConfig:
    counter_decay: float = 0.99  # the fixed-decay counter of the design note
    decay_grid: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.98, 0.99, 0.995, 1.0])  # val-tuned
    bandwidth_grid_h: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 4.0])  # time-aware
