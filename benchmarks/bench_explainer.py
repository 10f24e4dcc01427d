"""The explainer's cost per phase of the real recipe, this working tree against a base commit, side by side.

Each run is a subprocess that runs the `recpie` recipe on NYC with the default config, shrunk to one cycle
(`--sft-steps` warm-up steps, one PPO iteration of `--rollouts` rollouts, `--greedy` greedy train
explanations at the default generation batch, a few val/test samples, no explanation cache), with timers
and an RSS sampler around each phase's method (the explainer trainer's, the writer's). Trees alternate (base,
work, base, work, ...) so that a shared machine's load hits both alike; the table gives each phase's median
seconds, tokens/s and peak RSS, and the base/work ratio.

    python benchmarks/bench_explainer.py --base 1b542a3            # compare with a commit
    python benchmarks/bench_explainer.py --base 1b542a3 --repeats 2 --rollouts 8 --greedy 32
    python benchmarks/bench_explainer.py --base HEAD --base-set explainer.dtype=float32   # one tree, two dtypes

`--set KEY=VALUE` adds a config override to every tree's recipe, `--base-set` to the base tree's only (the same
commit as base and work with a different override measures that override alone).
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

# phase: where its method lives, newest layout first (the child side also runs in older base trees)
PHASES = {
    "format warm-up step": [("recpie.rl.explainer_trainer", "ExplainerTrainer", "format_warmup"),
                            ("recpie.models.recpie_module", "RecPIEModule", "_format_warmup")],
    "PPO iteration": [("recpie.rl.explainer_trainer", "ExplainerTrainer", "ppo_iteration"),
                      ("recpie.models.recpie_module", "RecPIEModule", "_ppo_iteration")],
    "greedy explanations": [("recpie.explainer.writer", "ExplanationWriter", "refresh"),
                            ("recpie.models.recpie_module", "RecPIEModule", "_refresh")],
}


def phase_owner(places: list[tuple[str, str, str]]) -> tuple[type, str]:
    """The class and method name of a phase in the tree under test."""
    for module, cls, method in places:
        try:
            owner = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            continue
        if hasattr(owner, method):
            return owner, method
    raise SystemExit(f"none of {places} in this tree")


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


class Sampler(threading.Thread):
    """Peak resident memory since the last reset, sampled every 20 ms (torch allocations bypass tracemalloc)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0

    def run(self):
        while True:
            self.peak = max(self.peak, rss_gib())
            time.sleep(0.02)


def child(args) -> None:
    """Run the shrunk recipe in this process (cwd: the tree under test) and print one JSON line of stats."""
    logging_off()
    import torch

    from recpie.cli.run import run_main
    from recpie.explainer import llm
    from recpie.explainer.explainer import Explainer

    sampler = Sampler()
    sampler.start()
    stats: dict[str, dict] = {}
    tokens = {"n": 0, "s": 0.0}

    def timed(name, fn):
        def wrapper(self, *a, **k):
            tokens.update(n=0, s=0.0)
            sampler.peak, before, start = rss_gib(), rss_gib(), time.perf_counter()
            out = fn(self, *a, **k)
            rec = stats.setdefault(name, {"s": 0.0, "tokens": 0, "gen_s": 0.0, "peak": 0.0, "calls": 0})
            rec["s"] += time.perf_counter() - start
            rec["tokens"] += tokens["n"]
            rec["gen_s"] += tokens["s"]
            rec["peak"] = max(rec["peak"], sampler.peak)
            rec["before"], rec["after"] = before, rss_gib()
            rec["calls"] += 1
            return out
        return wrapper

    def counted(fn):
        def wrapper(self, *a, **k):
            start = time.perf_counter()
            gen = fn(self, *a, **k)
            tokens["n"] += int(gen.response_mask.sum())
            tokens["s"] += time.perf_counter() - start
            return gen
        return wrapper

    for name, places in PHASES.items():
        owner, method = phase_owner(places)
        setattr(owner, method, timed(name, getattr(owner, method)))
    Explainer.generate = counted(Explainer.generate)
    dtypes = []  # what the tree's explainer.dtype resolved to (load_llm reads the module's resolve_dtype)
    resolve = llm.resolve_dtype
    llm.resolve_dtype = lambda *a, **k: dtypes.append(resolve(*a, **k)) or dtypes[-1]
    overrides = [f"run.output_dir={args.out}", "run.resume=false", "recpie.cycles=1", "recpie.rec_steps_per_cycle=1",
                 f"recpie.sft_steps={args.sft_steps}", "recpie.ppo_iterations=1",
                 f"recpie.rollout_prompts={args.rollouts}", f"recpie.refresh_budget={args.greedy}",
                 "recpie.val_samples=2", "recpie.test_samples=2", "explainer.explanation_cache=''"]
    if args.backbone:
        overrides.append(f"recpie.backbone_checkpoint={args.backbone}")
    else:
        overrides.append("train.max_epochs=1")
    overrides += args.set
    with open(os.devnull, "w") as null:
        stdout, sys.stdout = sys.stdout, null
        try:
            run_main(["default", *overrides])
        finally:
            sys.stdout = stdout
    for rec in stats.values():
        rec["s"] /= rec["calls"]
    stats["_process"] = {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                         "cpu": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                         "dtype": " ".join(sorted({str(d).removeprefix("torch.") for d in dtypes})) or "?"}
    print("BENCH " + json.dumps(stats), flush=True)


