"""Issue 14, items 4 and 6: files and arguments given to `evaluate` and `explain`, and the explanation cache:
exact ids and times, errors at the right file row, and a truncated cache line that costs one entry."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch

from recpie.cli.explain import explain_main, parse_time
from recpie.errors import CheckpointError, InputError
from recpie.evaluation.export import write_topk_jsonl
from recpie.evaluation.external import evaluate_file
from recpie.explainer.cache import ExplanationCache


def _topk_file(path, m: int, edit=None):
    write_topk_jsonl(path, np.arange(m), np.tile(np.arange(5), (m, 1)))
    if edit:
        lines = path.read_text().splitlines()
        lines[3] = edit(json.loads(lines[3]))
        path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("edit", "words"), [
    (lambda r: json.dumps({**r, "sample_id": 3.9}), "3.9 is not an integer id"),  # was read as sample 3
    (lambda r: json.dumps({**r, "topk": [123.7, 1]}), "123.7 is not an integer id"),  # was POI 123
    (lambda r: json.dumps({**r, "sample_id": "3"}), '"3" is not an integer id'),
    (lambda r: json.dumps({**r, "topk": [True]}), "true is not an integer id"),
    (lambda r: json.dumps({**r, "topk": 5}), "TypeError"),
    (lambda r: '{"sample_id": 3, "topk": [1, 2', "top.jsonl:4: expected"),
    (lambda r: json.dumps({**r, "topk": [1, 1]}), "top-K list 3 repeats an item"),
])
def test_topk_files_need_exact_integer_ids(nyc_data, tmp_path, edit, words):
    m = len(nyc_data.splits["test"])
    path = _topk_file(tmp_path / "top.jsonl", m, edit)
    with pytest.raises(InputError) as err:
        evaluate_file(nyc_data, "test", path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_score_files_report_the_row_of_a_nan_and_unreadable_files(nyc_data, tmp_path):
    m, p = len(nyc_data.splits["test"]), nyc_data.num_pois
    scores = np.zeros((m, p), dtype=np.float32)
    scores[600, 7] = np.nan  # in the second chunk of 512: was reported as row 88
    np.save(tmp_path / "nan.npy", scores)
    with pytest.raises(InputError, match=r"nan\.npy: row 600 "):
        evaluate_file(nyc_data, "test", tmp_path / "nan.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "nan.npy").read_bytes()[:1000])
    with pytest.raises(InputError, match="not a readable .npy array"):
        evaluate_file(nyc_data, "test", tmp_path / "cut.npy")
    np.save(tmp_path / "text.npy", np.array([["a"] * p] * m))
    with pytest.raises(InputError, match="numeric"):
        evaluate_file(nyc_data, "test", tmp_path / "text.npy")
    torch.save(torch.zeros(m, p), tmp_path / "s.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "s.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupt"):
        evaluate_file(nyc_data, "test", tmp_path / "cut.pt")
    with pytest.raises(InputError, match="no such file"):
        evaluate_file(nyc_data, "test", tmp_path / "absent.npy")


def test_explain_time_keeps_its_offset():
    tokyo = parse_time("2012-04-14T07:18:03+09:00")
    assert tokyo.utcoffset() == timedelta(hours=9)  # the offset was dropped: 07:18 read as UTC
    assert tokyo.timestamp() == datetime(2012, 4, 13, 22, 18, 3, tzinfo=timezone.utc).timestamp()
    assert parse_time("2012-04-14T07:18:03").tzinfo == timezone.utc
    assert parse_time("2012-04-14T07:18:03Z").utcoffset() == timedelta(0)


@pytest.mark.parametrize("args", [["--time", "garbage"], ["--time", "2012-13-01"], ["--k", "0"], ["--k", "x"],
                                  ["--max-new-tokens", "-1"]])
def test_explain_bad_arguments_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        explain_main(["470", *args])
    assert exit_.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_truncated_explanation_cache_keeps_the_rest(tmp_path, caplog):
    cache = ExplanationCache(tmp_path)
    cache.put_many(["a", "b", "c"], 1, ["may like: A", "may like: B", "may like: C"])
    text = cache.path.read_text()
    cache.path.write_text(text[: len(text) - 9])  # the last line cut mid-write
    with caplog.at_level(logging.WARNING):
        reopened = ExplanationCache(tmp_path)
    assert len(reopened) == 2 and reopened.get("a", 1) == "may like: A" and reopened.get("c", 1) is None
    assert "skipped 1 unreadable line(s) (first: line 3)" in caplog.text
    reopened.put_many(["c"], 1, ["may like: C again"])  # starts a new line after the cut one
    again = ExplanationCache(tmp_path)
    assert len(again) == 3 and again.get("c", 1) == "may like: C again"
