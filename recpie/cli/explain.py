"""`python -m recpie explain`: a user's top-K places, each with a contrastive explanation."""
from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime, timezone

import numpy as np
import torch

from recpie.config_checks import RANGES
from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData, SampleSet
from recpie.errors import InputError
from recpie.evaluation.scoring import Scorer
from recpie.explainer.config import EMBEDDED_GEMMA, ExplainerConfig, check_models
from recpie.explainer.explainer import Explainer
from recpie.explainer.model_check import check_llm
from recpie.explainer.prompts import build_prompt
from recpie.utils.checkpoints import load_checkpoint

QUERY = "query"


def query_data(data: CheckinData, user: int, when: datetime | None) -> tuple[CheckinData, int]:
    """A one-sample split for the user's first check-in at/after `when` (default: their last one): its
    history is every earlier check-in and its time is the moment asked about. Returns (data, check-in)."""
    lo, hi = int(data.user_start[user]), int(data.user_start[user + 1])
    j = hi - 1
    if when is not None:
        later = np.flatnonzero(data.time[lo:hi] >= int(when.timestamp()))
        if len(later) == 0:
            raise InputError(f"--time {when.isoformat()}: the user has no check-in at or after it")
        j = lo + int(later[0])
    if j == lo:
        raise InputError("--time: that is the user's first check-in, there is no history before it")
    splits = {**data.splits, QUERY: SampleSet(np.array([j]), np.array([j]))}
    return dataclasses.replace(data, splits=splits), j


