"""How often, and how well, does the facts teacher leave the recommender's first candidate, per seed? (issue 22)

The warm-up of ``recpie.sft_target=facts`` teaches "may like" = the teacher's top-1 (``warmup.FactsTeacher``:
the prompt-only facts reader fitted on every val sample with the backbone's top K). Where the teacher's
top-1 is candidate 1 the explainer only has to copy the recommender; its departures from candidate 1 are
all the content a verdict carries. This fits the teacher for each seed's backbone of a data-efficiency
study (the setting its search chose at ``--fraction``) and prints, on the train rows the warm-up draws from
(``--warmup`` of them, drawn with the warm-up's seeded generator), on val and on test: the share of samples
where the teacher departs, and on those, how often its top-1 is the target against candidate 1. A seed
whose teacher departs rarely gives its explainer few departures to learn from. Prompts as ``--config``
writes them (its data fraction must be the study's).

    python benchmarks/teacher_departures.py results/nyc_data_efficiency --fraction 0.03 \
        --config nyc_recpie_3pct_readout_habit
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from recpie.components.backbone import Backbone
from recpie.config import data_config, load_experiment
from recpie.data.fraction import supervision_draw
from recpie.data.load import load_checkin_data
from recpie.evaluation.tables import markdown_table
from recpie.evaluation.verdicts import departure_precision
from recpie.explainer.information import top_k
from recpie.explainer.warmup import FactsTeacher
from recpie.models.cycle_sampler import explainable_train_ids
from recpie.recipes.baselines import fit_record
from recpie.recipes.data_efficiency import fit_folder
from recpie.reporting.study_points import point_name, read_point
from recpie.utils.checkpoints import load_weights
from recpie.utils.seeds import phase_seed


def departures(teacher: FactsTeacher, backbone: Backbone, data, cfg, split: str, ids: np.ndarray) -> list[str]:
    """[share of samples where the teacher's top-1 is not candidate 1, on those: target = teacher's top-1,
    target = candidate 1], formatted (the gate's row "teacher departs", ``departure_precision``)."""
    view = top_k(backbone, data, split, ids, cfg.explainer.num_candidates, cfg.data.max_len,
                 cfg.data.history_summary)
    top = teacher.order(data, split, ids, view.candidates, cfg.explainer, view.logits)[:, 0]
    candidates = torch.as_tensor(view.candidates)
    row = departure_precision(torch.zeros(candidates.shape), candidates, torch.as_tensor(view.target),
                              torch.as_tensor(top))["teacher departs (its top-1)"]
    if not row["samples"]:
        return ["0.000", "-", "-"]
    return [f"{row['samples'] / len(ids):.3f}", f"{row['named']:.3f}", f"{row['first']:.3f}"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, help="a data-efficiency run folder (its points/ and fit folders)")
    ap.add_argument("--fraction", type=float, required=True, help="the study's fraction whose backbones to read")
    ap.add_argument("--config", required=True, help="the recpie experiment whose prompts the teacher reads")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warmup", type=int, default=0,
                    help="warm-up rows to draw (0: the config's recpie.sft_steps x recpie.sft_batch)")
    args = ap.parse_args(argv)
    cfg = load_experiment(args.config)
    data = load_checkin_data(data_config(cfg))
    n_warm = args.warmup or cfg.recpie.sft_steps * cfg.recpie.sft_batch
    rows = []
    for seed in args.seeds:
        point = read_point(args.study, point_name(args.fraction, seed))
        if point is None:
            raise SystemExit(f"{args.study}: no point for fraction {args.fraction:g}, seed {seed} (run the study)")
        folder = fit_folder(args.study, args.fraction, point[0].get("setting", ""), seed) / "checkpoints"
        if not (folder / "last.ckpt").is_file():
            raise SystemExit(f"{folder}: no checkpoints (a study copied without them cannot give its backbones)")
        backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
        backbone.load_state_dict(load_weights(fit_record(folder)["best_checkpoint"], "the study's backbone",
                                              "backbone.", draw=supervision_draw(data)))
        backbone.eval()
        teacher = FactsTeacher.fit(backbone, data, cfg)
        pool = explainable_train_ids(data)
        g = torch.Generator().manual_seed(phase_seed(seed, "sft", 0))  # the warm-up's generator (rank 0)
        warm = pool[torch.randint(len(pool), (n_warm,), generator=g)].numpy()
        splits = {"train (warm-up rows)": ("train", warm), "val": ("val", np.arange(len(data.splits["val"]))),
                  "test": ("test", np.arange(len(data.splits["test"])))}
        for name, (split, ids) in splits.items():
            rows.append([str(seed), name, str(len(ids)), *departures(teacher, backbone, data, cfg, split, ids)])
    print(f"{args.study}, fraction {args.fraction:g}, prompts of {args.config}: the facts teacher (fitted on all val "
          "samples) against the recommender's first candidate\n")
    print(markdown_table(["seed", "samples", "how many", "teacher departs from candidate 1",
                          "on those: target is the teacher's top-1", "target is candidate 1"], rows))


if __name__ == "__main__":
    main()
