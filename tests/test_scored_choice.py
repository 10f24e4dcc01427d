"""explainer.choice=scored: the K-way choice is the LLM's likelihood of each candidate's name after the prompt
(the same numbers as scoring the whole text), its warm-up learns a teacher's order, and its texts name the
chosen candidates with reasons the prompt states."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from test_explainer_llm import tiny_cfg
from test_explainer_warmup import counter_top
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.errors import ConfigError
from recpie.explainer.choice import choice_losses, choice_positions, listwise_loss, order_with_first
from recpie.explainer.explainer import Explainer
from recpie.explainer.parse import CHOICE_END, parse
from recpie.explainer.prompts import build_prompt


def _prompts(d, cfg, n: int, k: int):
    rows = np.arange(n) * 7
    tops = counter_top(d, "train", rows, k)
    prompts = [build_prompt(d, "train", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    labels = [[d.catalogue.label(int(p)) for p in c] for c in tops]
    return prompts, labels, tops


def test_choice_scores_are_the_names_likelihood_after_the_prompt(nyc_data, tiny_llm_dir):  # noqa: F811
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=3, num_candidates=3, few_shot=False, temperature=0.7)
    torch.manual_seed(0)
    ex = Explainer(cfg, user_dim=8)
    prompts, labels, _ = _prompts(d, cfg, 4, 3)
    h = torch.randn(4, 8)
    for tokens in (10**6, 1):  # one group, one row per group: the same scores in row order
        ex.cfg.forward_tokens = tokens
        logp = ex.choice_logprobs(prompts, labels, h)
        assert logp.shape == (4, 3)
        torch.testing.assert_close(logp.exp().sum(1), torch.ones(4))
    # each score is log p(" <label>," | prompt) of the one log-prob forward over prompt + that text
    tok = ex.tokenizer
    full = torch.zeros(4, 3)
    for r, (prompt, names) in enumerate(zip(prompts, labels, strict=True)):
        enc = tok([prompt] * 3, return_tensors="pt", add_special_tokens=True)
        conts = [tok(f" {n}{CHOICE_END}", add_special_tokens=False).input_ids for n in names]
        width = max(map(len, conts))
        seq = torch.full((3, width), tok.pad_token_id)
        mask = torch.zeros(3, width, dtype=torch.long)
        for j, c in enumerate(conts):
            seq[j, :len(c)], mask[j, :len(c)] = torch.tensor(c), 1
        out = ex.response_logprobs(torch.cat([enc.input_ids, seq], 1), torch.cat([enc.attention_mask, mask], 1),
                                   mask, h[r].expand(3, -1), reference=False)
        full[r] = out.logprobs.detach().sum(1)
    torch.testing.assert_close(logp, torch.log_softmax(full, 1), atol=1e-4, rtol=1e-4)
    # the soft prompt is read: another user state, other scores
    assert not torch.allclose(ex.choice_logprobs(prompts, labels, h.flip(0)), logp)


def test_listwise_loss_is_the_plackett_luce_likelihood():
    logp = torch.log_softmax(torch.tensor([[2.0, 0.5, -1.0]]), 1)
    s = logp[0].exp()  # an order's probability: pick its items one by one among those left
    p = s[2] / s.sum() * s[0] / (s[0] + s[1])
    torch.testing.assert_close(listwise_loss(logp, torch.tensor([[2, 0, 1]])), -torch.log(p)[None])
    assert listwise_loss(logp, torch.tensor([[0, 1, 2]])) < listwise_loss(logp, torch.tensor([[2, 1, 0]]))


def test_positions_like_the_likeliest_and_dislike_the_least_likely_of_another_label():
    logp = torch.log_softmax(torch.tensor([[0.0, 3.0, -2.0, -5.0], [1.0, 1.0, 0.0, -1.0]]), 1)
    like, dislike = choice_positions(logp, [["A", "B", "C", "B"], ["A", "A", "C", "A"]])
    assert like == [1, 0]  # a tie goes to the better-ranked candidate
    assert dislike == [2, 2]  # row 0: position 3 is least likely but shares "may like"'s label
    assert order_with_first(torch.tensor([[5, 6, 7]]), [7]).tolist() == [[2, 0, 1]]


def test_a_departure_margin_keeps_candidate_1_unless_pi_beats_it_by_more():
    """explainer.depart_margin: "may like" leaves candidate 1 only where log pi(best) - log pi(1) > margin;
    "may not like" is then chosen against the kept "may like"."""
    logp = torch.log(torch.tensor([[0.30, 0.50, 0.15, 0.05], [0.10, 0.80, 0.05, 0.05]]))
    labels = [["A", "B", "C", "D"], ["A", "B", "C", "A"]]
    assert choice_positions(logp, labels, 0.0) == ([1, 1], [3, 3])  # row 1: a tie goes to the worse-ranked
    gaps = [row[1] - row[0] for row in logp.tolist()]  # log(5/3) = 0.51, log 8 = 2.08
    assert choice_positions(logp, labels, 1.0) == ([0, 1], [3, 3])
    assert choice_positions(logp, labels, gaps[1]) == ([0, 0], [3, 2])  # not more than the margin: stays;
    # row 1's "may not like" then avoids candidate 4, which shares candidate 1's label
    assert choice_positions(logp, labels, gaps[0] - 1e-3)[0] == [1, 1]


def test_the_writer_applies_the_departure_margin(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    """The greedy texts of a readout choice name candidate 1 under a margin no log pi gap reaches, and pi's
    argmax without one (the head given weights, so that pi is not uniform)."""
    from joint_parts import joint_parts

    over = {"explainer.choice": "readout", "explainer.encoder": "verdict"}
    likes = {}
    for margin in (0.0, 1e6):
        writer, _, _ = joint_parts(tmp_path / str(margin), nyc_data, tiny_llm_dir,
                                   **{**over, "explainer.depart_margin": margin})
        torch.manual_seed(1)
        with torch.no_grad():
            for p in writer.explainer.choice_head.parameters():
                p.normal_(0, 1.0)
        ids = torch.arange(12)
        h, candidates, logits = writer.recommender.predict_top(writer.batch("test", ids))
        rows = [(int(i), c, z) for i, c, z in zip(ids.tolist(), candidates.tolist(), logits.tolist(), strict=True)]
        texts = writer.chosen_texts("test", rows, writer.prompts("test", ids, candidates, logits), h)
        labels = writer.labels(candidates)
        likes[margin] = [next(j for j, name in enumerate(labels[r]) if parse(t).like.startswith(name + CHOICE_END))
                         for r, t in enumerate(texts)]
    assert any(j != 0 for j in likes[0.0])  # pi departs somewhere without a margin
    assert likes[1e6] == [0] * 12


def test_a_readout_score_reads_its_line_and_what_came_before_it(nyc_data, tiny_llm_dir):  # noqa: F811
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=3, num_candidates=3, few_shot=False, choice="readout")
    torch.manual_seed(0)
    ex = Explainer(cfg, user_dim=8)
    assert ex.choice_head is not None and any(p is ex.choice_head.weight for p in ex.trainable_parameters())
    assert "choice_head.weight" in ex.trainable_state_dict()
    torch.nn.init.normal_(ex.choice_head.weight)  # zero at the start: every candidate alike
    prompts, labels, _ = _prompts(d, cfg, 4, 3)
    h = torch.randn(4, 8)
    got = {tokens: ex.choice_logprobs(prompts, labels, h) for tokens in (10**6, 1) if not setattr(
        ex.cfg, "forward_tokens", tokens)}
    torch.testing.assert_close(got[1], got[10**6], atol=1e-4, rtol=1e-4)  # padding and grouping do not matter
    # the last line rewritten: the first two lines' scores stay (the model reads left to right), the third moves
    changed = [p.replace(p.split("\n")[-2], p.split("\n")[-2].replace(" km", " km, closed")) for p in prompts]
    after = ex.choice_logprobs(changed, labels, h)
    before = got[1]
    torch.testing.assert_close(after[:, 1] - after[:, 0], before[:, 1] - before[:, 0], atol=1e-4, rtol=1e-4)
    assert ((after[:, 2] - after[:, 0]) - (before[:, 2] - before[:, 0])).abs().min() > 1e-4


def test_a_readout_of_other_layers_reads_them_at_the_line_end(nyc_data, tiny_llm_dir):  # noqa: F811
    """explainer.readout_layers: the head reads the named hidden states, concatenated, each through the final
    norm. Layer 0 (the embeddings) holds a line's last token alone: rewriting the line before it leaves the
    score; a readout of layer 1 alone (a forward that stops there) reads what [1, -1] reads of layer 1 (the
    whole forward); with the head's weight on the last part only, [1, -1] scores as [-1]; an index past the
    LLM's depth is refused."""
    cfg = tiny_cfg(tiny_llm_dir, history_len=3, num_candidates=3, few_shot=False, choice="readout")
    prompts, labels, _ = _prompts(nyc_data, cfg, 4, 3)
    h = torch.randn(4, 8)

    def explainer(layers, weight=None):
        torch.manual_seed(0)
        ex = Explainer(tiny_cfg(tiny_llm_dir, history_len=3, num_candidates=3, few_shot=False, choice="readout",
                                readout_layers=layers), user_dim=8)
        if weight is not None:
            with torch.no_grad():
                ex.choice_head.weight.copy_(weight)
        return ex

    def scores(ex, texts=prompts):
        return ex.choice_logprobs(texts, labels, h)

    d = explainer([-1]).hidden_size
    w, zero = torch.randn(1, d), torch.zeros(1, d)
    last, embeddings, first = explainer([-1], w), explainer([0], w), explainer([1], w)
    assert explainer([1, -1]).readout_layers == (1, -1) and explainer([1, -1]).choice_head.weight.shape == (1, 2 * d)
    torch.testing.assert_close(scores(explainer([1, -1], torch.cat([zero, w], 1))), scores(last))
    torch.testing.assert_close(scores(explainer([1, -1], torch.cat([w, zero], 1))), scores(first))
    assert (scores(first) - scores(last)).abs().max() > 1e-3  # layer 1 is not the last layer's reading
    # the last candidate line's distance rewritten, its last token kept: the embedding reading does not move
    changed = [p.replace(p.split("\n")[-2], p.split("\n")[-2].replace(" km", "9 km", 1)) for p in prompts]
    assert changed != prompts
    torch.testing.assert_close(scores(embeddings, changed), scores(embeddings))
    assert (scores(last, changed) - scores(last)).abs().max() > 1e-4
    depth = last.model.config.num_hidden_layers
    assert explainer([depth]).readout_layers == (-1,)  # the last hidden state, however named
    with pytest.raises(ConfigError, match=r"explainer.readout_layers=\[99\]"):
        explainer([99])
    with pytest.raises(ConfigError, match="twice"):
        explainer([depth, -1])
    from recpie.explainer.explainer import readout_layers
    with pytest.raises(ConfigError, match="no `layers` and `norm`"):  # a decoder it cannot cut: only [-1]
        readout_layers([1], last.model.config, torch.nn.Linear(2, 2))
    assert readout_layers([-1], last.model.config, torch.nn.Linear(2, 2)) == (-1,)


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["scored", "readout"])
def test_the_warmup_learns_a_teachers_order_and_texts_name_its_choice(nyc_data, tiny_llm_dir, choice):  # noqa: F811
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=3, num_candidates=3, few_shot=False, choice=choice)
    torch.manual_seed(0)
    ex = Explainer(cfg, user_dim=8)
    prompts, labels, tops = _prompts(d, cfg, 6, 3)
    # a teacher that likes the last candidate and dislikes the first: the opposite of the recommender's order
    order = torch.tensor([[2, 1, 0]] * 6)
    h = torch.randn(6, 8)
    opt = torch.optim.AdamW(ex.trainable_parameters(), lr=1e-2)
    before = ex.choice_logprobs(prompts, labels, h)
    for _ in range(25):
        opt.zero_grad()
        for loss in choice_losses(ex, prompts, labels, order, h):
            loss.backward()
        opt.step()
    after = ex.choice_logprobs(prompts, labels, h)
    assert listwise_loss(after, order).mean() < 0.5 * listwise_loss(before, order).mean()
    like, dislike = choice_positions(after, labels)
    distinct = [r for r, names in enumerate(labels) if len(set(names)) == 3]
    assert distinct and all(like[r] == 2 and dislike[r] == 0 for r in distinct)
    # the text names them, parses, and gives the template's reasons
    from recpie.explainer.warmup import templated_choice
    for r in distinct:
        text = templated_choice(d, "train", int(np.arange(6)[r] * 7), tops[r], cfg, like=int(tops[r][like[r]]),
                                dislike=int(tops[r][dislike[r]])).text
        p = parse(text)
        assert p.ok and p.like.startswith(labels[r][2] + CHOICE_END) and p.dislike.startswith(labels[r][0])


