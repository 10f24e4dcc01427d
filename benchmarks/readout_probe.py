"""Is a readout explainer's choice short of training or of what its hidden states hold? (issue 22)

A finished run with ``explainer.choice=readout`` scores each candidate by a linear head on the LLM's last
hidden state at the end of the candidate's prompt line. This reads those hidden states (the run's best
checkpoint: its recommender's top K, its LoRA and soft prompt) for seeded train and val samples, fits a
fresh linear head on the train ones in closed form (L-BFGS on the warm-up's listwise loss of the facts
teacher's order, standardised states, a ridge per row of the table) and prints, on val, how often the
trained head and each refitted head name the teacher's top-1: over all samples, and where the teacher departs
from the recommender's first candidate (what always naming candidate 1 misses: the content a relay carries).
A refitted head far above the trained one says the warm-up under-trains the head; one level with it, that
the hidden states do not hold the teacher's facts in a linear form. With ``--layers``, fresh heads are also
fitted on other hidden states at the same line ends (explainer.readout_layers: 0 the embeddings, i layer i's
output, RMS-normalised as the explainer reads them), each alone and each beside the run's own: where a line's
facts are more linear than in the state the run reads.

    python benchmarks/readout_probe.py results/nyc_recpie_3pct_readout [--train 384] [--val 256] [--layers 6 9 12]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from recpie.evaluation.tables import markdown_table
from recpie.explainer.choice import listwise_loss
from recpie.explainer.explainer import readout_layers
from recpie.explainer.forward import decoder_of
from recpie.explainer.warmup import FactsTeacher
from recpie.recipes.trained_run import load_trained_run


class _Capture(torch.nn.Module):
    """The choice head, keeping the line-end hidden states it reads (one tensor per prompt group) and passing
    the first ``width`` of them (the run's own readout layers) to the run's head."""

    def __init__(self, head: torch.nn.Module, width: int):
        super().__init__()
        self.head, self.width, self.seen = head, width, []

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        self.seen.append(lines.detach())
        return self.head(lines[..., :self.width])


@torch.no_grad()
def read_states(module, data, teacher: FactsTeacher, split: str, ids: np.ndarray, extra: tuple[int, ...] = (),
                batch: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[list[str]]]:
    """(hidden states [n, K, d x layers] at the candidates' line ends: the run's readout layers, then
    ``extra``; the trained head's log pi [n, K]; the teacher's order [n, K]; the candidates [n, K] and their
    labels) of ``ids`` of ``split``, with the run's recommender's top K."""
    ex, writer, rec, cfg = module.explainer, module.writer, module.recommender, module.cfg
    own = ex.readout_layers
    capture = _Capture(ex.choice_head, ex.hidden_size * len(own))
    ex.choice_head, ex.readout_layers, states, logps, orders, cands, labels = capture, own + extra, [], [], [], [], []
    try:
        for start in range(0, len(ids), batch):
            chunk = torch.as_tensor(ids[start:start + batch])
            rows = writer.batch(split, chunk)
            h, candidates, logits = rec.predict_top(rows)
            prompts = writer.prompts(split, chunk, candidates, logits)
            capture.seen.clear()
            labels += writer.labels(candidates)
            cands.append(candidates.cpu())
            parts = list(ex.choice_groups(prompts, labels[start:], h))
            back = torch.argsort(torch.cat([r for r, _ in parts]))
            states.append(torch.cat(capture.seen)[back].float().cpu())
            logps.append(torch.cat([lp for _, lp in parts])[back].cpu())
            orders.append(torch.as_tensor(teacher.order(data, split, chunk.numpy(), candidates.cpu().numpy(),
                                                        cfg.explainer, logits.cpu().numpy())))
            print(f"{split}: {min(start + batch, len(ids))}/{len(ids)} prompts read ({time.strftime('%H:%M:%S')})",
                  flush=True)
    finally:
        ex.choice_head, ex.readout_layers = capture.head, own
    return torch.cat(states), torch.cat(logps), torch.cat(orders), torch.cat(cands), labels


def fit_head(states: torch.Tensor, order: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [d], the standardisation's (mean, std)) minimising the mean listwise loss + ridge |w|^2."""
    mean, std = states.mean((0, 1)), states.std((0, 1)) + 1e-6
    x = (states - mean) / std
    w = torch.zeros(states.shape[-1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = listwise_loss(torch.log_softmax(x @ w, -1), order).mean() + ridge * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), torch.stack([mean, std])


def agreement(scores: torch.Tensor, order: torch.Tensor) -> list[str]:
    """[all samples, where the teacher departs from candidate 1, share of picks off candidate 1]."""
    top, pick = order[:, 0], scores.argmax(1)
    off = top != 0
    return [f"{(pick == top).float().mean():.3f}", f"{(pick[off] == top[off]).float().mean():.3f}",
            f"{(pick != 0).float().mean():.3f}"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished recpie run folder with explainer.choice=readout")
    ap.add_argument("--seed", type=int, default=None, help="which of its seeds (default: its first)")
    ap.add_argument("--train", type=int, default=384, help="train samples the fresh heads are fitted on")
    ap.add_argument("--val", type=int, default=256, help="val samples they are measured on")
    ap.add_argument("--ridges", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    ap.add_argument("--layers", type=int, nargs="*", default=[],
                    help="other hidden states to fit fresh heads on (explainer.readout_layers' indices)")
    args = ap.parse_args(argv)
    cfg, data, module = load_trained_run(args.run, args.seed)
    if module.explainer is None or module.explainer.choice_head is None:
        raise SystemExit(f"{args.run}: not a run with explainer.choice=readout (no choice head to probe)")
    ex = module.explainer
    own = ex.readout_layers
    extra = readout_layers(args.layers, ex.model.config, decoder_of(ex.model)) if args.layers else ()
    if set(extra) & set(own):
        raise SystemExit(f"--layers {args.layers}: the run already reads {list(own)}; name other hidden states")
    teacher = FactsTeacher.fit(module.recommender.backbone, data, cfg)
    draw = np.random.default_rng(cfg.run.seeds[0] if args.seed is None else args.seed)
    train_ids = draw.choice(len(data.splits["train"]), args.train, replace=False)
    val_ids = draw.choice(len(data.splits["val"]), args.val, replace=False)
    train_states, _, train_order, _, _ = read_states(module, data, teacher, "train", train_ids, extra)
    val_states, val_logp, val_order, _, _ = read_states(module, data, teacher, "val", val_ids, extra)
    rows = [["the run's trained head", "-", *agreement(val_logp, val_order)]]
    d = module.explainer.hidden_size
    width = d * len(own)
    readings = {f"the run's {list(own)}": [slice(0, width)]}
    for n, layer in enumerate(extra):
        at = width + n * d
        readings[f"[{layer}] alone"] = [slice(at, at + d)]
        readings[f"{list(own)} + [{layer}]"] = [slice(0, width), slice(at, at + d)]
    for name, parts in readings.items():
        train_x, val_x = (torch.cat([states[..., part] for part in parts], -1) for states in (train_states, val_states))
        for ridge in args.ridges:
            w, (mean, std) = fit_head(train_x, train_order, ridge)
            rows.append([f"{name} refitted on {args.train} train samples, ridge {ridge:g}",
                         agreement(((train_x - mean) / std) @ w, train_order)[0],
                         *agreement(((val_x - mean) / std) @ w, val_order)])
    off = float((val_order[:, 0] != 0).float().mean())
    print(f"\n{args.run}: the readout head's choice against the facts teacher's top-1 ({args.val} val samples; "
          f"the teacher departs from candidate 1 on {off:.3f} of them)\n")
    print(markdown_table(["head", "train agreement", "val agreement", "val agreement where the teacher departs "
                          "from candidate 1", "val picks off candidate 1"], rows))


if __name__ == "__main__":
    main()
