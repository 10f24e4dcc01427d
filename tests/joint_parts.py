"""The joint module's collaborators built without Lightning, on real NYC samples and the tiny LLM, with a
host double that records what Lightning would have been asked to do."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from test_recpie_module import small_cfg

from recpie.components.backbone import Backbone
from recpie.components.explained_recommender import ExplainedRecommender
from recpie.explainer.explainer import Explainer
from recpie.explainer.writer import ExplanationWriter
from recpie.models.cycle_sampler import warmup_and_fusion_ids
from recpie.rl.explainer_trainer import ExplainerTrainer


@dataclass
class Host:
    """One process, CPU: backward is loss.backward(), clipping is torch's, logs are kept."""

    device: torch.device = torch.device("cpu")
    global_rank: int = 0
    current_epoch: int = 0
    world_size: int = 1
    logged: dict[str, list] = field(default_factory=dict)
    clipped_to: list[float] = field(default_factory=list)

    def log(self, name, value, **kwargs) -> None:
        self.logged.setdefault(name, []).append(float(value))

    def log_text(self, tag: str, text: str) -> None:
        self.logged.setdefault(tag, []).append(text)

    def log_curve(self, values: dict[str, float], examples: int) -> None:
        self.logged.setdefault("sft_eval", []).append((examples, values))

    def manual_backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_gradients(self, opt, gradient_clip_val: float, gradient_clip_algorithm: str) -> None:
        self.clipped_to.append(gradient_clip_val)
        params = [p for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def gathered(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reduced(self, x: torch.Tensor, op: str) -> torch.Tensor:
        return x


def joint_parts(tmp_path, data, llm_dir, **overrides) -> tuple[ExplanationWriter, ExplainerTrainer, Host]:
    """(writer, trainer, host) of the tiny test config, as RecPIEModule.configure_model builds them."""
    cfg = small_cfg(tmp_path, llm_dir, **overrides)
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    explainer = Explainer(cfg.explainer, backbone.hidden_size, data)
    ec = cfg.explainer
    recommender = ExplainedRecommender.build(backbone, ec.granularity, ec.encoder == "verdict",
                                             explainer.encoding_dim, ec.num_candidates, cfg.recpie.gate_bias)
    host = Host()
    writer = ExplanationWriter(cfg, data, recommender, explainer, "test-run", host)
    sft_ids, explainable = warmup_and_fusion_ids(data, "template", 0.5, 0)
    return writer, ExplainerTrainer(cfg, data, explainer, None, writer, host, sft_ids, explainable, seed=0,
                                    curve_file=tmp_path / "warmup_curve_seed0.json"), host
