"""The explanation store: what counts as already explained, and where its tables live.

The tables stay on the CPU: Lightning builds the module (configure_model) under the accelerator's
default-device context, and on a GPU they once landed there, so the first refresh of the H200 run failed
mixing cuda and cpu tensors. A meta default device stands in for cuda here."""
from __future__ import annotations

import torch

from recpie.explainer.store import ExplanationStore


def test_tables_stay_on_the_cpu_under_another_default_device():
    with torch.device("meta"):
        store = ExplanationStore({"train": 5, "val": 3}, slots=1, dim=4)
    assert all(t.device.type == "cpu" for table in (store.z, store.present, store.version) for t in table.values())
    store.put("train", torch.tensor([1, 3]), torch.ones(2, 1, 4), [["a"], ["b"]], version=2, candidates=[[7], [8]])
    same = torch.tensor([[0], [7], [0], [8], [0]])
    assert store.missing("train", torch.arange(5), 2, same).tolist() == [0, 2, 4]
    assert store.missing("train", torch.tensor([1, 3]), 3, same[[1, 3]]).tolist() == [1, 3]  # a new policy
    # the same policy (a frozen explainer) but the recommender now shows sample 3 other candidates
    assert store.missing("train", torch.tensor([1, 3]), 2, torch.tensor([[7], [9]])).tolist() == [3]
    z, present = store.get("train", torch.tensor([3, 0]), torch.device("cpu"))
    assert z[:, 0].tolist() == [[1.0] * 4, [0.0] * 4] and present[:, 0].tolist() == [True, False]
    assert abs(store.coverage("train") - 2 / 5) < 1e-6 and store.texts["train"][3] == ["b"]


def test_shown_gives_the_candidates_each_stored_explanation_is_about():
    """Train explanations are written at a refresh; the recommender's top-K moves before they are read."""
    store = ExplanationStore({"train": 4}, slots=1, dim=2)
    store.put("train", torch.tensor([2]), torch.ones(1, 1, 2), [["t"]], version=1, candidates=[[5, 6, 7]])
    current = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert store.shown("train", torch.tensor([2, 0]), current).tolist() == [[5, 6, 7], [4, 5, 6]]
