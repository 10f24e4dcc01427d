"""The explanation writer on real NYC samples with the tiny LLM: a text the store or the disk cache holds is
not generated again, cache keys name the very prompt, and a refresh stores every refreshed sample."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from joint_parts import joint_parts
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.explainer.prompts import build_prompt
from recpie.explainer.writer import ExplanationWriter

pytestmark = pytest.mark.slow


def test_cached_explanations_are_not_generated_again(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    writer, _, host = joint_parts(tmp_path, nyc_data, tiny_llm_dir)
    generated, generate = [], writer.explainer.generate

    def counting(prompts, *args, **kwargs):
        generated.append(len(prompts))
        return generate(prompts, *args, **kwargs)

    writer.explainer.generate = counting
    ids = torch.tensor([3, 7, 11])
    batch = writer.batch("test", ids)
    _, candidates = writer.explain("test", ids, batch, version=1)
    texts = dict(writer.store.texts["test"])
    assert generated == [3] and sorted(texts) == [3, 7, 11]
    writer.explain("test", ids, batch, version=1)  # the store holds them
    restarted = ExplanationWriter(writer.cfg, nyc_data, writer.recommender, writer.explainer, "test-run", host)
    restarted.explain("test", ids, batch, version=1)  # an empty store: the disk cache holds them
    assert generated == [3] and restarted.store.texts["test"] == texts
    restarted.explain("test", ids, batch, version=2)  # a new policy writes anew
    assert generated == [3, 3]
    weights = writer.explainer.trainable_state_dict()  # other weights at the same version: another code's run
    writer.explainer.load_trainable_state_dict({k: v + 0.01 for k, v in weights.items()})
    ExplanationWriter(writer.cfg, nyc_data, writer.recommender, writer.explainer, "test-run", host).explain(
        "test", ids, batch, version=2)
    assert generated == [3, 3, 3]
    keys = [json.loads(line)["key"] for line in open(tmp_path / "expl" / "explanations.jsonl")]
    prompt = build_prompt(nyc_data, "test", 7, candidates[1].tolist(), writer.cfg.explainer)
    # the key: run tag, split, sample, slot, prompt digest, then the policy's and the user state's digests
    assert sum(k.startswith(f"test-run/test/7/0/{hashlib.sha1(prompt.encode()).hexdigest()[:12]}@")
               for k in keys) == 3


def test_a_refresh_stores_encoded_explanations_of_every_refreshed_sample(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    writer, _, host = joint_parts(tmp_path, nyc_data, tiny_llm_dir, **{"recpie.generation_batch": 2})
    ids = torch.tensor([40, 41, 42])
    writer.refresh(ids, version=5)
    store = writer.store
    assert store.version["train"][ids].tolist() == [5, 5, 5]
    assert store.coverage("train") == pytest.approx(3 / len(store.version["train"]))
    texts = [store.texts["train"][i][0] for i in ids.tolist()]
    candidates = torch.tensor([store.candidates["train"][i] for i in ids.tolist()])
    z, present = store.get("train", ids, host.device)
    assert present.all() and len(host.logged["speed/refresh_s"]) == 1
    torch.testing.assert_close(z[:, 0], writer.encode(texts, candidates)[0].half().float())


def test_candidate_granularity_writes_one_prompt_about_each_candidate(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    writer, _, _ = joint_parts(tmp_path, nyc_data, tiny_llm_dir, **{"explainer.granularity": "candidate"})
    candidates = torch.tensor([[5, 9, 2], [1, 2, 3]])
    prompts = writer.prompts("val", torch.tensor([10, 20]), candidates)
    assert writer.slots == 3 and len(set(prompts)) == 6
    assert prompts[1] == build_prompt(nyc_data, "val", 10, [5, 9, 2], writer.cfg.explainer, focus=9)


def test_with_scores_the_prompts_state_them_and_no_text_of_a_prompt_without_them_is_served(
        tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    """explainer.show_scores: the writer's prompts state the recommender's shares of the candidates it stores
    with their logits, and the disk cache, holding texts of the same samples' prompts without scores (same
    run tag, same weights), generates them anew: the key names the very prompt."""
    plain, _, _ = joint_parts(tmp_path, nyc_data, tiny_llm_dir)
    ids = torch.tensor([3, 7])
    batch = plain.batch("test", ids)
    plain.explain("test", ids, batch, version=1)
    writer, _, _ = joint_parts(tmp_path, nyc_data, tiny_llm_dir, **{"explainer.show_scores": "true"})
    generated, generate = [], writer.explainer.generate

    def counting(prompts, *args, **kwargs):
        generated.append(prompts)
        return generate(prompts, *args, **kwargs)

    writer.explainer.generate = counting
    _, candidates = writer.explain("test", ids, batch, version=1)
    assert len(generated) == 1 and all(", recommender " in p.split("Candidates")[1] for p in generated[0])
    _, top, logits = writer.recommender.predict_top(batch)
    assert top.tolist() == candidates.tolist() == [writer.store.candidates["test"][i] for i in (3, 7)]
    assert [writer.store.logits["test"][i] for i in (3, 7)] == logits.tolist()
    prompt = build_prompt(nyc_data, "test", 7, candidates[1].tolist(), writer.cfg.explainer, logits=logits[1].tolist())
    assert generated[0][1] == prompt
    keys = [json.loads(line)["key"] for line in open(tmp_path / "expl" / "explanations.jsonl")]
    assert sum(k.startswith(f"test-run/test/7/0/{hashlib.sha1(prompt.encode()).hexdigest()[:12]}@") for k in keys) == 1
    writer.explain("test", ids, batch, version=1)  # the store holds them, written for these shares
    assert len(generated) == 1