@pytest.mark.slow
def test_a_readout_run_warms_up_writes_cached_choices_and_never_decodes(tmp_path, nyc_data, tiny_llm_dir,  # noqa: F811
                                                                      monkeypatch):
    from test_recpie_module import small_cfg

    from recpie.components.backbone import Backbone
    from recpie.recipes.recpie import fit_variant
    from recpie.utils.seeds import subset_ids

    over = {"explainer.choice": "readout", "explainer.encoder": "verdict", "explainer.show_scores": True,
            "recpie.sft_target": "facts", "recpie.ppo_iterations": 0, "recpie.cycles": 1, "recpie.sft_steps": 3,
            "recpie.sft_eval_every": 3, "recpie.sft_eval_samples": 8}
    cfg = small_cfg(tmp_path, tiny_llm_dir, **over)
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, nyc_data, cfg.data.max_len)
    eval_ids = {s: subset_ids(len(nyc_data.splits[s]), 8, cfg.recpie.subset_seed) for s in ("val", "test")}

    def no_decoding(*args, **kwargs):
        raise AssertionError("a scored choice never decodes")

    monkeypatch.setattr(Explainer, "generate", no_decoding)
    out = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path / "run", "recpie", seed=0)
    texts = [out["texts"][i][0] for i in eval_ids["test"].tolist()]
    assert len(texts) == 8 and all(parse(t).ok for t in texts)
    curve = out["module"].explainer_trainer.curve
    assert [p["examples"] for p in curve] == [6] and curve[0]["parse_rate"] == 1.0
    # each test text names the explainer's own choice among the candidates its prompt showed
    writer = out["module"].writer
    ex = out["module"].explainer
    ids = torch.as_tensor(eval_ids["test"])
    h, candidates, logits = writer.recommender.predict_top(writer.batch("test", ids))
    labels = writer.labels(candidates)
    like, _ = choice_positions(ex.choice_logprobs(writer.prompts("test", ids, candidates, logits), labels, h), labels)
    assert all(parse(t).like.startswith(labels[r][like[r]] + CHOICE_END) for r, t in enumerate(texts))
    # the same run again reads every text from the cache, the same texts
    again = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path / "again", "recpie", seed=0)
    assert [again["texts"][i][0] for i in eval_ids["test"].tolist()] == texts

    with pytest.raises(ConfigError, match="explainer.choice=readout .*granularity=user"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "explainer.granularity": "candidate",
                                             "explainer.encoder": "llm", "recpie.sft_target": "template",
                                             "recpie.sft_eval_every": 0})
    with pytest.raises(ConfigError, match="rl.estimator=gae with explainer.choice=readout"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "recpie.ppo_iterations": 1, "rl.estimator": "gae"})
    with pytest.raises(ConfigError, match=r"explainer.readout_layers=\[12\] is read only by the readout"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "explainer.choice": "scored", "explainer.readout_layers": "[12]"})
    with pytest.raises(ConfigError, match="explainer.depart_margin=0.5 is a margin in the K-way choice"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "explainer.choice": "generated", "explainer.depart_margin": 0.5,
                                             "recpie.sft_eval_every": 0})
    with pytest.raises(ConfigError, match="rl.estimator=expected .* explainer.choice=scored or readout"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "explainer.choice": "generated", "recpie.ppo_iterations": 1,
                                             "rl.estimator": "expected"})
    with pytest.raises(ConfigError, match=r"rl.trainable=head .* explainer.choice=readout \(it is scored\)"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "explainer.choice": "scored", "recpie.ppo_iterations": 1,
                                             "rl.estimator": "expected", "rl.trainable": "head"})
    with pytest.raises(ConfigError, match=r"rl.trainable=head .* rl.estimator=expected \(it is rloo\)"):
        small_cfg(tmp_path, tiny_llm_dir, **{**over, "recpie.ppo_iterations": 1, "rl.trainable": "head"})


