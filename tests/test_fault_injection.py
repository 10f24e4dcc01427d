"""Issue 26, fault injection: a tiny baselines run, a tiny data-efficiency study and a tiny RecPIE run (the
tiny LLM of tests/tiny_llm.py), killed with SIGKILL at random points and resumed, end with the uninterrupted
run's numbers, weights and explanations, and leave no damaged file; a disk that fills up at a random write
makes the run stop (or warn) without damaging a file, and the same command then resumes to the
uninterrupted numbers.

Each run is a ``python -m recpie run`` forked from this process after the imports (a fresh interpreter
spends ~8 s importing torch and Lightning), on the synthetic TSMC data (tests/tsmc_synthetic.py).
RECPIE_FAULT_SEED picks other kill points and full-disk writes (default 0: the same points on every run of
the suite); RECPIE_FAULT_KILLS the number of kills per run (default: 2 of the baselines run, 1 of the
others, to keep the suite short).
"""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)
from tsmc_synthetic import tsmc_rows, write_tsmc

import recpie.recipes.baselines  # noqa: F401  imported here once, not in every forked run
import recpie.recipes.data_efficiency  # noqa: F401
import recpie.recipes.recpie  # noqa: F401
from recpie.cli import main
from recpie.utils.checkpoints import recorded_best

SEED = int(os.environ.get("RECPIE_FAULT_SEED", "0"))
KILLS = os.environ.get("RECPIE_FAULT_KILLS")
TINY = ["data.names_file=", "data.min_poi_checkins=1", "data.min_user_checkins=1", "data.max_len=8",
        "backbone.hidden_size=16", "backbone.num_layers=1", "backbone.num_heads=1", "run.seeds=[0]",
        "train.max_epochs=3", "trainer.accelerator=cpu", "baselines.decay_grid=[0.99]",
        "baselines.bandwidth_grid_h=[2.0]", "eval.bootstrap_samples=50", "eval.topk=5"]
RECIPES = {"baselines": ["nyc_baselines"],
           "study": ["nyc_data_efficiency", "efficiency.fractions=[0.5,1.0]", "efficiency.search=[]",
                     "train.steps_per_epoch=0", "train.patience=3"],
           "recpie": ["nyc_recpie", "explainer.quantization=none", "explainer.dtype=float32",
                      "explainer.max_new_tokens=8", "explainer.history_len=3", "explainer.num_candidates=3",
                      "explainer.few_shot=false", "rl.minibatch_size=2", "rl.ppo_epochs=1", "recpie.cycles=2",
                      "recpie.rec_steps_per_cycle=3", "recpie.batch_size=8", "recpie.ppo_iterations=1",
                      "recpie.rollout_prompts=2", "recpie.refresh_budget=4", "recpie.sft_steps=1",
                      "recpie.sft_batch=2", "recpie.generation_batch=8", "recpie.val_samples=8",
                      "recpie.test_samples=8"]}

# Lightning's TensorBoardLogger writes hparams.yaml in place (a full disk leaves it cut short, and a finished
# fit never rewrites it); nothing reads it back (TensorBoard reads the event files). Left to recipes/trainer.py.
NEVER_READ = {"hparams.yaml"}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the runs")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """24 users over 6 real NYC venues: every split non-empty, every val target among the top 5."""
    return write_tsmc(tmp_path_factory.mktemp("fault-data"), tsmc_rows(users=24, venues=6)).parent


def _argv(recipe: str, out: Path, data: Path, llm: Path | None = None) -> list[str]:
    """The command of a tiny run; the recpie recipe's explanation cache is per output folder, so that a
    resumed run does not read the texts of the reference run."""
    name, *more = RECIPES[recipe]
    llm_keys = [f"explainer.model={llm}", f"explainer.explanation_cache={out / 'explanations'}"] if llm else []
    return ["run", name, f"run.output_dir={out}", f"data.data_root={data}", f"data.dataset_dir={data}",
            f"data.cache_dir={out.parent / 'cache'}", *TINY, *more, *llm_keys]


class _FullDiskFile:
    """A file opened for writing once the disk is full: a write stores half its bytes, then ENOSPC."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _fill_disk_after(writes: int) -> None:
    """From the ``writes``-th file opened for writing on, every write fails as on a full disk."""
    real = builtins.open
    count = [0]

    def full_open(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if not any(m in mode for m in "wax+"):
            return f
        count[0] += 1
        return _FullDiskFile(f) if count[0] >= writes else f

    builtins.open = io.open = full_open


def _fork(argv: list[str], log: Path, full_disk_at: int = 0) -> int:
    """The pid of ``python -m recpie <argv>`` run in a forked child, its stderr appended to ``log``."""
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without pytest's teardown
        code = 70
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 2)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            if full_disk_at:
                _fill_disk_after(full_disk_at)
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _why(log: Path) -> str:
    """The error lines of a run's stderr (else its tail), for an assertion's message."""
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("error:") or "Error" in line]
    return "\n".join(lines[-20:]) or text[-3000:]


