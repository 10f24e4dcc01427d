"""The backbone's copy features over the whole history: a window of 50 plus the batch's summary of the
check-ins before it gives the same per-POI features as a window long enough to hold the whole history,
for val/test samples and for every position of train windows; the summary never reaches a target."""
from __future__ import annotations

import numpy as np
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from data_modules.batches import SampleDataset, WindowDataset, build_rows, to_tensors
from recpie.components.backbone import Backbone
from recpie.models.config import BackboneConfig

LONG = 3000  # longer than any NYC user's history


def _per_poi(bb: Backbone, batch: dict[str, torch.Tensor], query: torch.Tensor) -> torch.Tensor:
    """Copy features summed per POI (slot weight included): [B, Q, P, F]."""
    feats, weight, slot_poi = bb.copy_features(batch, query)
    b, q, n, f = feats.shape
    out = torch.zeros(b, q, bb.num_pois + 1, f)
    out.scatter_add_(2, slot_poi[:, None, :, None].expand(b, q, n, f), feats * weight[..., None])
    return out[:, :, : bb.num_pois]


def test_summary_equals_long_window(nyc_data):
    bb = Backbone(BackboneConfig(), nyc_data.catalogue, nyc_data.num_users, LONG)
    rows = list(range(0, len(nyc_data.splits["test"]), 41))
    short = to_tensors(SampleDataset(nyc_data, "test", 50, summary=True).__getitems__(rows))
    long = to_tensors(SampleDataset(nyc_data, "test", LONG).__getitems__(rows))
    assert short["hist_poi"].shape[1] > 1  # some samples do have history before their window
    x = _per_poi(bb, short, torch.tensor([49]))
    y = _per_poi(bb, long, torch.tensor([LONG - 1]))
    torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)

    windows = WindowDataset(nyc_data, 50, "all_steps", summary=True)
    picks = [i for i in range(0, len(windows), 97) if windows.start[i] > nyc_data.user_start[windows.user[i]]][:4]
    assert picks
    batch = to_tensors(windows.__getitems__(picks))
    for j, i in enumerate(picks):
        u, end = windows.user[i], windows.end[i] - 1
        assert batch["hist_time"][j] <= batch["time"][j][batch["mask"][j]].min()  # before every input
        full = to_tensors(build_rows(nyc_data, windows.how, np.array([u]), nyc_data.user_start[[u]], np.array([end]),
                                     np.array([end]), LONG))
        n = int(batch["mask"][j].sum())
        one = {k: v[j : j + 1] for k, v in batch.items()}
        x = _per_poi(bb, one, torch.arange(50 - n, 50))
        y = _per_poi(bb, full, torch.arange(LONG - n, LONG))
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