def logging_off() -> None:
    """Progress bars and Lightning's chatter off: the parent reads one JSON line."""
    os.environ["TQDM_DISABLE"] = "1"
    import warnings

    warnings.filterwarnings("ignore")


def snapshot(root: Path, commit: str | None) -> Path:
    """A commit's files (git archive), or with commit=None the working tree's (tracked and untracked, not
    ignored), copied to a temporary directory: edits made while the benchmark runs do not reach it."""
    out = Path(tempfile.mkdtemp(prefix=f"bench_{commit or 'work'}_"))
    if commit:
        archive = subprocess.run(["git", "archive", commit], cwd=root, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(out, filter="data")
        shutil.copy2(__file__, out / "benchmarks" / "bench_explainer.py")  # the child side of this script
        return out
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (root / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, out / name)
    return out


def start_tree(tree: Path, args, out: Path, backbone: str, data_root: Path, sets: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_explainer.py"), "--child", "--out", str(out),
           "--sft-steps", str(args.sft_steps), "--rollouts", str(args.rollouts), "--greedy", str(args.greedy),
           *(f"--set={o}" for o in sets)]
    if backbone:
        cmd += ["--backbone", backbone]
    env = {"RECPIE_DATA_ROOT": str(data_root), **os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(tree: Path, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    line = [x for x in stdout.splitlines() if x.startswith("BENCH ")]
    if proc.returncode or not line:
        raise SystemExit(f"run in {tree} failed ({proc.returncode}):\n{stderr[-4000:]}")
    return json.loads(line[-1][6:])


def table(results: dict[str, list[dict]], names: tuple[str, str]) -> str:
    """One row per phase; each tree's columns name the LLM dtype its runs resolved (explainer.dtype)."""
    med = statistics.median
    label = {n: f"{n} ({'/'.join(sorted({r['_process'].get('dtype', '?') for r in results[n]}))})" for n in names}
    rows = ["| phase | " + " | ".join(f"{label[n]} s | {n} tok/s | {n} peak RSS GiB" for n in names)
            + " | speed-up |",
            "|---|" + "---|" * (3 * len(names) + 1)]
    for phase in [*PHASES, "_process"]:
        cells, secs = [], []
        for n in names:
            runs = [r[phase] for r in results[n] if phase in r]
            if phase == "_process":
                cells.append(f"| | {med(r['peak'] for r in runs):.2f}")
                continue
            s = med(r["s"] for r in runs)
            tps = med(r["tokens"] / r["gen_s"] for r in runs) if runs[0]["tokens"] else float("nan")
            secs.append(s)
            cells.append(f"{s:.1f} | {tps:.1f} | {med(r['peak'] for r in runs):.2f}")
        ratio = f"{secs[0] / secs[1]:.2f}x" if len(secs) == 2 else ""
        label = "whole process (ru_maxrss)" if phase == "_process" else phase
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="commit to compare with (default: only this tree)")
    ap.add_argument("--work", help="a commit to run instead of the working tree (whose uncommitted edits of "
                                   "other work would otherwise run too)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tree, alternating")
    ap.add_argument("--sft-steps", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=8, help="PPO rollout prompts (the default config: 8)")
    ap.add_argument("--greedy", type=int, default=32, help="greedy train explanations (one default batch: 32)")
    ap.add_argument("--backbone", default="", help="a warm backbone checkpoint (default: one trained once here)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every tree's recipe (repeatable)")
    ap.add_argument("--base-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the base tree's recipe only (repeatable)")
    ap.add_argument("--parallel", action="store_true",
                    help="run the trees at the same time (same load for both) instead of one after the other")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    import torch

    from recpie.utils.machine import cpu_features

    root = Path(__file__).resolve().parents[1]
    trees = {f"work {args.work}" if args.work else "work": snapshot(root, args.work)}
    if args.base_set and not args.base:
        raise SystemExit("--base-set needs --base (the commit whose recipe takes the override)")
    if args.base:
        base = f"base {args.base}" + "".join(f" {o}" for o in args.base_set)
        trees = {base: snapshot(root, args.base), **trees}
    sets = {n: args.set + (args.base_set if n.startswith("base") else []) for n in trees}
    out = Path(tempfile.mkdtemp(prefix="bench_runs_"))
    backbone = args.backbone
    results: dict[str, list[dict]] = {n: [] for n in trees}
    loads = []
    data_root = root.parent / "shared" / "data"  # the snapshots' default
    for r in range(args.repeats):
        if not backbone:  # train the backbone once (in the work tree), every run starts from it
            warm = out / "backbone"
            name = next(n for n in trees if n.startswith("work"))
            result(trees[name], start_tree(trees[name], args, warm, "", data_root, sets[name]))
            backbone = str(next(p for p in (warm / "default").rglob("best*.ckpt") if "warmup" in str(p)))
        loads.append(os.getloadavg()[0])
        if args.parallel:
            procs = {n: start_tree(t, args, out / f"{r}_{n.split()[0]}", backbone, data_root, sets[n])
                     for n, t in trees.items()}
            for name, proc in procs.items():
                results[name].append(result(trees[name], proc))
        else:
            for name, tree in trees.items():
                results[name].append(result(tree, start_tree(tree, args, out / f"{r}_{name.split()[0]}", backbone,
                                                             data_root, sets[name])))
        print(f"run {r + 1}: done (load average at its start {loads[-1]:.1f})", file=sys.stderr, flush=True)
    proc = next(iter(results.values()))[0]["_process"]
    dtypes = ", ".join(f"{n} {r[0]['_process'].get('dtype', '?')}" for n, r in results.items())
    print(f"CPU: {cpu_features().describe()}; LLM dtype per tree: {dtypes}")
    print(f"CPU capability {proc['cpu']} ({torch.backends.cpu.get_cpu_capability()} here), {proc['threads']} "
          f"torch threads, {os.cpu_count()} CPUs; {args.sft_steps} warm-up steps, {args.rollouts} rollouts, "
          f"{args.greedy} greedy explanations; {args.repeats} run(s) per tree, "
          f"{'at the same time' if args.parallel else 'alternating'}, medians; "
          f"1-min load average at the runs' starts {min(loads):.1f}-{max(loads):.1f}\n")
    print(table(results, tuple(trees)))
    rates = "; ".join(f"{n} {args.greedy / statistics.median(r['greedy explanations']['s'] for r in runs):.3f}"
                      for n, runs in results.items())
    print(f"\ngreedy explanations per second at batch {args.greedy}: {rates}")


if __name__ == "__main__":
    main()
