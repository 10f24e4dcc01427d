"""The backbone recommender: a SASRec-style causal Transformer with a copy path over the history.

Per-step input = POI + category + geo + local hour-of-week + position-from-the-end (+ user) embeddings,
plus the hour-of-week of the request that follows the step and the time gap to it (both known at
request time). The state h at a position scores every POI: ``h . E_poi + b`` (E tied to the input POI
embeddings) plus copy logits
``sum_f beta_f(h) * feature_f(poi)``, where the features are visit counts over the steps up to that
position, weighted by recency (decay ** age) or by closeness of the visit's local hour to the
request's (the counters' signals), log1p(count / scale)-compressed at one or more scales, with an indicator
"visited at all". With the batch's hist_* summary the counts cover the whole history, not just the window.
Two context priors add ``w(h) * prior(poi)``: log1p of the great-circle km from the check-in at the position,
and log1p of the train-period first-order transition counts from its POI (all users; a train step's own
transition left out). beta and w are linear in h, so a refined state h' = h + g W z changes every part.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_modules.batches import (
    HISTORY_DECAYS,
    HISTORY_KERNEL_DECAY,
    HISTORY_TIME_SCALES_DAYS,
    IGNORE,
    POSITION_KEYS,
)
from recpie.components.config import BackboneConfig
from recpie.data.geo import EARTH_RADIUS_KM, unit_vectors
from recpie.data.types import HOURS_PER_WEEK, CheckinData, PoiCatalogue
from recpie.data.visit_weights import hour_gap, hour_kernel

Batch = dict[str, torch.Tensor]
GAP_BUCKETS = 16  # log2-minute buckets of the time from a check-in to the request after it


def gap_bucket(batch: Batch) -> torch.Tensor:
    """[B, L] bucket of log2(1 + minutes) between each input check-in and the request that follows it."""
    minutes = (batch["next_time"] - batch["time"]).clamp(min=0).float() / 60.0
    return torch.log2(1.0 + minutes).long().clamp(max=GAP_BUCKETS - 1)


def geo_features(catalogue: PoiCatalogue, cfg: BackboneConfig) -> tuple[np.ndarray, int]:
    """Per-POI geo input (with a zero pad row) and its width: Fourier features or a grid-cell id."""
    lat, lon = np.asarray(catalogue.lat, np.float64), np.asarray(catalogue.lon, np.float64)
    x = (lat - lat.min()) / max(np.ptp(lat), 1e-9)
    y = (lon - lon.min()) / max(np.ptp(lon), 1e-9)
    if cfg.geo == "grid":
        n = cfg.grid_cells
        cell = np.minimum((x * n).astype(np.int64), n - 1) * n + np.minimum((y * n).astype(np.int64), n - 1)
        return np.append(cell, n * n), n * n + 1
    if cfg.geo != "fourier":
        raise ValueError(f"backbone.geo={cfg.geo!r}: use 'fourier' or 'grid'")
    freqs = math.pi * 2.0 ** np.linspace(0, 8, cfg.fourier_bands)
    ang = np.concatenate([x[:, None] * freqs, y[:, None] * freqs], axis=1)
    feats = np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float32)
    return np.vstack([feats, np.zeros((1, feats.shape[1]), np.float32)]), feats.shape[1]


class Backbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, data: CheckinData, max_len: int):
        """data: the check-ins (POI catalogue, users and, for the transition prior, train-period steps)."""
        super().__init__()
        catalogue, num_users = data.catalogue, data.num_users
        self.cfg, self.max_len = cfg, max_len
        self.num_pois = p = len(catalogue)
        self.hidden_size = d = cfg.hidden_size
        n_cat = len(catalogue.category_names)
        self.register_buffer("poi_category", torch.as_tensor(np.append(catalogue.category, n_cat)),
                             persistent=False)
        geo, geo_width = geo_features(catalogue, cfg)
        self.register_buffer("poi_geo", torch.as_tensor(geo), persistent=False)
        self.poi_emb = nn.Embedding(p + 1, d, padding_idx=p)
        self.cat_emb = nn.Embedding(n_cat + 1, d, padding_idx=n_cat)
        self.geo_emb = nn.Embedding(geo_width, d) if cfg.geo == "grid" else nn.Linear(geo_width, d)
        self.hour_emb = nn.Embedding(HOURS_PER_WEEK, d)
        self.next_hour_emb = nn.Embedding(HOURS_PER_WEEK, d)
        self.gap_emb = nn.Embedding(GAP_BUCKETS, d)
        self.pos_emb = nn.Embedding(max_len, d)
        self.user_emb = nn.Embedding(num_users, d) if cfg.use_user else None
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, 4 * d, cfg.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out_bias = nn.Parameter(torch.zeros(p))
        self.num_copy = ((len(cfg.copy_decays) + len(cfg.copy_bandwidths_h) + len(cfg.copy_time_scales_days)
                          + int(cfg.copy_daytype and bool(cfg.copy_bandwidths_h))) * len(cfg.copy_log_scales)
                         + 1) if cfg.copy else 0
        if cfg.copy and cfg.copy_full_history:
            unknown = [x for x in cfg.copy_decays if x != 1.0 and x not in HISTORY_DECAYS]
            unknown += [x for x in cfg.copy_time_scales_days if x not in HISTORY_TIME_SCALES_DAYS]
            if unknown or cfg.copy_kernel_decay != HISTORY_KERNEL_DECAY:
                raise ValueError(f"copy_full_history: the batch summary has no column for {unknown or 'the kernel'}"
                                 f" decay {cfg.copy_kernel_decay}; see data_modules.batches.HISTORY_*")
        if cfg.copy:
            self.copy_weight = nn.Linear(d, self.num_copy)
            nn.init.zeros_(self.copy_weight.weight)
            nn.init.constant_(self.copy_weight.bias, 1.0)  # features at scales other than the first start off
            nn.init.zeros_(self.copy_weight.bias[(self.num_copy - 1) // len(cfg.copy_log_scales): -1])
        num_priors = int(cfg.distance_prior) + int(cfg.transition_prior)
        self.prior_weight = nn.Linear(d, num_priors) if num_priors else None
        if self.prior_weight is not None:
            nn.init.zeros_(self.prior_weight.weight)  # the priors start without a say
            nn.init.zeros_(self.prior_weight.bias)
        if cfg.transition_prior:  # CSR rows of the train transition counts (pad POI: an empty row)
            t = data.train_transitions()
            for name, value in (("trans_crow", np.append(t.crow, t.crow[-1])), ("trans_col", t.col),
                                ("trans_val", t.count)):
                self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32 if name == "trans_val"
                                                           else torch.int64), persistent=False)
        if cfg.distance_prior:
            xyz = unit_vectors(catalogue.lat, catalogue.lon)
            self.register_buffer("poi_xyz", torch.as_tensor(np.vstack([xyz, np.zeros((1, 3))]), dtype=torch.float64),
                                 persistent=False)  # unit vectors (pad row 0); float64: 1 - cos of 1 km is 1e-8
        nn.init.normal_(self.poi_emb.weight, std=d**-0.5)

    # ------------------------------------------------------------------ encoder
    def _states(self, batch: Batch) -> torch.Tensor:
        poi, mask = batch["poi"], batch["mask"]
        b, length = poi.shape
        if length > self.max_len:
            raise ValueError(f"batch has {length} steps, the backbone was built for max_len={self.max_len}")
        geo = self.poi_geo[poi]
        x = (self.poi_emb(poi) + self.cat_emb(self.poi_category[poi]) + self.geo_emb(geo)
             + self.hour_emb(batch["hour_of_week"]) + self.next_hour_emb(batch["next_hour_of_week"])
             + self.gap_emb(gap_bucket(batch)))
        x = x + self.pos_emb(torch.arange(length - 1, -1, -1, device=poi.device))[None]
        if self.user_emb is not None:
            x = x + self.user_emb(batch["user"])[:, None]
        x = self.drop(x * mask[..., None])
        idx = torch.arange(length, device=poi.device)
        allowed = (idx[None, :] <= idx[:, None])[None] & (mask[:, None, :] | torch.eye(
            length, dtype=torch.bool, device=poi.device)[None])  # causal; pads only see themselves
        attn = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        attn = attn.repeat_interleave(self.cfg.num_heads, dim=0)
        return self.norm(self.encoder(x, mask=attn))

    def user_state(self, batch: Batch) -> torch.Tensor:
        """h [B, d]: the state at the last position (the sample's request)."""
        return self._states(batch)[:, -1]

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _window_phis(self, batch: Batch, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw per-visit weights of the window's check-ins seen from each query: ([B, Q, L, F], valid)."""
        poi, mask = batch["poi"], batch["mask"]
        length = poi.shape[1]
        age = (query[:, None] - torch.arange(length, device=poi.device)[None]).float()  # [Q, L]
        valid = ((age >= 0)[None] & mask[:, None, :]).float()  # [B, Q, L]
        hour = (batch["hour_of_week"] % 24)[:, None, :].float()
        req = (batch["next_hour_of_week"][:, query] % 24)[:, :, None].float()
        gap = hour_gap(hour, req)  # [B, Q, L]
        age = age.clamp(min=0)[None]
        kdecay = torch.pow(torch.tensor(self.cfg.copy_kernel_decay), age)
        kernels = [kdecay * hour_kernel(gap, bw) for bw in self.cfg.copy_bandwidths_h]
        phis = [valid] + [torch.pow(torch.tensor(dec), age) * valid for dec in self.cfg.copy_decays]
        phis += [k * valid for k in kernels]
        days = (batch["next_time"][:, query][:, :, None] - batch["time"][:, None, :]).float() / 86400.0
        phis += [torch.exp(-days.clamp(min=0) / tau) * valid for tau in self.cfg.copy_time_scales_days]
        if self.cfg.copy_daytype and kernels:  # same weekday/weekend type as the request, near its hour
            weekend = batch["hour_of_week"] // 24 >= 5
            req_weekend = batch["next_hour_of_week"][:, query] // 24 >= 5
            same_type = (weekend[:, None, :] == req_weekend[:, :, None]).float()
            phis.append(kernels[len(kernels) // 2] * same_type * valid)
        return torch.stack(phis, -1), valid

    @torch.no_grad()
    def _prefix_counts(self, batch: Batch, query: torch.Tensor) -> torch.Tensor:
        """The same features' sums over the check-ins before the window (batch hist_*): [B, Q, M, F].

        The summary holds sums relative to the latest check-in before the window; at a query, its
        ages shift by the number of window inputs up to the query, elapsed times by the request's time."""
        stats, mask = batch["hist_stats"].float(), batch["mask"]
        shift = mask.long().cumsum(1)[:, query].float()  # [B, Q]: age of the latest summarised check-in
        req = batch["next_hour_of_week"][:, query]
        cols = [stats[..., 0][:, None].expand(-1, len(query), -1)]
        for dec in self.cfg.copy_decays:
            col = 0 if dec == 1.0 else 1 + HISTORY_DECAYS.index(dec)
            cols.append(stats[..., col][:, None] * torch.pow(torch.tensor(dec), shift)[..., None])
        hours = stats[..., -48:]  # [B, M, 48]
        bin_hour = torch.arange(48, device=stats.device) % 24
        gap = hour_gap(bin_hour[None, None].float(), (req % 24)[..., None].float())  # [B, Q, 48]
        kdecay = torch.pow(torch.tensor(HISTORY_KERNEL_DECAY), shift)[..., None]
        kernels = [hour_kernel(gap, bw) * kdecay for bw in self.cfg.copy_bandwidths_h]
        cols += [torch.einsum("bqs,bms->bqm", k, hours) for k in kernels]
        days = (batch["next_time"][:, query] - batch["hist_time"][:, None]).float().clamp(min=0) / 86400.0
        for tau in self.cfg.copy_time_scales_days:
            col = 1 + len(HISTORY_DECAYS) + HISTORY_TIME_SCALES_DAYS.index(tau)
            cols.append(stats[..., col][:, None] * torch.exp(-days / tau)[..., None])
        if self.cfg.copy_daytype and kernels:
            bin_weekend = torch.arange(48, device=stats.device) >= 24
            same_type = (bin_weekend[None, None] == (req // 24 >= 5)[..., None]).float()
            cols.append(torch.einsum("bqs,bms->bqm", kernels[len(kernels) // 2] * same_type, hours))
        return torch.stack(cols, -1)

    @torch.no_grad()
    def copy_features(self, batch: Batch, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """History features per (query position, slot): ([B, Q, S, F], slot weight [B, Q, S], slot POI [B, S]).

        Slots are the L inputs, then (with the batch's hist_* summary of the check-ins before the window)
        one per distinct earlier POI; a slot's features aggregate every visit of its POI up to the query
        over the user's whole history. The slot weights make the slots of one POI add up to one copy logit."""
        poi = batch["poi"]
        phis, valid = self._window_phis(batch, query)
        same = (poi[:, :, None] == poi[:, None, :]).float()  # [B, L, L]
        counts = torch.einsum("bik,bqkf->bqif", same, phis)  # [B, Q, L, F]
        visits = counts[..., 0]
        weight = (visits > 0).float() * valid / visits.clamp(min=1)
        slot_poi = poi
        if self.cfg.copy_full_history and "hist_poi" in batch:
            hist_poi = batch["hist_poi"]
            length, m = poi.shape[1], hist_poi.shape[1]
            pre = self._prefix_counts(batch, query)  # [B, Q, M, F]
            match = (poi[:, :, None] == hist_poi[:, None, :]) & (hist_poi < self.num_pois)[:, None, :]
            hidx = torch.where(match.any(2), match.float().argmax(2), m)  # [B, L]: the input's prefix slot
            widx = torch.where(match.any(1), match.float().argmax(1), length)  # [B, M]: an input, same POI
            q = len(query)
            pad = torch.zeros_like(pre[:, :, :1])
            pre_p = torch.cat([pre, pad], 2)
            cnt_p = torch.cat([counts, torch.zeros_like(counts[:, :, :1])], 2)
            win_tot = counts + torch.gather(pre_p, 2, hidx[:, None, :, None].expand(-1, q, -1, pre.shape[-1]))
            pre_tot = pre + torch.gather(cnt_p, 2, widx[:, None, :, None].expand(-1, q, -1, pre.shape[-1]))
            in_window = torch.gather(torch.cat([visits, torch.zeros_like(visits[:, :, :1])], 2), 2,
                                     widx[:, None, :].expand(-1, q, -1)) > 0
            pre_weight = ((hist_poi < self.num_pois)[:, None, :] & ~in_window).float()
            counts = torch.cat([win_tot, pre_tot], 2)
            weight = torch.cat([weight, pre_weight], 2)
            slot_poi = torch.cat([poi, hist_poi], 1)
        seen = (counts[..., 0] > 0).float()
        feats = torch.cat([torch.log1p(counts[..., 1:] / scale) for scale in self.cfg.copy_log_scales]
                          + [seen[..., None]], -1)
        return feats, weight, slot_poi

    @torch.no_grad()
    def target_visited(self, batch: Batch) -> torch.Tensor:
        """[B, L] bool: each position's target POI was visited before (in the window up to the position,
        or, as the copy features count it, in the batch's summary of the check-ins before the window)."""
        poi, target = batch["poi"], batch["target"]
        pos = torch.arange(poi.shape[1], device=poi.device)
        earlier = (pos[None, :] <= pos[:, None])[None] & batch["mask"][:, None, :]  # [B, Q, L]
        visited = ((poi[:, None, :] == target[:, :, None]) & earlier).any(-1)
        if self.cfg.copy_full_history and "hist_poi" in batch:
            visited |= (batch["hist_poi"][:, None, :] == target[:, :, None]).any(-1)
        return visited

    @torch.no_grad()
    def log_distance_km(self, batch: Batch, query: torch.Tensor) -> torch.Tensor:
        """[B, Q, P] log1p(great-circle km) from the check-in at each query position to every POI."""
        here = self.poi_xyz[batch["poi"][:, query]]  # [B, Q, 3]
        cos = (here @ self.poi_xyz[: self.num_pois].T).clamp(-1.0, 1.0)
        half_chord = torch.sqrt((2.0 - 2.0 * cos).clamp(min=0.0)) / 2.0
        return torch.log1p(2.0 * EARTH_RADIUS_KM * torch.asin(half_chord.clamp(max=1.0))).float()

    @torch.no_grad()
    def log_transitions(self, batch: Batch, query: torch.Tensor) -> torch.Tensor:
        """[B, Q, P] log1p(train steps from the POI at each query position to every POI), leaving out the
        step being predicted when it is itself one of the counted train steps (batch "train_step")."""
        last = batch["poi"][:, query].reshape(-1)
        dev = last.device
        start, n = self.trans_crow[last], self.trans_crow[last + 1] - self.trans_crow[last]
        row = torch.repeat_interleave(torch.arange(len(last), device=dev), n)  # entry -> query row
        idx = torch.repeat_interleave(start - (torch.cumsum(n, 0) - n), n) + torch.arange(int(n.sum()), device=dev)
        counts = torch.zeros(len(last), self.num_pois + 1, device=dev)
        counts[row, self.trans_col[idx]] = self.trans_val[idx]
        target = batch["target"][:, query].reshape(-1)
        own = batch["train_step"][:, query].reshape(-1) & (target >= 0)
        counts[own.nonzero()[:, 0], target[own]] -= 1.0
        return torch.log1p(counts[:, : self.num_pois]).view(*batch["poi"][:, query].shape, self.num_pois)

    def _logits(self, h: torch.Tensor, batch: Batch, query: torch.Tensor) -> torch.Tensor:
        """[B, Q, P] logits at the query positions from states h [B, Q, d]."""
        logits = h @ self.poi_emb.weight[: self.num_pois].T + self.out_bias
        priors = ([self.log_distance_km(batch, query)] if self.cfg.distance_prior else []) + (
            [self.log_transitions(batch, query)] if self.cfg.transition_prior else [])
        if priors:
            for w, prior in zip(self.prior_weight(h).unbind(-1), priors, strict=True):
                logits = logits + w[..., None] * prior
        if not self.cfg.copy:
            return logits
        feats, weight, slot_poi = self.copy_features(batch, query)
        slot = (feats * self.copy_weight(h)[:, :, None, :]).sum(-1) * weight  # [B, Q, S]
        b, q, n = slot.shape
        copy = torch.zeros(b, q, self.num_pois + 1, dtype=slot.dtype, device=slot.device)
        copy = copy.scatter_add(2, slot_poi[:, None, :].expand(b, q, n), slot)
        return logits + copy[..., : self.num_pois]

    def score(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """logits [B, P] of the request after the last position, from a (possibly refined) state h [B, d]."""
        last = torch.tensor([batch["poi"].shape[1] - 1], device=h.device)
        return self._logits(h[:, None], batch, last)[:, 0]

    def forward(self, batch: Batch) -> torch.Tensor:
        """logits [B, L, P] at every position (training on all next steps)."""
        states = self._states(batch)
        return self._logits(states, batch, torch.arange(states.shape[1], device=states.device))

    def target_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, P], (row, position) [2, N]) at the N positions with a target, row-major: what
        ``forward`` gives there, computed only there. With few kept targets (a low train fraction: ~1 per
        window at 3% of NYC) the logits at every position are ~90% of a training step, nearly all unused.

        Each target's window is cut at its position and shifted right to end there (left padding, as short
        windows have): every feature of ``_logits`` reads only the inputs up to the query and counts them
        through the mask, so all N rows share one query, the last position."""
        rows, pos = (batch["target"] != IGNORE).nonzero(as_tuple=True)
        states = self._states(batch)
        length = batch["poi"].shape[1]
        src = pos[:, None] - (length - 1) + torch.arange(length, device=pos.device)[None]  # [N, L]; < 0: pad
        pad = src < 0
        cut = {}
        for key, value in batch.items():
            if key in POSITION_KEYS:
                value = value[rows[:, None], src.clamp(min=0)]
                value = value.masked_fill(pad, POSITION_KEYS[key] if key != "poi" else self.num_pois)
            else:
                value = value[rows]
            cut[key] = value
        last = torch.tensor([length - 1], device=pos.device)
        return self._logits(states[rows, pos][:, None], cut, last)[:, 0], torch.stack([rows, pos])

    def loss(self, logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """Full-softmax cross-entropy over the positions with a target (-100 elsewhere), optionally
        weighted per position (weight [B, L]); the weighted mean over target positions."""
        per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                              label_smoothing=label_smoothing, reduction="none")
        w = (target.reshape(-1) != -100).float()
        if weight is not None:
            w = w * weight.reshape(-1)
        return (per * w).sum() / w.sum().clamp(min=1e-9)
