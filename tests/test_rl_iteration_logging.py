"""The module's side of PPO: each iteration's reward summary is its own TensorBoard point (the cycle's scalars
average them), and PPO runs against a fitted fusion, never the identity."""
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


def turn(events: list[str], ppo_iterations: int, fitted: bool, fits: list) -> None:
    """RecPIEModule.explainer_turn on a double that records what it is asked to do, in order."""
    trainer = SimpleNamespace(prepare=lambda opt: events.append("warm-up"),
                              ppo_iteration=lambda opt, k: events.append(f"ppo {k}") or {})
    module = SimpleNamespace(
        _optimizers=lambda: [None, None], explainer_trainer=trainer, rc=SimpleNamespace(ppo_iterations=ppo_iterations),
        recommender=SimpleNamespace(fitted=fitted), fusion_fits=fits, current_epoch=0, global_rank=0,
        device=SimpleNamespace(type="cpu"),
        refresh_train=lambda: events.append("refresh"), fit_fusion=lambda: (events.append("fit"), fits.append({})),
        log_dict=lambda *a, **k: None, log_ppo_iteration=lambda stats: None)
    RecPIEModule.explainer_turn(module)


def test_ppo_runs_against_a_fitted_fusion_never_the_identity():
    events, fits = [], []
    turn(events, 2, fitted=True, fits=fits)  # first cycle: explain, fit, then PPO, then explain afresh
    assert events == ["warm-up", "refresh", "fit", "ppo 0", "ppo 1", "refresh"]
    events.clear()
    turn(events, 2, fitted=True, fits=fits)  # later cycles: the fit of the previous cycle's explanations
    assert events == ["warm-up", "ppo 0", "ppo 1", "refresh"]
    for ppo_iterations, fitted in ((0, True), (2, False)):  # the frozen explainer; a gradient-trained head
        events.clear()
        turn(events, ppo_iterations, fitted=fitted, fits=[])
        assert events == ["warm-up"] + [f"ppo {k}" for k in range(ppo_iterations)] + ["refresh"]
