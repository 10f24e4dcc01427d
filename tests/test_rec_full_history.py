"""The backbone's copy features over the whole history: a window of 50 plus the batch's summary of the
check-ins before it gives the same per-POI features as a window long enough to hold the whole history,
for val/test samples and for every position of train windows; the summary never reaches a target."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from data_modules.batches import SampleDataset, WindowDataset, build_rows, to_tensors
from recpie.components.backbone import Backbone
from recpie.components.config import BackboneConfig
from recpie.data.geo import haversine_km
from recpie.data.visit_weights import hour_gap, hour_kernel

LONG = 3000  # longer than any NYC user's history


def _per_poi(bb: Backbone, batch: dict[str, torch.Tensor], query: torch.Tensor) -> torch.Tensor:
    """Copy features summed per POI (slot weight included): [B, Q, P, F]."""
    feats, weight, slot_poi = bb.copy_features(batch, query)
    b, q, n, f = feats.shape
    out = torch.zeros(b, q, bb.num_pois + 1, f)
    out.scatter_add_(2, slot_poi[:, None, :, None].expand(b, q, n, f), feats * weight[..., None])
    return out[:, :, : bb.num_pois]


def test_summary_equals_long_window(nyc_data):
    bb = Backbone(BackboneConfig(), nyc_data, LONG)
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


def test_target_visited_counts_the_whole_history(nyc_data):
    """The new-POI loss weight needs, per position, whether its target was visited before: with the
    summary this must cover check-ins before the window too (checked against the raw check-ins)."""
    bb = Backbone(BackboneConfig(), nyc_data, 50)
    windows = WindowDataset(nyc_data, 50, "all_steps", summary=True)
    picks = list(range(0, len(windows), 53))[:12]
    batch = to_tensors(windows.__getitems__(picks))
    visited = bb.target_visited(batch)
    expected = torch.zeros_like(visited)
    for j, i in enumerate(picks):
        first = 50 - int(batch["mask"][j].sum())
        for pos in range(first, 50):
            if batch["target"][j, pos] >= 0:
                before = nyc_data.poi[nyc_data.user_start[windows.user[i]]: windows.start[i] + pos - first + 1]
                expected[j, pos] = bool((before == int(batch["target"][j, pos])).any())
    has_target = batch["target"] >= 0
    assert (visited & ~has_target).sum() == 0
    assert expected[has_target].float().mean() > 0.5 and (~expected[has_target]).sum() > 0  # both kinds occur
    assert torch.equal(visited[has_target], expected[has_target])


def _brute_force_transitions(data) -> np.ndarray:
    """Dense [P, P] counts of consecutive check-ins of one trajectory, both before t80, by a plain loop."""
    counts = np.zeros((data.num_pois, data.num_pois))
    for i in range(len(data.poi) - 1):
        if data.trajectory[i] == data.trajectory[i + 1] and data.time[i + 1] < data.t80:
            counts[data.poi[i], data.poi[i + 1]] += 1
    return counts


def test_sparse_train_transitions_match_a_dense_count(nyc_data):
    dense = _brute_force_transitions(nyc_data)
    sparse = nyc_data.train_transitions()
    assert len(sparse.count) == np.count_nonzero(dense) and sparse.count.sum() > 50_000
    pois = np.array([0, 5, int(dense.sum(1).argmax()), nyc_data.num_pois - 1, 5])
    np.testing.assert_array_equal(sparse.dense_rows(pois), dense[pois])


def test_priors_match_brute_force_and_leave_out_the_step_itself(nyc_data):
    """Transition prior = log1p(train steps from the input's POI), minus the predicted step itself when it
    is one of those counted train steps (else a training target would see its own label); distance prior =
    log1p(great-circle km). Val/test targets lie after t80: nothing is left out there."""
    bb = Backbone(BackboneConfig(), nyc_data, 50)
    trans = _brute_force_transitions(nyc_data)
    windows = WindowDataset(nyc_data, 50, "all_steps")
    batch = to_tensors(windows.__getitems__([3, 400, 1200]))
    query = torch.arange(50)
    got = bb.log_transitions(batch, query)
    own = 0
    for j in range(3):
        for q in range(50):
            if not batch["mask"][j, q]:
                continue
            row = trans[int(batch["poi"][j, q])].copy()
            t = int(batch["target"][j, q])
            if batch["train_step"][j, q] and t >= 0:
                row[t] -= 1
                own += 1
            np.testing.assert_allclose(got[j, q].numpy(), np.log1p(row), atol=1e-5)
    assert own > 50  # inside the train period most steps (all but a trajectory's first) are counted
    test = to_tensors(SampleDataset(nyc_data, "test", 50).__getitems__(list(range(0, 2000, 97))))
    assert not test["train_step"][:, -1].any()
    last = test["poi"][:, -1]
    np.testing.assert_allclose(bb.log_transitions(test, torch.tensor([49]))[:, 0].numpy(),
                               np.log1p(trans[last.numpy()]), atol=1e-5)
    cat, a = nyc_data.catalogue, int(last[0])
    km = haversine_km(cat.lat[a], cat.lon[a], cat.lat, cat.lon)  # the prompts' distance
    np.testing.assert_allclose(bb.log_distance_km(test, torch.tensor([49]))[0, 0].numpy(), np.log1p(km), atol=2e-3)


def test_visit_weights_are_one_definition_for_numpy_and_torch():
    hours = np.arange(24.0)
    gap = hour_gap(hours, 22.0)
    assert gap.tolist()[:3] == [2.0, 3.0, 4.0] and gap[22] == 0 and gap[10] == 12 and gap[11] == 11
    np.testing.assert_array_equal(hour_gap(torch.tensor(hours), 22.0).numpy(), gap)
    np.testing.assert_allclose(hour_kernel(torch.tensor(gap), 2.0).numpy(), hour_kernel(gap, 2.0), rtol=1e-12)
    assert hour_kernel(gap, 2.0)[0] == pytest.approx(np.exp(-4 / 8))
