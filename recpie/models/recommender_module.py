"""Trains the backbone alone: full-softmax CE on train windows, val MRR for checkpoints, full-rank test.

The loss weights each target: trajectory ends (what val/test samples are) count ``trajectory_end_weight``
times, targets never visited before by the user ``new_poi_weight`` times (they are rarely predictable and
otherwise blur the ordering of the user's own places, which decides Acc@10 on NYC).

Every epoch reseeds torch's RNG (dropout) and the train sampler's generator from (seed, epoch), so a
run resumed from an epoch-boundary checkpoint replays exactly what the uninterrupted run would have
done (Lightning checkpoints hold no RNG state). Under DDP the evaluator's RankMetric gathers the
ranks of all processes and counts each sample once.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from data_modules.batches import IGNORE, StepStream
from recpie.components.backbone import Backbone
from recpie.components.config import BackboneConfig, TrainConfig
from recpie.data.fraction import supervision_draw
from recpie.data.types import CheckinData
from recpie.evaluation import RankMetric, metrics_from_ranks, ranks_from_scores
from recpie.evaluation.breakdowns import split_targets
from recpie.evaluation.config import EvalConfig
from recpie.evaluation.export import topk_from_scores, write_topk_jsonl
from recpie.utils.checkpoints import DRAW_KEY
from recpie.utils.seeds import epoch_seed


def window_ends(batch: dict[str, torch.Tensor], session_gap_s: float) -> torch.Tensor:
    """bool [B, L]: the target ends its trajectory (the next check-in comes more than a session gap
    later). Val/test samples are all trajectory ends; the train period is fully observed, so this
    hindsight is the protocol's own. Unknown at a window's last position (its following check-in is not
    in the batch): False."""
    nt = batch["next_time"]
    ends = torch.zeros_like(batch["mask"])
    ends[:, :-1] = (nt[:, 1:] - nt[:, :-1]) > session_gap_s
    return ends


def target_loss_weight(ends: torch.Tensor, visited: torch.Tensor, train_cfg: TrainConfig) -> torch.Tensor:
    """Loss weight per target (any shape): ``trajectory_end_weight`` where it ends its trajectory, times
    ``new_poi_weight`` where it was not visited before. The backbone's warm-up (windows) and the joint
    phase (samples) use the same objective: with plain cross-entropy in the joint phase the NYC demo's
    control lost 0.025 test MRR to its warm-up backbone in 80 steps."""
    weight = 1.0 + (train_cfg.trajectory_end_weight - 1.0) * ends.float()
    return weight * (1.0 + (train_cfg.new_poi_weight - 1.0) * (~visited).float())


def sample_ends_trajectory(data: CheckinData, split: str) -> torch.Tensor:
    """bool [m]: sample i's target ends its trajectory as the train period shows it (the user's next
    check-in is in another trajectory and before t80; unknown, so False, when it falls later)."""
    t = data.splits[split].target
    nxt = np.minimum(t + 1, len(data.poi) - 1)
    end = ((t + 1 < len(data.poi)) & (data.user[nxt] == data.user[t]) & (data.trajectory[nxt] != data.trajectory[t])
           & (data.time[nxt] < data.t80))
    return torch.from_numpy(end)


# below this share of a batch's positions holding a target, the loss computes logits at the targets only
# (Backbone.target_logits): the same values, cheaper; full data keeps the one whole-window pass
SPARSE_TARGETS = 0.5


def lr_factor(step: int, train_cfg: TrainConfig) -> float:
    """The learning rate at optimizer step ``step`` as a share of ``train.lr``: linear warm-up, cosine decay to
    ``min_lr_ratio`` over ``decay_steps``, then constant (TrainConfig documents the keys)."""
    warm, decay, floor = train_cfg.warmup_steps, train_cfg.decay_steps, train_cfg.min_lr_ratio
    if step < warm:
        return (step + 1) / warm
    if not decay:
        return 1.0
    progress = min(1.0, (step - warm) / decay)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class RecommenderModule(L.LightningModule):
    def __init__(self, backbone_cfg: BackboneConfig, train_cfg: TrainConfig, eval_cfg: EvalConfig,
                 data: CheckinData, max_len: int, seed: int = 0, export_path: str | Path | None = None,
                 session_gap_hours: float = 24.0):
        """export_path: where ``trainer.test`` writes the per-sample top-K JSONL (None = no export);
        session_gap_hours: the data's trajectory gap (for the trajectory-end loss weight)."""
        super().__init__()
        self.session_gap_s = session_gap_hours * 3600.0
        self.train_cfg, self.eval_cfg, self.data, self.seed = train_cfg, eval_cfg, data, seed
        self.export_path = Path(export_path) if export_path else None
        self.backbone = Backbone(backbone_cfg, data, max_len)
        self.acc = RankMetric()  # a child module: it follows the module's device and syncs over DDP
        self.results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._fit_seconds_before = 0.0

    def configure_optimizers(self):
        tc = self.train_cfg
        opt = torch.optim.AdamW(self.backbone.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        if not tc.warmup_steps and not tc.decay_steps:
            return opt
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, tc))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        s = epoch_seed(self.seed, self.current_epoch)
        torch.manual_seed(s)
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)  # under Lightning's DDP wrapper
        for candidate in (sampler, inner):
            if isinstance(candidate, StepStream):
                candidate.set_epoch(self.current_epoch)
        if hasattr(sampler, "generator"):  # a RandomSampler: give it its own generator (the DataLoader
            # draws worker seeds from the shared one at times that differ between fresh and resumed runs)
            sampler.generator = torch.Generator().manual_seed(s)

    # ------------------------------------------------------------------ the fit's own record
    # The seconds spent fitting, summed over every invocation that trained, travel in the checkpoints: a
    # finished fit run again reports the seconds it took, not the zero of a run that trained nothing. The
    # supervision draw of the data travels too: the backbone's prior is built from the kept train steps, so a
    # loader checks it (recpie.utils.checkpoints.check_draw).
    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fit_seconds"] = self.fit_seconds
        checkpoint[DRAW_KEY] = supervision_draw(self.data)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._fit_seconds_before = float(checkpoint.get("fit_seconds", 0.0))
        self._fit_started = time.perf_counter()

    @property
    def fit_seconds(self) -> float:
        started = getattr(self, "_fit_started", None)
        return self._fit_seconds_before + (time.perf_counter() - started if started is not None else 0.0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        weight = target_loss_weight(window_ends(batch, self.session_gap_s), self.backbone.target_visited(batch),
                                    self.train_cfg)
        target, smoothing = batch["target"], self.train_cfg.label_smoothing
        if (target != IGNORE).float().mean() < SPARSE_TARGETS:  # a low train fraction: logits at targets only
            logits, (rows, pos) = self.backbone.target_logits(batch)
            loss = self.backbone.loss(logits, target[rows, pos], smoothing, weight[rows, pos])
        else:
            loss = self.backbone.loss(self.backbone(batch), target, smoothing, weight)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["user"]))
        return loss

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], with_topk: bool) -> None:
        scores = self.backbone.score(self.backbone.user_state(batch), batch)
        ranks = ranks_from_scores(scores, batch["target"][:, -1])
        topk = topk_from_scores(scores, self.eval_cfg.topk) if with_topk else None
        self.acc.update(batch["sample_id"], ranks, topk)

    def _eval_end(self, split: str) -> dict[str, float]:
        limit = self._limit(split)
        full = not self.trainer.sanity_checking and isinstance(limit, float) and limit == 1.0
        self.acc.expected = len(self.data.splits[split]) if full else None
        ids, ranks, topk = self.acc.compute()
        self.acc.reset()
        metrics = metrics_from_ranks(ranks)
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, prog_bar=name == "mrr", rank_zero_only=False)
        self.results[split] = (ids, ranks, topk)
        return metrics

    def _limit(self, split: str) -> float | int:
        return self.trainer.limit_val_batches if split == "val" else self.trainer.limit_test_batches

    def on_validation_epoch_start(self) -> None:
        self.acc.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, with_topk=False)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self.acc.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, with_topk=True)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
        ids, ranks, topk = self.results["test"]
        if self.export_path is not None and self.trainer.is_global_zero:
            write_topk_jsonl(self.export_path, ids, topk, split_targets(self.data, "test")[ids], ranks)