def parse_time(text: str) -> datetime:
    """ISO 8601; an explicit offset (``+09:00``, ``Z``) is kept, a time without one is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2012-04-14T07:18:03 "
                                         "or 2012-04-14T07:18:03+09:00") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def positive_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def within(key: str):
    """An argparse type: a positive integer within the range of config key ``key`` (config_checks.RANGES),
    the key whose value the flag becomes: --max-new-tokens 1000000 ground for minutes."""
    def parse(text: str) -> int:
        value = positive_int(text)
        ok, rule = RANGES[key]
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value} is not {rule} (the range of {key})")
        return value
    return parse


def check_adapters(state: object, expected: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """``state`` when it holds exactly the explainer's trainable tensors (``expected``: names and shapes);
    InputError naming the file and the first difference otherwise (it was a KeyError traceback)."""
    fix = "pass the file a trained run wrote (Explainer.trainable_state_dict()) for this --model"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"--adapters: {path} holds {type(state).__name__}, not a dict of tensors: {fix}")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise InputError(f"--adapters: {path} lacks {len(missing)} of the explainer's {len(expected)} tensors "
                         f"({', '.join(missing[:2]) or 'none'}) and has {len(extra)} it does not "
                         f"({', '.join(extra[:2]) or 'none'}): {fix}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise InputError(f"--adapters: {path}: {name} has shape {list(state[name].shape)}, the explainer's "
                             f"{list(tensor.shape)} (another LoRA rank, soft prompt or model): {fix}")
    return state


def explain_main(argv: list[str], recommender: Scorer | None = None) -> int:
    """`recommender(data, split, rows) -> scores [b, P]` ranks the places (default: the decayed counter)."""
    ap = argparse.ArgumentParser(prog="python -m recpie explain", description=__doc__)
    ap.add_argument("user", help="raw user id of the data set (e.g. a TSMC2014 userId)")
    ap.add_argument("--time", type=parse_time, help="ISO 8601 time, UTC unless it names an offset "
                    "(e.g. 2013-01-05T18:00 or 2013-01-05T18:00+09:00): explain the user's first "
                    "check-in at or after it, from the history before it; default: their last check-in")
    ap.add_argument("--k", type=within("explainer.num_candidates"), default=5,
                    help="places to list (top-K of the recommender)")
    ap.add_argument("--run", help="a finished `recpie` run directory (e.g. results/default): its recommender ranks "
                    "and its trained explainer (LoRA + soft prompt from the user state) explains; without it the "
                    "0.99 counter ranks and --model explains")
    ap.add_argument("--seed", type=int, help="with --run: whose checkpoint (default: the run's first seed)")
    ap.add_argument("--model", default=EMBEDDED_GEMMA, help="explainer LLM: HF dir, hub id, .gguf, embedded")
    ap.add_argument("--adapters", help="torch file of Explainer.trainable_state_dict() from a trained run")
    ap.add_argument("--source", default="foursquare")
    ap.add_argument("--city", default="NYC")
    ap.add_argument("--data-root", default="")
    ap.add_argument("--max-new-tokens", type=within("explainer.max_new_tokens"), default=96)
    args = ap.parse_args(argv)
    if args.run:
        from recpie.recipes.trained_run import load_trained_run

        _, data, module = load_trained_run(args.run, args.seed)
    else:
        data = load_checkin_data(DataConfig(source=args.source, city=args.city, data_root=args.data_root))
    if args.user not in data.user_ids:
        raise InputError(f"user {args.user!r} is not in {data.source} after preprocessing")
    if args.k > data.num_pois:
        raise InputError(f"--k {args.k} is more than the {data.num_pois} POIs of {data.source}")
    data, j = query_data(data, data.user_ids.index(args.user), args.time)
    if args.run:
        top, texts = explain_with_run(module, data, args.k)
        _print(data, args.user, j, top, texts)
        return 0
    if recommender is None:
        from recpie.components.baselines import DecayedCounter

        recommender = DecayedCounter(0.99).fit(data).score
    top = np.argsort(-recommender(data, QUERY, np.array([0]))[0], kind="stable")[: args.k]
    cfg = ExplainerConfig(model=args.model, num_candidates=args.k, granularity="candidate", soft_tokens=0,
                          max_new_tokens=args.max_new_tokens, few_shot=args.adapters is None)
    check_models(cfg)
    check_llm(cfg)  # a wrong --model is one line naming it, not transformers' traceback
    adapters = load_checkpoint(args.adapters, "--adapters") if args.adapters else None  # before the model loads
    ex = Explainer(cfg, user_dim=1)
    if adapters is not None:
        ex.load_trainable_state_dict(check_adapters(adapters, ex.trainable_state_dict(), args.adapters))
    prompts = [build_prompt(data, QUERY, 0, top, cfg, focus=int(p)) for p in top]
    texts = ex.generate(prompts, None, sample=False).texts
    _print(data, args.user, j, top, texts)
    return 0


def explain_with_run(module, data: CheckinData, k: int) -> tuple[list[int], list[str]]:
    """A trained RecPIE module's top-k for the query sample, one explanation per place, each generated
    with the soft prompt of the user's state."""
    from omegaconf import OmegaConf

    from data_modules.batches import SampleDataset, to_tensors

    dataset = SampleDataset(data, QUERY, module.cfg.data.max_len, module.cfg.data.history_summary)
    batch = to_tensors(dataset.__getitems__([0]))
    h, top, logits = module.predict_top(batch, k)
    top, logits = top[0].tolist(), logits[0].tolist()  # the logits: what explainer.show_scores states
    cfg = OmegaConf.merge(module.cfg.explainer, {"num_candidates": k})
    prompts = [build_prompt(data, QUERY, 0, top, cfg, focus=p, logits=logits) for p in top]
    return top, module.explainer.generate(prompts, h.expand(k, -1), sample=False).texts


def _print(data: CheckinData, user: str, j: int, top, texts: list[str]) -> None:
    local = datetime.fromtimestamp(int(data.local_seconds(j)), timezone.utc).strftime("%a %Y-%m-%d %H:%M")
    print(f"user {user}, {len(data.history(QUERY, 0))} earlier check-ins, asked at {local} local time")
    for rank, (p, text) in enumerate(zip(top, texts, strict=True), 1):
        print(f"{rank}. {data.catalogue.label(int(p))}\n   {text.strip()}")
