"""The rl config section loads through omegaconf with the design's defaults and takes overrides; the reward's
keys are checked at load; the named configs run sequence-level PPO."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from recpie.config import load_experiment
from recpie.errors import ConfigError
from recpie.rl import RLConfig, advantage_estimator


def test_structured_defaults_and_overrides():
    cfg = OmegaConf.merge(OmegaConf.structured(RLConfig),
                          OmegaConf.from_dotlist(["estimator=rloo", "kl.adaptive=true", "reward.clip=3"]))
    assert (cfg.cliprange, cfg.cliprange_value, cfg.vf_coef, cfg.gamma, cfg.lam) == (0.2, 0.2, 0.1, 1.0, 0.95)
    assert cfg.kl.init_coef == 0.05 and cfg.kl.adaptive and cfg.reward.clip == 3.0
    assert advantage_estimator(cfg.estimator) is advantage_estimator("rloo")
    with pytest.raises(ValidationError):
        OmegaConf.merge(OmegaConf.structured(RLConfig), {"ppo_epochs": "many"})


@pytest.mark.parametrize("override, words", [
    ("rl.reward.baseline=previous", "rl.reward.baseline"),  # a StrEnum: only other | null
    ("rl.reward.std_floor=-0.1", "rl.reward.std_floor"),
    ("recpie.rollout_prompts=1", "recpie.rollout_prompts"),  # no other sample to compare with
])
def test_the_rewards_keys_are_checked_when_the_config_loads(override, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_experiment("default", [override])


def test_every_named_config_runs_sequence_level_ppo_with_a_budget_that_fits_the_templates():
    for name in ("default", "nyc_recpie", "nyc_recpie_3pct", "nyc_recpie_12pct"):
        cfg = load_experiment(name, [])
        assert (cfg.rl.estimator, cfg.rl.kl_reference, cfg.rl.reward.baseline) == ("rloo", "warmup", "other"), name
        # templated explanations take up to ~85 Gemma tokens (docs/decisions.md): room beyond the longest
        assert cfg.explainer.max_new_tokens >= 112, name
        rows = cfg.recpie.rollout_prompts * cfg.rl.group_size
        assert rows % cfg.rl.minibatch_size == 0, name  # whole minibatches, whole groups
