"""Issue 14, items 1 and 6: loading a file never runs code, and a truncated or corrupt file is an error
naming it (checkpoints) or is rebuilt with a warning (the processed-data cache)."""
from __future__ import annotations

import errno
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tsmc_synthetic import write_tsmc

from recpie.data.config import DataConfig
from recpie.data.load import cache_dir, cache_key, input_files, load_checkin_data
from recpie.errors import CheckpointError
from recpie.evaluation.external import evaluate_file
from recpie.utils.checkpoints import load_checkpoint, load_weights


class Payload:
    """Unpickling this writes the marker file: what a crafted checkpoint or cache file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _crafted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(marker, crafted torch file, crafted raw pickle); both are live: unpickling runs what __reduce__ returns."""
    marker = tmp_path / "marker"
    ckpt, raw = tmp_path / "evil.ckpt", tmp_path / "evil.pkl"
    torch.save({"state_dict": {"backbone.w": torch.zeros(1)}, "x": Payload(marker)}, ckpt)
    raw.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    live = tmp_path / "live"
    run, args = Payload(live).__reduce__()  # what an unpickler would call
    run(*args)
    assert live.exists()  # the payload works when loaded the unsafe way
    return marker, ckpt, raw


def test_crafted_checkpoint_is_refused_without_running(tmp_path, nyc_data):
    marker, ckpt, raw = _crafted(tmp_path)
    for path in (ckpt, raw):
        with pytest.raises(CheckpointError, match="refused to load .*could run code"):
            load_checkpoint(path, "recpie.backbone_checkpoint")
        with pytest.raises(CheckpointError, match="refused"):
            load_weights(path, "recpie.backbone_checkpoint", "backbone.")
    shutil.copy(ckpt, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="--file: refused"):
        evaluate_file(nyc_data, "test", tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_checkpoint_names_the_file_and_the_fix(tmp_path):
    good = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"backbone.w": torch.ones(3)}, "epoch": 2}, good)
    assert load_weights(good, "test", "backbone.")["w"].tolist() == [1.0, 1.0, 1.0]  # the prefix is stripped
    with pytest.raises(CheckpointError, match="holds no explainer weights"):
        load_weights(good, "--explainer-ckpt", "explainer.")
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"last\.ckpt is truncated or corrupt.*delete it"):
        load_checkpoint(good, "the run's last checkpoint")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path / "missing.ckpt", "recpie.backbone_checkpoint")


def _fixture_config(tmp_path: Path, **overrides) -> DataConfig:
    folder = tmp_path / "data"
    if not folder.is_dir():
        write_tsmc(folder)
    return DataConfig(source="foursquare", data_root=str(folder), dataset_dir=str(folder), names_file="",
                      min_poi_checkins=1, min_user_checkins=1, cache_dir=str(tmp_path / "cache"), **overrides)


def _cache_file(cfg: DataConfig) -> Path:
    from recpie.data.config import resolve

    cfg = resolve(cfg)
    return cache_dir(cfg) / f"{cfg.source}-{cache_key(cfg, input_files(cfg))}.npz"


def test_cache_round_trip_and_crafted_or_corrupt_cache_is_rebuilt(tmp_path, caplog):
    cfg = _fixture_config(tmp_path)
    fresh = load_checkin_data(cfg)
    path = _cache_file(cfg)
    cached = load_checkin_data(cfg)
    assert path.is_file() and cached.user_ids == fresh.user_ids and cached.catalogue.names == fresh.catalogue.names
    for name in ("user", "poi", "time", "utc_offset_min", "trajectory", "user_start"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(fresh, name))
    assert {k: s.target.tolist() for k, s in cached.splits.items()} == {
        k: s.target.tolist() for k, s in fresh.splits.items()}

    marker, _, raw = _crafted(tmp_path)
    np.savez(tmp_path / "objects.npz", x=np.array([Payload(marker)], dtype=object))
    good = path.read_bytes()
    for bad in (raw.read_bytes(), good[: len(good) // 2], (tmp_path / "objects.npz").read_bytes(), b""):
        path.write_bytes(bad)
        with caplog.at_level(logging.WARNING):
            again = load_checkin_data(cfg)
        assert "not usable" in caplog.text and "rebuilding" in caplog.text
        np.testing.assert_array_equal(again.poi, fresh.poi)
        assert path.read_bytes() != bad  # rebuilt
        caplog.clear()
    assert not marker.exists()


def test_cache_of_another_version_or_inconsistent_is_rebuilt(tmp_path, caplog, monkeypatch):
    cfg = _fixture_config(tmp_path)
    fresh = load_checkin_data(cfg)
    path = _cache_file(cfg)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["poi"] = arrays["poi"][:-1]  # one check-in short
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with caplog.at_level(logging.WARNING):
        assert len(load_checkin_data(cfg).poi) == len(fresh.poi)
    assert "inconsistent" in caplog.text
    monkeypatch.setattr("recpie.data.cache.FORMAT_VERSION", 99)  # what an older file looks like to new code
    with caplog.at_level(logging.WARNING):
        load_checkin_data(cfg)
    assert "format version 2, this code reads 99" in caplog.text


def test_full_disk_keeps_the_computed_data_and_leaves_no_temp_file(tmp_path, caplog, monkeypatch):
    cfg = _fixture_config(tmp_path)

    def full(file, **arrays):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("recpie.data.cache.np.savez", full)
    with caplog.at_level(logging.WARNING):
        data = load_checkin_data(cfg)
    assert len(data.poi) > 0 and "could not write the processed-data cache" in caplog.text
    assert list((tmp_path / "cache").iterdir()) == []