def _exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _numbers(run_dir: Path) -> dict:
    """What must not depend on interruptions: results.json without paths and timings, and every
    checkpoint's weights, the study's point arrays and the per-sample test predictions."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if "seconds" not in k and k not in ("best_checkpoint", "config")}  # paths and timings
        return [strip(v) for v in node] if isinstance(node, list) else node

    out = {"results": strip(json.loads((run_dir / "results.json").read_text()))}
    for last in sorted(run_dir.rglob("last.ckpt")):  # the state a resume reads, and the best the test used
        for ckpt in (last, recorded_best(last.parent)):  # (a stale best file next to them is never read)
            state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
            out[str(ckpt.relative_to(run_dir))] = {k: v.tolist() for k, v in state.items()}
    for npz in sorted(run_dir.rglob("*.npz")):
        with np.load(npz) as z:
            out[str(npz.relative_to(run_dir))] = {k: z[k].tolist() for k in z.files}
    for jsonl in sorted(run_dir.rglob("*.jsonl")):  # top-K lists, and the explanations' texts
        out[str(jsonl.relative_to(run_dir))] = jsonl.read_text()
    return out


def _damaged(run_dir: Path) -> list[str]:
    """Files of the run folder that do not read back whole; leftovers of interrupted atomic writes."""
    bad = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name not in NEVER_READ):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines()]
            elif path.suffix == ".yaml":
                assert isinstance(yaml.safe_load(path.read_text()), dict)
            elif path.suffix == ".ckpt":
                torch.load(path, map_location="cpu", weights_only=True)
            elif path.suffix == ".npz":
                with np.load(path) as z:
                    [z[k] for k in z.files]
            elif path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert ".tmp" not in path.name and "-v1" not in path.name
        except Exception as e:  # noqa: BLE001  (any failure to read back is the finding)
            bad.append(f"{path.relative_to(run_dir)}: {type(e).__name__}")
    return bad


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_killed_at_random_points_then_resumed_gives_the_uninterrupted_numbers(recipe, data, tmp_path, request):
    rng = random.Random(f"{SEED}-{recipe}")
    llm = request.getfixturevalue("tiny_llm_dir") if recipe == "recpie" else None
    log = tmp_path / "stderr.log"
    start = time.perf_counter()
    assert _exit_code(_fork(_argv(recipe, tmp_path / "ref", data, llm), log)) == 0, _why(log)
    whole = time.perf_counter() - start
    ref_dir = tmp_path / "ref" / RECIPES[recipe][0]
    reference = _numbers(ref_dir)
    argv = _argv(recipe, tmp_path / "killed", data, llm)
    kills = int(KILLS) if KILLS else 2 if recipe == "baselines" else 1
    delays = sorted(rng.uniform(0.05, 1.0) * whole for _ in range(kills))  # points spread over one run's time
    for delay in delays:
        pid = _fork(argv, log)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        assert _exit_code(pid) in (-signal.SIGKILL, 0), _why(log)  # 0: it finished first
    code = _exit_code(_fork(argv, log))
    assert code == 0, f"kills at {delays} s: " + _why(log)
    run_dir = tmp_path / "killed" / ref_dir.name
    assert _damaged(run_dir) == []
    assert _numbers(run_dir) == reference, f"kills at {delays} s (RECPIE_FAULT_SEED={SEED})"


def test_full_disk_at_a_random_write_then_resumed_gives_the_uninterrupted_numbers(data, tmp_path):
    rng = random.Random(f"{SEED}-full-disk")
    log = tmp_path / "stderr.log"
    argv = _argv("baselines", tmp_path / "ref", data)
    assert _exit_code(_fork(argv, log)) == 0, _why(log)
    reference = _numbers(tmp_path / "ref" / "nyc_baselines")
    argv = _argv("baselines", tmp_path / "full", data)
    for at in sorted(rng.sample(range(1, 40), 2)):  # the run opens ~40 files for writing
        log.write_text("")
        code = _exit_code(_fork(argv, log, full_disk_at=at))
        err = log.read_text()
        last = err.strip().splitlines()[-1] if err.strip() else ""
        # a cache write that fails only warns (exit 0); any other ends the run with one error line naming the
        # cause (TensorBoard's writer thread may print its own traceback before it)
        assert code == 0 or (code == 2 and last.startswith("error: ") and "No space left on device" in last), \
            f"full disk from write {at}: exit {code}: {err[-3000:]}"
        assert _damaged(tmp_path / "full" / "nyc_baselines") == [], f"full disk from write {at}"
    assert _exit_code(_fork(argv, log)) == 0, _why(log)
    assert _numbers(tmp_path / "full" / "nyc_baselines") == reference
