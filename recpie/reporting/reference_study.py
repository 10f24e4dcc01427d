"""A recpie run against the data-efficiency study's models, on the same test samples (recpie.reference_study).

Two questions the run alone cannot answer: is RecPIE trained on a fraction of the targets as good as the
backbone trained on all of them, or as the training-free time-aware counter? And does the explainer read
the prompt's facts: how often does "may like" name the target, against the top-1 of the facts reader (the
bound's linear reader of the same prompt facts, fitted on val) and of the backbone it starts from?
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recpie.errors import ConfigError
from recpie.evaluation.bootstrap import paired_bootstrap_ci, paired_values_ci
from recpie.evaluation.ranking import per_sample_metric
from recpie.evaluation.tables import ci_text, markdown_table
from recpie.reporting.study_points import COUNTERS, point_files, point_name, read_point

COMPARED = ("mrr", "acc@1", "acc@10")


def check_reference_study(study: str, test_samples: int, fraction: float, seeds: list[int]) -> None:
    """Before any training: the study holds the points this run will be compared with, on every test sample."""
    if not study:
        return
    if test_samples:
        raise ConfigError(f"recpie.reference_study={study} compares on every test sample (the study's): set "
                          f"recpie.test_samples=0 (it is {test_samples}) or recpie.reference_study=''")
    names = [COUNTERS] + [point_name(fraction, s) for s in seeds]  # the 100% points are compared when there
    missing = [str(point_files(Path(study), n)[1]) for n in names if read_point(Path(study), n) is None]
    if missing:  # absent, or damaged (read_point warned)
        raise ConfigError(f"recpie.reference_study={study}: missing or damaged {', '.join(missing)}; run the "
                          "data_efficiency recipe (nyc_data_efficiency) with this fraction and these seeds "
                          "into that folder, or set recpie.reference_study=''")
    for seed in seeds:
        _, point = read_point(Path(study), point_name(fraction, seed))
        if len(point["bound_ids"]) != len(point["ranks"]):
            raise ConfigError(f"recpie.reference_study={study}: its bound at {point_name(fraction, seed)} was read on "
                              f"{len(point['bound_ids'])} of {len(point['ranks'])} test samples; rerun the study with "
                              "efficiency.bound_test_samples=0 (all)")


def reference_lines(study: Path, fraction: float, seed: int, ids: np.ndarray, ranks: np.ndarray,
                    liked_target: np.ndarray | None, boot: dict) -> list[str]:
    """results.md lines: RecPIE minus the study's models (paired CIs), and the explainer's hit rate against
    the facts reader's and the backbone's top-1. ``ids`` [n] test sample ids, ``ranks`` [n] RecPIE's;
    ``liked_target`` [n] the "may like" share on the target (explainer.encoder=verdict), else None."""
    meta, point = read_point(study, point_name(fraction, seed))
    full = read_point(study, point_name(1.0, seed))  # None while the study has no 100% point of this seed
    names, counters = read_point(study, COUNTERS)
    reader = np.empty_like(point["ranks"])
    reader[point["bound_ids"]] = point["bound_reader"]
    backbone = f"backbone, {fraction:g} of the targets (seed {seed})"
    bound = ("facts reader of that backbone's top K (the study's bound, prompt facts version "
             f"{meta.get('facts_version')})")
    refs = {**({f"backbone, 100% of the targets (seed {seed})": full[1]["ranks"][ids]} if full else {}),
            names[-1]: counters[f"line{len(names) - 1}"][ids], backbone: point["ranks"][ids], bound: reader[ids]}
    rows = [[name, *(ci_text(paired_bootstrap_ci(ranks, ref, m, **boot)) for m in COMPARED)]
            for name, ref in refs.items()]
    absent = [] if full else [f"(The study has no 100% point of seed {seed} yet: that row is left out.)", ""]
    lines = [f"Against the data-efficiency study ({study}), same test samples, paired bootstrap:", "",
             markdown_table(["RecPIE minus", *COMPARED], rows), "", *absent]
    if liked_target is None:
        return lines
    top1 = {name: per_sample_metric(refs[name], "acc@1") for name in (backbone, bound)}
    rows = [['"may like" names the target', f"{liked_target.mean():.4f}", ""]]
    rows += [[f"top-1 of the {name}", f"{hit.mean():.4f}",
              ci_text(paired_values_ci(liked_target, hit, "hit", **boot))] for name, hit in top1.items()]
    return [*lines, "Does the explainer read the facts? Share of the test samples whose target each names "
            "(a \"may like\" naming several candidates counts its share; the reader is fitted on "
            f"{meta['reader_val_fitted']} val samples):", "",
            markdown_table(["", "hit rate", "explainer minus it"], rows), ""]
