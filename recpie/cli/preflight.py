"""What ``run`` checks once the data's size is known, before any training: each check that would otherwise
fail after a warm-up (or train on nothing and exit 0) fails here, as one error line naming the key.

- the machine has what the trainer section asks for (GPUs for accelerator=gpu);
- the keys that count POIs (eval.topk, explainer.num_candidates) are within the data's POI count;
- data.train_fraction, and each efficiency.fractions entry of a data_efficiency run, keeps a train target;
- a recpie run's explainer.model loads its config and its LoRA targets name modules of it.

The data comes through the processed-data cache, which the recipe then reads again (a hit: ~0.02 s on NYC).
"""
from __future__ import annotations

import dataclasses

from omegaconf import DictConfig

from recpie.config import data_config
from recpie.config_checks import check_machine, check_sizes
from recpie.data.load import load_checkin_data, train_fraction_data


def check_before_training(cfg: DictConfig) -> None:
    check_machine(cfg.trainer)
    dc = data_config(cfg)
    full = load_checkin_data(dataclasses.replace(dc, train_fraction=1.0))
    check_sizes(cfg, full.num_pois, full.source)
    train_fraction_data(full, dc.train_fraction, dc.train_fraction_unit, dc.train_fraction_seed,
                        "data.train_fraction")
    if cfg.run.recipe == "data_efficiency":
        for fraction in cfg.efficiency.fractions:
            train_fraction_data(full, float(fraction), dc.train_fraction_unit, dc.train_fraction_seed,
                                f"efficiency.fractions ({fraction:g})")
    if cfg.run.recipe == "recpie":
        from recpie.explainer.model_check import check_llm  # transformers: only where an LLM will run

        check_llm(cfg.explainer)