def _paid_for_the_last(tmp_path, nyc_data, llm_dir, monkeypatch, **over):
    """A warmed-up readout trainer whose reward pays for the last of the K candidates' "may like" share (the
    reward's calls kept in ``seen``), its optimizer, and the first PPO iteration's prompts (the same draw):
    (trainer, opt, seen, batch, (prompts, labels, h, candidates))."""
    from joint_parts import joint_parts

    import recpie.rl.explainer_trainer as trainer_module
    from recpie.rl.reward import ExplanationReward

    writer, trainer, host = joint_parts(tmp_path, nyc_data, llm_dir, **{
        "explainer.choice": "readout", "explainer.encoder": "verdict", "recpie.ppo_iterations": 1,
        "recpie.rollout_prompts": 4, "rl.ppo_epochs": 2, "recpie.llm_lr": 0.05, **over})
    k = writer.cfg.explainer.num_candidates
    seen = {}

    def last_liked(recommender, batch, h, candidates, rows, slot, z, present, other, metric="log_likelihood"):
        seen["rows"], seen["z"] = rows.clone(), z.clone()
        own = z.view(len(z), k, 2)[:, -1, 0]  # the "may like" share of the last candidate
        return ExplanationReward(own, torch.zeros_like(own), torch.zeros_like(own))

    monkeypatch.setattr(trainer_module, "explanation_reward", last_liked)
    opt = torch.optim.AdamW(trainer.explainer.trainable_parameters(), lr=0.05)
    trainer.prepare(opt)
    ids = trainer.draw_train_ids(4, "ppo0")  # the prompts of the first iteration (the same draw)
    batch = writer.batch("train", ids)
    h, candidates, logits = writer.recommender.predict_top(batch)
    return trainer, opt, seen, batch, (writer.prompts("train", ids, candidates, logits), writer.labels(candidates),
                                       h, candidates)


