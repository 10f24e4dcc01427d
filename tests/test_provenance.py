"""A run directory's provenance: input hashes, and the earlier invocations a resumed run keeps."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from recpie.utils.provenance import write_provenance

FIXTURE = Path(__file__).parent / "fixtures" / "checkins" / "dataset_TSMC2014_NYC.txt"  # cut from the real file


def test_resumed_run_keeps_the_earlier_invocations(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"name": "demo", "run": {"seeds": [0]}})
    for argv in (["train"], ["retest"], ["third"]):
        monkeypatch.setattr("sys.argv", argv)
        write_provenance(tmp_path, cfg, [FIXTURE], resumed=True)
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["command"] == ["third"]
    assert [r["command"] for r in record["earlier_invocations"]] == [["train"], ["retest"]]
    assert all("earlier_invocations" not in r for r in record["earlier_invocations"])
    assert record["inputs"][str(FIXTURE)]["sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert OmegaConf.load(tmp_path / "config.yaml").name == "demo"

    monkeypatch.setattr("sys.argv", ["start over"])  # run.resume=false: the old checkpoints are not reused
    write_provenance(tmp_path, cfg, [FIXTURE], resumed=False)
    assert json.loads((tmp_path / "provenance.json").read_text())["earlier_invocations"] == []
