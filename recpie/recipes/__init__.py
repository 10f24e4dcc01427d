"""One readable file per recipe; ``run(cfg, run_dir)`` is each one's entry point (see recpie/cli/run.py)."""
