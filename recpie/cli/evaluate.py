"""``python -m recpie evaluate``: score an external model's predictions with the one evaluator.

Accepted files: a score matrix ``.npy`` / ``.pt`` of shape [m, P] (row i = sample i of the split,
higher = better) or a JSONL of ranked top-K lists ``{"sample_id": i, "topk": [poi, ...]}`` (unlisted
POIs share the remaining ranks under the tie rule).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from recpie.config import data_config, load_experiment
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData
from recpie.errors import InputError
from recpie.evaluation.config import EvalConfig
from recpie.evaluation.external import evaluate_file
from recpie.evaluation.tables import metrics_table
from recpie.utils.files import atomic_write, check_writable


def load_experiment_data(experiment: str) -> tuple[CheckinData, EvalConfig]:
    """A named experiment's processed data and eval section (through the config and the data cache)."""
    cfg = load_experiment(experiment)
    return load_checkin_data(data_config(cfg)), OmegaConf.to_object(cfg.eval)


def evaluate_main(argv: Sequence[str],
                  load_data: Callable[[str], tuple[CheckinData, EvalConfig]] = load_experiment_data) -> int:
    """CLI body: ``--experiment NAME --file PATH [--split test] [--out metrics.json]``; prints a table.

    ``load_data(experiment)`` returns that experiment's CheckinData and eval config."""
    parser = argparse.ArgumentParser(prog="python -m recpie evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="experiment whose data/split to score against")
    parser.add_argument("--file", required=True, type=Path, help=".npy/.pt [m, P] scores or .jsonl top-K")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, help="also write the metrics as JSON here")
    args = parser.parse_args(list(argv))
    if args.out:  # before the scoring: a folder given as --out was found only when the metrics were written
        if args.out.is_dir():
            raise InputError(f"--out {args.out} is a folder: give the path of the JSON file to write, e.g. "
                             f"{args.out / 'metrics.json'}")
        check_writable(args.out.parent, "--out", "(the folder of the JSON file)")
    data, cfg = load_data(args.experiment)
    results = evaluate_file(data, args.split, args.file, cfg)
    print(metrics_table(results, first="group"))
    if args.out:
        try:
            atomic_write(args.out, json.dumps(results, indent=2))
        except OSError as e:
            raise InputError(f"--out: cannot write {args.out} ({e.strerror or type(e).__name__}); the metrics are "
                             "printed above") from None
    return 0
