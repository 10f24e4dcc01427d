"""``python -m recpie run``: the experiment runner behind ``make experiment NAME=...``.

It resolves the named config, locks the run directory ``<run.output_dir>/<name>`` for this process, checks
that it is new or holds a run of the same config on the same input files (recpie/utils/run_folder.py,
recpie/utils/provenance.py) and that the caches the run will write are writable, records what reproduces
the run there (config, commit, versions, input hashes) and hands over to the recipe.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import time
from pathlib import Path

from omegaconf import OmegaConf

from recpie.cli.console import setup_console
from recpie.cli.preflight import check_before_training
from recpie.config import ExperimentConfig, data_config, load_experiment
from recpie.config_loading import available_experiments
from recpie.errors import ConfigError
from recpie.utils.files import check_writable
from recpie.utils.provenance import write_provenance
from recpie.utils.run_folder import accept_run_folder, run_dir_of, run_folder_lock

FULL_DISK = {errno.ENOSPC, errno.EDQUOT}  # "No space left on device", "Disk quota exceeded"


def _full_disk(exc: BaseException) -> OSError | None:
    """The full-disk OSError behind ``exc``, if any: Lightning re-raises TensorBoard's as a ValueError ("you
    tried to log 0.0 ..."), so the causes are followed too."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_DISK:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recpie run",
        description="Run a named experiment. Available: " + ", ".join(available_experiments()),
    )
    p.add_argument("name", nargs="?", default="default", help="experiment name or path to a YAML config")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.max_len=32 run.seeds=[0,1]")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def run_main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)
    cfg = load_experiment(args.name, args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    setup_console()
    run_dir = run_dir_of(cfg)
    from recpie.data.load import input_files

    with run_folder_lock(run_dir):  # held until the recipe returns: one process per run folder
        resumed = accept_run_folder(run_dir, cfg, OmegaConf.structured(ExperimentConfig))  # before any write
        if cfg.run.recipe == "recpie" and cfg.explainer.explanation_cache:  # hours before its first write
            check_writable(Path(cfg.explainer.explanation_cache), "explainer.explanation_cache",
                           'or "" for no explanation cache')
        write_provenance(run_dir, cfg, input_files(data_config(cfg)), resumed=resumed,
                         accept_changed_inputs=cfg.run.accept_changed_inputs)
        check_before_training(cfg)  # sizes, kept targets, GPUs, the LLM, before any training (cli/preflight.py)
        recipe = importlib.import_module(f"recpie.recipes.{cfg.run.recipe}")
        start = time.perf_counter()
        try:
            recipe.run(cfg, run_dir)
        except Exception as e:  # a full disk hit a writer of another library (TensorBoard, Lightning)
            full = _full_disk(e)
            if full is None:
                raise
            raise ConfigError(f"the disk is full ({full.strerror}{': ' + str(full.filename) if full.filename else ''}) "
                              f"while writing {run_dir}: free space there (or set run.output_dir elsewhere) and run "
                              "the same command again; it resumes from the last checkpoint") from None
    print(f"\nrun directory: {run_dir}  ({time.perf_counter() - start:.0f} s)")
    return 0
