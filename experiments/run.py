"""The experiment runner behind ``make experiment NAME=...`` and ``python -m recpie run``.

It resolves the named config, makes the run directory ``<run.output_dir>/<name>``, records what
reproduces the run there (config, commit, versions, input hashes) and hands over to the recipe.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from recpie.config import data_config, load_experiment
from recpie.config_loading import ConfigError, available_experiments
from recpie.utils.provenance import write_provenance

RECIPES = ("data_stats", "baselines", "recpie", "data_efficiency")


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
    try:
        cfg = load_experiment(args.name, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    if cfg.run.recipe not in RECIPES:
        print(f"config error: run.recipe={cfg.run.recipe!r}; use one of {RECIPES}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    run_dir = Path(cfg.run.output_dir) / cfg.name
    from recpie.data.load import input_files

    write_provenance(run_dir, cfg, input_files(data_config(cfg)), resumed=cfg.run.resume)
    recipe = importlib.import_module(f"recpie.recipes.{cfg.run.recipe}")
    start = time.perf_counter()
    recipe.run(cfg, run_dir)
    print(f"\nrun directory: {run_dir}  ({time.perf_counter() - start:.0f} s)")
    return 0
