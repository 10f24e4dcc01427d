"""The ``recpie`` config section: how the recommender and the explainer are trained together."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# what the format warm-up's target explanation says (see sft_target below)
SFTTarget = StrEnum("SFTTarget", ["template", "hindsight", "facts"])
TestCheckpoint = StrEnum("TestCheckpoint", ["best", "last"])  # which checkpoint the final test scores
FusionFitSplit = StrEnum("FusionFitSplit", ["train", "val"])  # whose explanations the verdict fusion is fitted on
RolloutRows = StrEnum("RolloutRows", ["all", "trajectory_end"])  # the train samples PPO's prompts are drawn from


@dataclass
class RecPIEConfig:
    # a trained backbone checkpoint (.ckpt of the baselines recipe) to start from; "" = warm it up first
    backbone_checkpoint: str = ""
    # joint cycles; one cycle = K PPO iterations, an explanation refresh, the fusion's fit, then M recommender steps
    cycles: int = 20
    # M: recommender steps per cycle (sample batches of protocol train targets, explanation-fused)
    rec_steps_per_cycle: int = 50
    # K: PPO iterations per cycle, each on fresh rollouts (0 = frozen explainer: the no-RL ablation). A fitted
    # fusion (the verdict re-ranker) is fitted before the first one; a gradient-trained head starts as the
    # identity, so there the first cycle's reward is only the EOS/parse penalties and the KL: without that
    # iteration the demo's cycle-1 rollouts parsed 0% and its greedy test explanations 29% (52% with it)
    ppo_iterations: int = 1
    # prompts per PPO rollout (grpo/rloo: each sampled rl.group_size times); >= 2, since each sample's
    # explanation is compared with another sample's (rl.reward.baseline)
    rollout_prompts: int = 8
    # the train samples PPO draws its prompts from: "all" explainable ones (every next step of a trajectory)
    # or "trajectory_end" (the last check-in of a trajectory, as every val and test sample is). At 3% of the
    # NYC targets (seed 0) the facts teacher's relay is worth +0.0049 MRR on all train samples, +0.0196 on
    # the 417 that end a trajectory, +0.0137 on test (docs/results.md): a reward on the first cannot tell the
    # departures that pay on test
    rollout_rows: RolloutRows = RolloutRows.all
    # train samples that get a new greedy explanation per cycle; the rest keep their cached one or null
    refresh_budget: int = 64
    # probability that a training sample's explanation is replaced by the null one
    null_dropout: float = 0.2
    # share of the recommender's rows per cycle drawn from the train samples refreshed so far (explained
    # ones; the control draws the same rows with null explanations); the rest is a plain pass over the
    # train samples. 0: the fusion sees explanations only as often as the refresh budget covers train
    # samples, while every val/test sample is explained (docs/decisions.md)
    explained_share: float = 0.5
    # at most this many rows per refreshed sample per cycle (caps explained_share while the pool is small:
    # a small pool drawn many times over-fits the control too; docs/decisions.md)
    explained_draws: float = 4.0
    # False: the control run, same steps with the null explanation everywhere ("its own backbone")
    use_explanations: bool = True
    # supervised format warm-up of LoRA + soft prompt on templated explanations before the cycles
    sft_steps: int = 30
    # a RecPIE run's checkpoint (its checkpoints/recpie-seed<s>/last.ckpt) whose explainer weights right after
    # its warm-up (kept there as the KL reference, rl.kl_reference=warmup) this run starts from instead of
    # warming up: PPO variants of one frozen twin without its warm-up's CPU time. The same explainer, prompts,
    # backbone and seed are the caller's to keep (the data draw is checked); "" = warm up (sft_steps)
    warmup_checkpoint: str = ""
    # prompts per supervised warm-up step
    sft_batch: int = 8
    # what the warm-up's "may like" names: "template" (the recommender's top candidate; teaches the format
    # and grounding, never reads the target) or "hindsight" (the sample's true next POI, on train samples
    # whose target is among the candidates: the explainer becomes a re-ranker that can disagree with the
    # recommender; why both exist: docs/decisions.md)
    # "facts" (the prompt-only facts reader, fitted on val, orders each warm-up sample's candidates: "may
    # like" names its top-1, "may not like" its lowest, the reasons only what the prompt states; never
    # reads the sample's target; explainer/warmup.py: FactsTeacher)
    sft_target: SFTTarget = SFTTarget.template
    # extra weight of the warm-up loss on the tokens of the candidate names ("may like" and "may not like"
    # choices): each such token counts 1 + this in the token mean (0: the plain token mean, where the
    # choice gets 2-4% of the gradient among ~45 tokens; 4 gives the names about half of it)
    sft_choice_weight: float = 0.0
    # hindsight only: share of the explainable train samples the warm-up reads, held out of the refresh,
    # the rollouts and the fusion's explained rows (an explainer fitted to a sample's answer would hand it
    # to the fusion, which would learn to trust the explanations more than they deserve on val/test)
    sft_share: float = 0.5
    # the warm-up curve: every this many warm-up steps, and after the last one, greedy explanations of
    # recpie.sft_eval_samples val samples by the policy so far (the run's val prompts, explainer.show_scores
    # honoured), parsed and set against the facts teacher's top-1 (warmup.FactsTeacher, fitted on val):
    # parse rate, agreement, the teacher's, "may like"'s and the recommender's top-1 target hit rates per
    # examples seen; to TensorBoard (sft_eval/*), warmup_curve_seed{S}.json/.csv and results.md. 0 = off.
    # Measurement only: the texts never enter the store or the explanation cache, the random state is
    # restored after each point, so what is trained (and tested) is the same as with 0
    sft_eval_every: int = 0
    # val samples of each warm-up curve point: the first of the val subset permutation of subset_seed (those
    # of recpie.val_samples when fewer); each point costs ceil(samples / generation_batch) generate calls
    sft_eval_samples: int = 64
    # initial bias of the fusion gate (negative: explanations start with little say)
    gate_bias: float = -2.0
    # learning rate of the backbone in the joint phase (it is fine-tuned from its warm-up)
    rec_lr: float = 1.0e-4
    # learning rate of the fusion, which starts from scratch (as the identity; docs/decisions.md); the
    # verdict fusion (explainer.encoder=verdict) is fitted in closed form instead (fusion_ridge, fusion_folds)
    fusion_lr: float = 1.0e-4
    # verdict fusion: ridge penalty on its weights in the listwise fit (components/fusion.py: fit_listwise),
    # run on the refreshed train samples before the recommender's steps of every cycle
    fusion_ridge: float = 1.0e-3
    # verdict fusion: cross-fitting folds (by sample id); a row of the fitted split is scored by the weights
    # fitted on the other folds, every other row (test, rollouts, the other split) by those fitted on all rows
    fusion_folds: int = 2
    # verdict fusion: fitted on "train" (the train samples refreshed so far) or "val" (the val samples the run
    # scores, recpie.val_samples, explained before the fit; val MRR stays out-of-fit by the folds). The
    # backbone trained on the train rows, so there its top-1 is right more often than on new samples (3%:
    # 0.286 vs val 0.238) and a train-fitted fusion trusts "may like" less: relaying the prompt-only
    # teacher's choice through it added +0.0214 test MRR against +0.0312 fitted on val (liked bonus +0.44
    # vs +0.95 logits; docs/decisions.md)
    fusion_fit_split: FusionFitSplit = FusionFitSplit.train
    # learning rate of LoRA + soft prompt + value head (PPO and warm-up)
    llm_lr: float = 2.0e-4
    # gradient-norm clip of each optimizer step (0 = off)
    grad_clip: float = 1.0
    # recommender batch size in the joint phase
    batch_size: int = 64
    # explanation batch size of greedy generation (refresh, val, test)
    generation_batch: int = 32
    # val samples scored after each cycle for checkpoint selection (0 = all; a fixed seeded subset)
    val_samples: int = 128
    # which checkpoint the test scores: "best" (val MRR, the default) or "last" (the end of the final
    # cycle; for short runs whose val subset is too small to choose between cycles). Not part of the
    # resume fingerprint: a finished run can be re-tested from the other one by resuming it
    test_checkpoint: TestCheckpoint = TestCheckpoint.best
    # test samples scored at the end (0 = all); the subset is fixed by test_subset_seed and documented
    test_samples: int = 0
    # seed of the val/test subset choice (independent of the training seed)
    subset_seed: int = 1234
    # a finished data_efficiency run folder (e.g. results/nyc_data_efficiency) holding this run's fraction,
    # 1.0 and seeds: results.md then compares RecPIE with its backbones at this fraction and at 100%, the
    # time-aware counter and the facts reader on the same test samples ("" = no comparison; needs all test samples)
    reference_study: str = ""
