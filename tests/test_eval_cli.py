"""`python -m recpie evaluate` scores external score matrices and top-K lists with the same evaluator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recpie.cli.evaluate import evaluate_main
from recpie.components.baselines import DecayedCounter
from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.evaluation.config import EvalConfig
from recpie.evaluation.export import write_topk_jsonl
from recpie.evaluation.external import evaluate_file
from recpie.evaluation.scoring import rank_split


@pytest.fixture(scope="module")
def nyc(data_root):
    return load_checkin_data(DataConfig(data_root=str(data_root)))


def test_score_files_and_topk_lists_agree_with_direct_evaluation(nyc, tmp_path):
    model = DecayedCounter(0.99).fit(nyc)
    scores = model.score(nyc, "test", np.arange(len(nyc.splits["test"]))).astype(np.float32)
    np.save(tmp_path / "s.npy", scores)
    torch.save(torch.from_numpy(scores), tmp_path / "s.pt")
    ranks, topk = rank_split(model.score, nyc, "test", topk=20)
    write_topk_jsonl(tmp_path / "top.jsonl", np.arange(len(ranks)), topk)

    out = tmp_path / "m.json"
    assert evaluate_main(["--experiment", "x", "--file", str(tmp_path / "s.npy"), "--out", str(out)],
                         load_data=lambda name: (nyc, EvalConfig())) == 0
    from_npy = json.loads(out.read_text())
    assert from_npy["all"]["mrr"] == pytest.approx(0.3974, abs=0.002)
    assert from_npy["all"]["n"] == 2096 and {"revisit", "new POI"} <= set(from_npy)
    assert evaluate_file(nyc, "test", tmp_path / "s.pt")["all"] == pytest.approx(from_npy["all"])
    from_lists = evaluate_file(nyc, "test", tmp_path / "top.jsonl")["all"]
    # top-K lists lose the order past K and break the model's remaining ties arbitrarily
    for k in ("acc@1", "acc@5", "acc@10", "acc@20"):
        assert from_lists[k] == pytest.approx(from_npy["all"][k], abs=0.003)


def test_bad_files_name_the_problem(nyc, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((3, nyc.num_pois)))
    with pytest.raises(ValueError, match="shape"):
        evaluate_file(nyc, "test", tmp_path / "wrong.npy")
    (tmp_path / "few.jsonl").write_text('{"sample_id": 0, "topk": [1, 2]}\n')
    with pytest.raises(ValueError, match="missing"):
        evaluate_file(nyc, "test", tmp_path / "few.jsonl")
