"""The rl config section loads through omegaconf with the design's defaults and takes overrides."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from recpie.rl import RLConfig, advantage_estimator


def test_structured_defaults_and_overrides():
    cfg = OmegaConf.merge(OmegaConf.structured(RLConfig),
                          OmegaConf.from_dotlist(["estimator=rloo", "kl.adaptive=true", "reward.clip=3"]))
    assert (cfg.cliprange, cfg.cliprange_value, cfg.vf_coef, cfg.gamma, cfg.lam) == (0.2, 0.2, 0.1, 1.0, 0.95)
    assert cfg.kl.init_coef == 0.05 and cfg.kl.adaptive and cfg.reward.clip == 3.0
    assert advantage_estimator(cfg.estimator) is advantage_estimator("rloo")
    with pytest.raises(ValidationError):
        OmegaConf.merge(OmegaConf.structured(RLConfig), {"ppo_epochs": "many"})