@pytest.mark.slow
def test_ppo_on_a_k_way_choice_moves_pi_toward_the_rewarded_candidate(tmp_path, nyc_data, tiny_llm_dir,  # noqa: F811
                                                                     monkeypatch):
    """The rollout samples "may like" positions from pi, the texts are their templates, and PPO (RLOO over
    each prompt's group) raises pi of the candidate the reward pays for: here the last of the K."""
    trainer, opt, _, _, (prompts, labels, h, _) = _paid_for_the_last(
        tmp_path, nyc_data, tiny_llm_dir, monkeypatch, **{"rl.group_size": 4, "rl.minibatch_size": 8})
    before = trainer.explainer.choice_logprobs(prompts, labels, h)[:, -1].exp()
    stats = [trainer.ppo_iteration(opt, 0) for _ in range(3)]
    after = trainer.explainer.choice_logprobs(prompts, labels, h)[:, -1].exp()
    assert after.mean() > before.mean() + 0.1
    assert all(s["reward/parse_rate"] == 1.0 and s["reward/eos_rate"] == 1.0 for s in stats)
    assert 0.0 <= stats[0]["reward/positive_share"] <= 1.0 and np.isfinite(stats[-1]["ppo/kl_k1_per_seq"])
    roll = trainer.choice_rollout
    assert len(roll.texts) == 16 and roll.prompt_rows.tolist() == [r for r in range(4) for _ in range(4)]
    assert all(parse(t).like.startswith(roll.labels[r][a] + CHOICE_END)
               for t, r, a in zip(roll.texts, roll.prompt_rows.tolist(), roll.actions.tolist(), strict=True))


