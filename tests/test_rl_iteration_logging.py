"""Each PPO iteration's reward summary is its own TensorBoard point (the cycle's scalars average them)."""
from __future__ import annotations

from types import SimpleNamespace

from recpie.models.recpie_module import ITERATION_SCALARS, RecPIEModule


def test_each_ppo_iteration_logs_its_reward_summary_at_its_policy_version():
    logged = []
    module = SimpleNamespace(logger=SimpleNamespace(log_metrics=lambda metrics, step: logged.append((metrics, step))),
                             policy_version=3)
    stats = {key: float(i) for i, key in enumerate(ITERATION_SCALARS)} | {"ppo/clipfrac": 0.5}
    RecPIEModule.log_ppo_iteration(module, stats)
    assert logged == [({f"ppo_iteration/{name}": float(i) for i, name in enumerate(ITERATION_SCALARS.values())}, 3)]
    wanted = {"reward/raw_mean", "reward/raw_std", "reward/positive_share", "reward/content", "reward/eos_rate",
              "reward/like_hit_rate"}  # issue 24: mean, spread, share > 0, content part, EOS rate, hit rate
    assert wanted <= set(ITERATION_SCALARS)
    RecPIEModule.log_ppo_iteration(SimpleNamespace(logger=None, policy_version=4), stats)  # no logger: nothing
