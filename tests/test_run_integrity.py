"""Issue 26, classes 1, 2, 3 and 8: a run's identity includes its input files; run-folder metadata and study
points are written atomically and a damaged one is reported (or recomputed); caches that cannot be written
fail before any work and degrade to memory when a write fails later; one process per run folder, whose
name cannot escape run.output_dir."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf
from tsmc_synthetic import tsmc_rows, write_tsmc

from recpie.cli import main
from recpie.config import ExperimentConfig, data_config, load_experiment
from recpie.data.config import DataConfig
from recpie.data.load import input_files, load_checkin_data
from recpie.errors import ConfigError
from recpie.explainer.cache import ExplanationCache
from recpie.explainer.explainer import Explainer, base_model_digest
from recpie.reporting.reference_study import check_reference_study
from recpie.reporting.study_points import point_files, read_point, write_point
from recpie.utils.files import atomic_write
from recpie.utils.provenance import quick_digest, write_provenance
from recpie.utils.run_folder import LOCK, MAY_CHANGE, accept_run_folder, run_dir_of, run_folder_lock

SCHEMA = OmegaConf.structured(ExperimentConfig)
TSMC = "foursquare_nyc_tsmc2014"
NAMES = "foursquare_nyc_tsmc2014_raw_rows/poi_metadata_NYC.csv"


def _data_root(folder: Path, rows: list[bytes] | None = None, names: bool = True) -> Path:
    """A data root in the default layout: the synthetic TSMC file and (optionally) a venue names file."""
    write_tsmc(folder / TSMC, rows)
    if names:
        (folder / NAMES).parent.mkdir(parents=True, exist_ok=True)
        (folder / NAMES).write_text("venue_id,name\n")
    return folder


def _trained(tmp_path: Path, root: Path) -> tuple[Path, list[str]]:
    """A run folder as a finished run leaves it (checkpoint, config.yaml, provenance.json); its overrides."""
    overrides = [f"run.output_dir={tmp_path / 'out'}", f"data.data_root={root}", f"data.cache_dir={tmp_path / 'c'}"]
    cfg = load_experiment("nyc_baselines", overrides)
    run_dir = run_dir_of(cfg)
    (run_dir / "ckpt").mkdir(parents=True)
    (run_dir / "ckpt" / "last.ckpt").write_bytes(b"x")
    write_provenance(run_dir, cfg, input_files(data_config(cfg)), resumed=False)
    return run_dir, overrides


def _resume(run_dir: Path, overrides: list[str], *more: str, accept: bool = False) -> None:
    """What ``python -m recpie run`` does on resume before the recipe: the folder check, then provenance."""
    cfg = load_experiment("nyc_baselines", [*overrides, *more])
    assert accept_run_folder(run_dir, cfg, SCHEMA) is True
    write_provenance(run_dir, cfg, input_files(data_config(cfg)), resumed=True, accept_changed_inputs=accept)


# class 1: the inputs are part of a run's identity


def test_changed_input_file_is_refused_naming_it_and_both_hashes(tmp_path, capsys):
    run_dir, overrides = _trained(tmp_path, _data_root(tmp_path / "a"))
    old = hashlib.sha256((tmp_path / "a" / TSMC / "dataset_TSMC2014_NYC.txt").read_bytes()).hexdigest()
    other = _data_root(tmp_path / "b", tsmc_rows(users=11))  # another file of the same name
    new = hashlib.sha256((other / TSMC / "dataset_TSMC2014_NYC.txt").read_bytes()).hexdigest()
    before = {p: p.read_bytes() for p in (run_dir / "config.yaml", run_dir / "provenance.json")}
    assert main(["run", "nyc_baselines", *overrides, f"data.data_root={other}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"{other / TSMC / 'dataset_TSMC2014_NYC.txt'} has sha256 {new}" in err
    assert f"trained on {tmp_path / 'a' / TSMC / 'dataset_TSMC2014_NYC.txt'} with sha256 {old}" in err
    assert "run.accept_changed_inputs=true" in err
    assert {p: p.read_bytes() for p in before} == before  # nothing written
    # the same file edited in place is refused too; a names file gone is a change of the inputs as well
    (tmp_path / "a" / TSMC / "dataset_TSMC2014_NYC.txt").write_bytes(b"".join(r + b"\n" for r in tsmc_rows(days=9)))
    with pytest.raises(ConfigError, match="was trained on other input files: .*dataset_TSMC2014_NYC.txt has sha256"):
        _resume(run_dir, overrides)
    with pytest.raises(ConfigError, match=r"the run read 2 input file\(s\) .*, this one reads 1"):
        _resume(run_dir, overrides, f"data.data_root={_data_root(tmp_path / 'c', names=False)}")


def test_moved_equal_inputs_resume_and_an_explicit_override_records_the_change(tmp_path, caplog):
    run_dir, overrides = _trained(tmp_path, _data_root(tmp_path / "a"))
    _resume(run_dir, overrides, f"data.data_root={_data_root(tmp_path / 'moved')}")  # equal files, new place
    record = json.loads((run_dir / "provenance.json").read_text())
    assert list(record["inputs"])[0].startswith(str(tmp_path / "moved")) and "accepted_changed_inputs" not in record
    other = _data_root(tmp_path / "b", tsmc_rows(users=11))
    with caplog.at_level(logging.WARNING):
        _resume(run_dir, overrides, f"data.data_root={other}", accept=True)
    record = json.loads((run_dir / "provenance.json").read_text())
    assert "resuming" in caplog.text and "changed input files" in caplog.text
    assert len(record["accepted_changed_inputs"]) == 1 and len(record["earlier_invocations"]) == 2
    assert list(record["inputs"])[0].startswith(str(other))
    _resume(run_dir, overrides, f"data.data_root={other}")  # the new files are now the run's own
    assert "run.accept_changed_inputs" in MAY_CHANGE
    cfg = load_experiment("nyc_baselines", ["run.accept_changed_inputs=true"])
    assert cfg.run.accept_changed_inputs is True
    with pytest.raises(ConfigError, match="accept_changed_inputs"):  # validated like every key
        load_experiment("nyc_baselines", ["run.accept_changed_inputs=maybe"])


# class 2: run-folder metadata and study points, atomic and checked


@pytest.mark.parametrize("damage", ["half", "cut_list", "empty", "binary", "scalar"])
def test_damaged_config_yaml_is_one_line_naming_the_file_and_the_way_out(tmp_path, capsys, damage):
    run_dir, overrides = _trained(tmp_path, _data_root(tmp_path / "a"))
    saved = run_dir / "config.yaml"
    text = saved.read_text()
    end = text.index("\n", len(text) // 2)
    while end - text.rindex("\n", 0, end) < 5:  # a line of 4+ characters (the paths above shift the middle)
        end = text.index("\n", end + 1)
    half = end - 2  # mid-line, about half-way, never at a line's start
    saved.write_bytes({"half": text[:half].encode(), "cut_list": text[: text.index("seeds:") + 10].encode(),
                       "empty": b"", "binary": b"\x00\xff\xfe{[", "scalar": b"42\n"}[damage])
    assert main(["run", "nyc_baselines", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{saved} is damaged (" in err and f"--print-config > {saved}) and resume" in err
    assert {"half": "cut short", "cut_list": "cut short", "empty": "cut short", "binary": "UnicodeDecodeError",
            "scalar": "Invalid loaded object type"}[damage] in err


@pytest.mark.parametrize("cut", [0.5, 0.0, 0.99])
def test_damaged_provenance_json_is_one_line_naming_it(tmp_path, capsys, cut):
    run_dir, overrides = _trained(tmp_path, _data_root(tmp_path / "a"))
    path = run_dir / "provenance.json"
    path.write_bytes(path.read_bytes()[: int(len(path.read_bytes()) * cut)])
    assert main(["run", "nyc_baselines", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path} is damaged (JSONDecodeError" in err and "delete it to resume" in err
    path.write_text('{"inputs": {"x": 3}}')  # valid JSON, not a record
    assert main(["run", "nyc_baselines", *overrides]) == 2
    assert "not a provenance record" in capsys.readouterr().err


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "provenance.json"
    atomic_write(target, "old\n")
    (tmp_path / f".{target.name}.tmp999999999").write_text("left by a killed writer")  # its pid runs no more
    monkeypatch.setattr("recpie.utils.files.os.fsync", _full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["provenance.json"]
    # through the run's writers: one clear error, both files as they were
    cfg = OmegaConf.create({"name": "demo", "run": {"seeds": [0]}})
    monkeypatch.undo()
    write_provenance(tmp_path, cfg, [], resumed=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr("recpie.utils.files.os.replace", _full_disk)
    with pytest.raises(ConfigError, match=r"cannot write .*config.yaml \(No space left on device\); it keeps its "
                                          r"earlier content: free space there \(or set run.output_dir"):
        write_provenance(tmp_path, cfg, [], resumed=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _point(tmp_path: Path, name: str = "f0.5_seed0") -> tuple[dict, dict]:
    meta, arrays = {"kept": 3}, {"ranks": np.arange(50.0), "bound_ids": np.arange(50)}
    write_point(tmp_path, name, meta, arrays)
    return meta, arrays


@pytest.mark.parametrize("which,cut", [("json", 0.5), ("json", 0.0), ("npz", 0.5), ("npz", 0.0), ("npz", None)])
def test_damaged_study_point_is_recomputed_with_a_warning(tmp_path, caplog, which, cut):
    _point(tmp_path)
    npz, done = point_files(tmp_path, "f0.5_seed0")
    path = {"json": done, "npz": npz}[which]
    if cut is None:
        path.unlink()  # the arrays gone, the JSON still saying done
    else:
        path.write_bytes(path.read_bytes()[: int(len(path.read_bytes()) * cut)])
    with caplog.at_level(logging.WARNING):
        assert read_point(tmp_path, "f0.5_seed0") is None
    assert "study point" in caplog.text and "is damaged" in caplog.text and "computes it again" in caplog.text
    with pytest.raises(ConfigError, match="missing or damaged .*f0.5_seed0.json"):  # a reference study refuses it
        check_reference_study(str(tmp_path), 0, 0.5, [0])
    meta, arrays = _point(tmp_path)  # recomputed: written again, whole
    assert read_point(tmp_path, "f0.5_seed0")[0] == meta


def test_full_disk_while_writing_a_point_keeps_the_done_one(tmp_path, monkeypatch):
    meta, arrays = _point(tmp_path)
    monkeypatch.setattr("recpie.utils.files.os.replace", _full_disk)
    with pytest.raises(ConfigError, match=r"cannot write .*f0.5_seed0.npz \(No space left on device\)"):
        write_point(tmp_path, "f0.5_seed0", {"kept": 4}, {"ranks": np.zeros(3)})
    with pytest.raises(ConfigError, match=r"cannot write .*f0.25_seed0.npz"):
        write_point(tmp_path, "f0.25_seed0", {"kept": 4}, {"ranks": np.zeros(3)})
    got_meta, got = read_point(tmp_path, "f0.5_seed0")
    assert got_meta == meta and got["ranks"].tolist() == arrays["ranks"].tolist()
    assert read_point(tmp_path, "f0.25_seed0") is None and len(list((tmp_path / "points").iterdir())) == 2


# class 3: caches that cannot be written


def test_unwritable_explanation_cache_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for where in (blocker, blocker / "sub"):
        with pytest.raises(ConfigError, match=rf"explainer.explanation_cache: cannot write to {where} .*writable"):
            ExplanationCache(where)
    (tmp_path / "c" / "explanations.jsonl").mkdir(parents=True)  # the cache file's name taken by a folder
    with pytest.raises(ConfigError, match="explanations.jsonl is not a file"):
        ExplanationCache(tmp_path / "c")
    assert main(["run", "nyc_recpie", f"run.output_dir={tmp_path / 'out'}",
                 f"explainer.explanation_cache={blocker}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"explainer.explanation_cache: cannot write to {blocker}" in err
    assert not (tmp_path / "out" / "nyc_recpie" / "provenance.json").exists()


def test_explanation_cache_write_failing_later_goes_on_in_memory(tmp_path, caplog, monkeypatch):
    cache = ExplanationCache(tmp_path)
    cache.put_many(["a"], 1, ["may like: A"])

    def fail_after_a_cut(path, mode="r", **kwargs):
        f = open(path, mode, **kwargs)
        f.write('{"key": "b", "ver')  # the disk filled mid-line
        f.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("recpie.explainer.cache.open", fail_after_a_cut, raising=False)
    with caplog.at_level(logging.WARNING):
        cache.put_many(["b"], 1, ["may like: B"])
        cache.put_many(["c"], 1, ["may like: C"])  # no second attempt, no second warning
    assert caplog.text.count("could not write the explanation cache") == 1 and "in memory" in caplog.text
    assert cache.get("b", 1) == "may like: B" and cache.get("c", 1) == "may like: C" and not cache.on_disk
    monkeypatch.undo()
    reopened = ExplanationCache(tmp_path)  # the file: the whole lines before, the cut one skipped
    assert len(reopened) == 1 and reopened.get("a", 1) == "may like: A"
    reopened.put_many(["d"], 1, ["may like: D"])
    assert ExplanationCache(tmp_path).get("d", 1) == "may like: D"


def test_unwritable_data_cache_fails_before_reading_the_data(tmp_path, monkeypatch):
    folder = _data_root(tmp_path / "a", names=False)
    blocker = tmp_path / "cache_is_a_file"
    blocker.write_text("x")
    monkeypatch.setattr("recpie.data.load.preprocess", _full_disk)  # the work that must not start
    cfg = DataConfig(source="foursquare", data_root=str(folder), dataset_dir=str(folder / TSMC), names_file="",
                     min_poi_checkins=1,
                     min_user_checkins=1, cache_dir=str(blocker))
    with pytest.raises(ConfigError, match=rf"data.cache_dir: cannot write to {blocker} .* or data.use_cache=false"):
        load_checkin_data(cfg)


def test_model_digest_changes_with_the_files_not_with_their_place(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    weights = np.random.default_rng(0).bytes(3 << 20)  # 3 MiB: the middle MiB is never read
    (model / "model.safetensors").write_bytes(weights)
    cfg = SimpleNamespace(model=str(model))
    first = base_model_digest(cfg, None)
    shutil.copytree(model, tmp_path / "copy")  # the same files elsewhere, newer mtimes: the same digest
    assert quick_digest(tmp_path / "copy") == first == quick_digest(model)
    for change in (weights[:-1] + b"\x00", b"\x01" + weights[1:], weights + b"!"):  # tail, head, size
        (model / "model.safetensors").write_bytes(change)
        assert base_model_digest(cfg, None) != first
    (model / "model.safetensors").write_bytes(weights)
    (model / "config.json").write_text('{"hidden_size": 9}')
    assert base_model_digest(cfg, None) != first
    # the explanation cache keys carry it: a replaced base model misses the old model's texts
    stub = SimpleNamespace(cache=object(), trainable_state_dict=lambda: {}, base_model_tag=first)
    key = Explainer.cache_keys(stub, ["s1"], None)
    stub.base_model_tag = base_model_digest(cfg, None)
    assert Explainer.cache_keys(stub, ["s1"], None) != key and key[0].startswith("s1@")


# class 8: one run per folder, names inside run.output_dir


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "/abs", "a\\b", "x/../../y"])
def test_names_escaping_the_output_dir_are_refused(tmp_path, capsys, name):
    cfg = OmegaConf.create({"name": name, "run": {"output_dir": str(tmp_path / "out")}})
    with pytest.raises(ConfigError, match="is not a plain folder name"):
        run_dir_of(cfg)
    assert main(["run", "nyc_baselines", f"run.output_dir={tmp_path / 'out'}", f"name='{name}'"]) == 2
    assert "is not a plain folder name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing created anywhere
    for fine in ("nyc..v2", "..hidden-but-inside", "a b"):
        assert run_dir_of(OmegaConf.create({"name": fine, "run": {"output_dir": "r"}})) == Path("r") / fine


def test_second_run_on_a_folder_is_refused_with_the_holders_pid(tmp_path, capsys):
    run_dir = tmp_path / "out" / "nyc_baselines"
    with run_folder_lock(run_dir):
        assert (run_dir / LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(ConfigError, match=rf"is in use by another run \(pid {os.getpid()}\)"):
            with run_folder_lock(run_dir):  # flock: another open file description conflicts, same process or not
                pass
        assert main(["run", "nyc_baselines", f"run.output_dir={tmp_path / 'out'}"]) == 2
        assert f"in use by another run (pid {os.getpid()})" in capsys.readouterr().err
    (run_dir / LOCK).write_text("999999999\n")  # a lock file left by a killed run does not block
    with run_folder_lock(run_dir):
        assert (run_dir / LOCK).read_text() == f"{os.getpid()}\n"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create the run folder .*run.output_dir"):
        with run_folder_lock(blocker / "run"):
            pass


def test_a_run_in_another_process_holds_the_folder_until_it_exits(tmp_path, capsys):
    run_dir = tmp_path / "out" / "nyc_baselines"
    ready, release = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the first run: takes the lock, says so, waits to be released
        try:
            with run_folder_lock(run_dir):
                os.write(ready[1], b"x")
                os.read(release[0], 1)
        finally:
            os._exit(0)
    assert os.read(ready[0], 1) == b"x"
    try:
        assert main(["run", "nyc_baselines", f"run.output_dir={tmp_path / 'out'}"]) == 2
        assert f"{run_dir} is in use by another run (pid {pid})" in capsys.readouterr().err
    finally:
        os.write(release[1], b"x")
        os.waitpid(pid, 0)
    with run_folder_lock(run_dir):  # released when that process ended
        assert (run_dir / LOCK).read_text() == f"{os.getpid()}\n"


def test_a_full_disk_is_found_behind_another_librarys_exception():
    from recpie.cli.run import _full_disk

    disk = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise disk
        except OSError as e:  # what Lightning's TensorBoard logger does with the writer's error
            raise ValueError("\n you tried to log 0.0 which is currently not supported.") from e
    except ValueError as wrapped:
        assert _full_disk(wrapped) is disk
    assert _full_disk(OSError(errno.ENOENT, "missing")) is None and _full_disk(ValueError("a bug")) is None