@pytest.mark.slow
def test_the_expected_reward_over_all_k_choices_moves_pi_without_a_draw(tmp_path, nyc_data, tiny_llm_dir,  # noqa: F811
                                                                       monkeypatch):
    """rl.estimator=expected: every one of a prompt's K choices is written and rewarded (here: the reward pays
    for the last candidate), pi moves toward it, and the stats are expectations under pi (the hit rate of a
    candidate list is pi's mass on the target). PPO steps at rl.lr, the warm-up's at recpie.llm_lr (here
    500x smaller: pi would not move 0.1 at it)."""
    trainer, opt, seen, batch, (prompts, labels, h, candidates) = _paid_for_the_last(
        tmp_path, nyc_data, tiny_llm_dir, monkeypatch, **{"rl.estimator": "expected", "rl.lr": 0.05,
                                                           "recpie.llm_lr": 1e-4})
    assert {group["lr"] for group in opt.param_groups} == {1e-4}  # the warm-up's steps
    k = candidates.shape[1]
    pi = trainer.explainer.choice_logprobs(prompts, labels, h).exp()
    first = trainer.ppo_iteration(opt, 0)
    # every (prompt, choice) pair once, prompt-major: choice j's text likes candidate j
    assert seen["rows"].tolist() == [r for r in range(4) for _ in range(k)]
    liked = seen["z"].view(4, k, k, 2)[..., 0]
    assert torch.equal(liked.argmax(-1), torch.arange(k).expand(4, k))
    own = liked[..., -1]  # what the fake reward paid for each (prompt, choice)
    assert first["reward/raw_mean"] == pytest.approx(float((pi * own).sum(-1).mean()), abs=1e-5)
    target = trainer.recommender.target(batch)
    hit = (pi * (candidates == target[:, None]).float()).sum(-1).mean()
    assert first["reward/like_hit_rate"] == pytest.approx(float(hit), abs=1e-5)
    for _ in range(2):
        trainer.ppo_iteration(opt, 0)
    after = trainer.explainer.choice_logprobs(prompts, labels, h)[:, -1].exp()
    assert after.mean() > pi[:, -1].mean() + 0.1 and trainer.policy_version == 4  # warm-up, then 3 iterations
    assert {group["lr"] for group in opt.param_groups} == {0.05}


