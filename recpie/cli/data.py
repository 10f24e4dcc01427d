"""``python -m recpie data stats NAME [key=value ...]``: the statistics table of an experiment's data, the machine
and the dtype the explainer would load in on it."""
from __future__ import annotations

import argparse

from recpie.config import data_config, load_experiment
from recpie.data.load import load_checkin_data
from recpie.data.stats import stats_table
from recpie.recipes.data_stats import machine_lines


def data_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m recpie data", description="Inspect an experiment's data.")
    p.add_argument("action", choices=["stats"],
                   help="stats: users, POIs, check-ins, samples, time ranges; the machine, the explainer's dtype")
    p.add_argument("name", nargs="?", default="default", help="experiment name or YAML path")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.source=gowalla")
    args = p.parse_intermixed_args(argv)
    cfg = load_experiment(args.name, args.overrides)
    data = load_checkin_data(data_config(cfg))
    print(stats_table(data))
    print("\n" + machine_lines(cfg))
    return 0
