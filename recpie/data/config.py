"""The `data` config section: which check-ins to read and how to turn them into samples.

Fields left at ``None`` take the source's default (``SOURCE_DEFAULTS``), so one experiment file can
switch ``source`` without restating every threshold. ``resolve(cfg)`` fills them in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from recpie.config_checks import check_section

# the check-in datasets a loader exists for (recpie/data/sources)
Source = StrEnum("Source", ["foursquare", "gowalla", "google_local"])
Encoding = StrEnum("Encoding", ["auto", "latin-1", "utf-8"])  # text encodings of the raw check-in files
# what a malformed raw line does: stop naming it, or skip it with a count
OnBadLine = StrEnum("OnBadLine", ["error", "skip"])
TrainTargets = StrEnum("TrainTargets", ["all_steps", "protocol"])  # which train steps are supervised
# what data.train_fraction draws: a share of the targets or of the users
FractionUnit = StrEnum("FractionUnit", ["targets", "users"])


@dataclass
class DataConfig:
    # which reader: "foursquare" (TSMC2014), "gowalla" (SNAP layout) or "google_local" (UCSD reviews + meta)
    source: Source = Source.foursquare
    # Foursquare city ("NYC", "TKY") or Google Local state ("Vermont"); unused by Gowalla
    city: str = "NYC"
    # folder holding the datasets; "" = env RECPIE_DATA_ROOT, else ../shared/data next to the repo
    data_root: str = ""
    # folder of this dataset, relative to data_root or absolute; None = the source's default folder
    dataset_dir: str | None = None
    # Google Local only: folder of meta-<State>.json(.gz); "" = the same folder as the reviews
    meta_dir: str = ""
    # Foursquare only: CSV with venue_id,name columns giving venue names; "" = none (relative to data_root)
    names_file: str | None = None
    # text encoding of the check-in file: "auto" (UTF-8 when the whole file decodes as UTF-8, else the
    # source's original encoding: latin-1 for TSMC2014), "latin-1" or "utf-8"
    encoding: Encoding = Encoding.auto
    # drop check-ins that repeat an earlier one exactly (same user, venue and second); counted in data stats
    drop_duplicates: bool = True
    # what to do with a malformed input line: "error" (stop, naming file and line) or "skip" (count it)
    on_bad_line: OnBadLine = OnBadLine.error
    # drop a user's check-in when it repeats the venue of the user's previous check-in
    collapse_repeats: bool = False
    # iterative k-core: keep POIs with at least this many check-ins (repeated until stable)
    min_poi_checkins: int | None = None
    # iterative k-core: keep users with at least this many check-ins (repeated until stable)
    min_user_checkins: int | None = None
    # a trajectory ends where the gap to the user's previous check-in exceeds this many hours
    session_gap_hours: float | None = None
    # trajectories shorter than this are dropped (after the k-core filter, no re-filtering)
    min_trajectory_len: int = 2
    # global chronological cut: t80 = sorted times[int(val_cut * n)] starts the val period
    val_cut: float = 0.8
    # t90 = sorted times[int(test_cut * n)] starts the test period
    test_cut: float = 0.9
    # neural models see at most this many history check-ins (the window length L of a batch)
    max_len: int = 50
    # processed-data cache folder; "" = $XDG_CACHE_HOME/recpie/data (default ~/.cache/recpie/data)
    cache_dir: str = ""
    # set False to always preprocess from the raw files (the cache is then neither read nor written)
    use_cache: bool = True
    # batches also summarise each row's history before its window (hist_* keys, data_modules/batches.py):
    # the backbone's copy features then count the whole history, not just the last max_len check-ins
    history_summary: bool = True
    # train windows: "all_steps" (every next check-in in the train period) or "protocol" (train targets only)
    train_targets: TrainTargets = TrainTargets.all_steps
    # batch size of train windows (small: more steps per epoch)
    batch_size: int = 32
    # batch size of val/test/sample batches
    eval_batch_size: int = 256
    # DataLoader worker processes (0 = load in the main process)
    num_workers: int = 0
    # seed of the DataModule's train-window shuffling when it is used on its own; the recipes draw each
    # epoch's order (and every other random choice) from the run's seed, one of run.seeds
    seed: int = 0
    # share of the supervised train targets a trained model may learn from (recpie/data/fraction.py);
    # histories, prompts, training-free baselines, val and test always keep every check-in
    train_fraction: float = 1.0
    # what is drawn: "targets" (each train target kept with probability train_fraction) or "users" (that
    # share of the users keep all their train targets)
    train_fraction_unit: FractionUnit = FractionUnit.targets
    train_fraction_seed: int = 0  # seed of that draw (nested across fractions for one seed)


# Per-source defaults for the fields left at None. Gowalla's shipped subset has 3-41 check-ins per user:
# 10-core keeps only 59 test samples, hence 5-core. Google Local reviews are days apart: a 24 h gap would
# cut nearly every review sequence into single reviews, so sessions there span up to a week.
SOURCE_DEFAULTS: dict[str, dict] = {
    "foursquare": dict(
        min_poi_checkins=10, min_user_checkins=10, session_gap_hours=24.0,
        dataset_dir="foursquare_{city_lower}_tsmc2014",
        names_file="foursquare_{city_lower}_tsmc2014_raw_rows/poi_metadata_{city}.csv",
    ),
    "gowalla": dict(
        min_poi_checkins=5, min_user_checkins=5, session_gap_hours=24.0,
        dataset_dir="gowalla_snap_hmtgrn", names_file="",
    ),
    "google_local": dict(
        min_poi_checkins=10, min_user_checkins=10, session_gap_hours=168.0,
        dataset_dir="google_local_{city_lower}", names_file="",
    ),
}


def resolve(cfg: DataConfig) -> DataConfig:
    """A copy with every ``None`` replaced by the source's default; checks every key (recpie.config_checks)."""
    check_section(cfg, "data")
    fmt = dict(city=cfg.city, city_lower=cfg.city.lower())
    filled = {}
    for key, value in SOURCE_DEFAULTS[cfg.source].items():
        if getattr(cfg, key) is None:
            filled[key] = value.format(**fmt) if isinstance(value, str) else value
    return dataclasses.replace(cfg, **filled)