@pytest.mark.slow
def test_the_expected_update_is_the_same_one_group_of_prompts_at_a_time(tmp_path, nyc_data, tiny_llm_dir,  # noqa: F811
                                                                         monkeypatch):
    """rl.estimator=expected backpropagates its loss one group of prompts at a time (explainer.forward_tokens),
    so only one group's graph lives: the step is the same as with every prompt in one forward (plain SGD, no
    clipping: the step is the gradient, its scale included)."""
    import copy

    trainer, _, _, _, _ = _paid_for_the_last(tmp_path, nyc_data, tiny_llm_dir, monkeypatch,
                                             **{"rl.estimator": "expected", "rl.ppo_epochs": 1,
                                                "recpie.grad_clip": 0.0})
    opt = torch.optim.SGD(trainer.explainer.trainable_parameters(), lr=1.0)
    start = (trainer.explainer.trainable_state_dict(), copy.deepcopy(opt.state_dict()),
             copy.deepcopy(trainer.moments))
    after = {}
    for tokens in (10**6, 1):  # every prompt in one group; one prompt a group
        trainer.explainer.load_trainable_state_dict(start[0])
        opt.load_state_dict(copy.deepcopy(start[1]))
        trainer.moments = copy.deepcopy(start[2])
        trainer.cfg.explainer.forward_tokens = tokens
        trainer.ppo_iteration(opt, 0)
        after[tokens] = trainer.explainer.trainable_state_dict()
    moved = [name for name in start[0] if not torch.equal(after[1][name], start[0][name])]
    assert moved
    for name in start[0]:
        torch.testing.assert_close(after[1][name], after[10**6][name], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_ppo_of_the_head_alone_steps_the_head_as_the_whole_update_does(tmp_path, nyc_data, tiny_llm_dir,  # noqa: F811
                                                                        monkeypatch):
    """rl.trainable=head reads each prompt's line states once and steps the readout choice's head alone: its
    step is the head's part of the whole update's (same objective, same point; plain SGD, no clipping), while
    LoRA and the soft prompt stay where the warm-up left them. The gain over the reference is 0 before the
    first step (pi_old is the warm-up's) and above 0 once pi has moved toward the paid-for candidate."""
    import copy

    from recpie.rl.config import Trainable

    trainer, _, _, _, (prompts, labels, h, _) = _paid_for_the_last(
        tmp_path, nyc_data, tiny_llm_dir, monkeypatch, **{"rl.estimator": "expected", "rl.ppo_epochs": 1,
                                                           "recpie.grad_clip": 0.0})
    opt = torch.optim.SGD(trainer.explainer.trainable_parameters(), lr=1.0)
    start = (trainer.explainer.trainable_state_dict(), copy.deepcopy(opt.state_dict()),
             copy.deepcopy(trainer.moments))
    after, stats = {}, {}
    for trainable in ("all", "head"):
        trainer.explainer.load_trainable_state_dict(start[0])
        opt.load_state_dict(copy.deepcopy(start[1]))
        trainer.moments = copy.deepcopy(start[2])
        trainer.cfg.rl.trainable = Trainable(trainable)
        stats[trainable] = trainer.ppo_iteration(opt, 0)
        after[trainable] = trainer.explainer.trainable_state_dict()
    head = [name for name in start[0] if name.startswith("choice_head.")]
    # the weight moves; the bias has no gradient (it shifts all K alike)
    assert not torch.equal(after["head"]["choice_head.weight"], start[0]["choice_head.weight"])
    for name in head:
        torch.testing.assert_close(after["head"][name], after["all"][name], atol=1e-6, rtol=1e-5)
    frozen = [name for name in start[0] if name not in head]
    assert all(torch.equal(after["head"][name], start[0][name]) for name in frozen)
    assert any(not torch.equal(after["all"][name], start[0][name]) for name in frozen)
    for trainable in ("all", "head"):  # the same prompts, the same pi_old, the same stats
        assert stats[trainable]["reward/gain_over_reference"] == pytest.approx(0.0, abs=1e-6)
    assert stats["head"]["reward/raw_mean"] == pytest.approx(stats["all"]["reward/raw_mean"], abs=1e-5)
    opt = torch.optim.Adam(trainer.explainer.trainable_parameters(), lr=0.05)
    before = trainer.explainer.choice_logprobs(prompts, labels, h)[:, -1].exp()
    for _ in range(3):
        trainer.ppo_iteration(opt, 0)
    assert trainer.ppo_iteration(opt, 0)["reward/gain_over_reference"] > 0.01
    assert trainer.explainer.choice_logprobs(prompts, labels, h)[:, -1].exp().mean() > before.mean() + 0.1
    assert all(torch.equal(trainer.explainer.trainable_state_dict()[name], start[0][name]) for name in frozen)



@pytest.mark.slow
def test_a_run_starts_from_another_runs_warm_up(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    """recpie.warmup_checkpoint: the explainer takes the weights another run had right after its warm-up (its
    checkpoint's KL reference) and that run's warm-up curve, runs no warm-up step, and refuses a checkpoint
    without such weights or of another data draw, naming the key."""
    import json

    from joint_parts import joint_parts

    from recpie.data.fraction import supervision_draw
    from recpie.errors import CheckpointError
    from recpie.utils.checkpoints import DRAW_KEY

    over = {"explainer.choice": "readout", "explainer.encoder": "verdict", "recpie.sft_eval_every": 1,
            "recpie.sft_eval_samples": 4}
    _, first, _ = joint_parts(tmp_path / "a", nyc_data, tiny_llm_dir, **over)
    first.prepare(torch.optim.AdamW(first.explainer.trainable_parameters(), lr=0.05))
    assert first.curve and first.reference_weights is not None
    path = tmp_path / "last.ckpt"
    torch.save({"recpie": first.state_dict(), DRAW_KEY: supervision_draw(nyc_data)}, path)
    _, second, _ = joint_parts(tmp_path / "b", nyc_data, tiny_llm_dir,
                               **{**over, "recpie.warmup_checkpoint": str(path)})
    second.format_warmup = None  # never called: calling it would raise
    second.prepare(torch.optim.AdamW(second.explainer.trainable_parameters(), lr=0.05))
    weights = second.explainer.trainable_state_dict()
    assert weights.keys() == first.reference_weights.keys()
    assert all(torch.equal(weights[k], first.reference_weights[k]) for k in weights)
    assert json.dumps(second.curve) == json.dumps(first.curve)  # (a nan is not equal to itself)
    assert second.sft_done and second.policy_version == first.policy_version
    for state, why in (({"recpie": {**first.state_dict(), "reference_weights": None},
                         DRAW_KEY: supervision_draw(nyc_data)}, "holds no post-warm-up explainer weights"),
                       ({"recpie": first.state_dict(), DRAW_KEY: {**supervision_draw(nyc_data), "fraction": 0.5}},
                        "was trained on")):
        torch.save(state, path)
        _, third, _ = joint_parts(tmp_path / "c", nyc_data, tiny_llm_dir,
                                  **{**over, "recpie.warmup_checkpoint": str(path)})
        with pytest.raises(CheckpointError, match=f"recpie.warmup_checkpoint.*{why}"):
            third.prepare(torch.optim.AdamW(third.explainer.trainable_parameters(), lr=0.05))
