"""Issue 26, class 7: a user's mistake is one ``error:`` line through the one boundary (recpie.cli.main), not a
traceback: Lightning's trainer settings, omegaconf interpolations, a run.output_dir that is a file,
``evaluate --out`` at a folder, foreign or crafted checkpoints told apart from cut ones, and ``explain
--adapters`` of another explainer."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)
from tsmc_synthetic import write_tsmc

from recpie.cli import main
from recpie.cli.evaluate import evaluate_main
from recpie.cli.explain import explain_main
from recpie.config import load_experiment
from recpie.config_checks import ACCELERATORS, PRECISIONS, STRATEGIES
from recpie.errors import CheckpointError, ConfigError, InputError, user_error_message
from recpie.utils.checkpoints import load_checkpoint


@pytest.mark.parametrize(("override", "words"), [
    ("trainer.accelerator=foo", "trainer.accelerator='foo' is unknown; use one of auto, cpu, gpu"),
    ("trainer.accelerator=tpu", "needs torch_xla"),  # was a ModuleNotFoundError from Lightning
    ("trainer.precision=64x", "trainer.precision='64x' is unknown"),
    ("trainer.precision=bf16_mixed", "trainer.precision='bf16_mixed' is unknown"),
    ("trainer.devices=0", "trainer.devices='0': use auto, a number of devices"),
    ("trainer.devices=abc", "trainer.devices='abc'"),
    ("trainer.devices=-2", "trainer.devices='-2'"),
    ("trainer.strategy=foo", "trainer.strategy='foo' is not a strategy this project runs"),
    ("trainer.strategy=fsdp", "trainer.strategy='fsdp' is not a strategy this project runs"),
])
def test_bad_trainer_settings_fail_at_load(override, words):
    with pytest.raises(ConfigError) as err:
        load_experiment("nyc_baselines", [override])
    assert words in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU indices are fine where there are GPUs")
@pytest.mark.parametrize("devices", ["0,1", "-1"])
def test_gpu_indices_on_a_cpu_are_refused(devices):
    """Lightning raised a TypeError once the data was read: "devices selected with CPUAccelerator ..."."""
    for accelerator in ("cpu", "auto"):
        with pytest.raises(ConfigError, match="trainer.devices"):
            load_experiment("nyc_baselines", [f"trainer.accelerator={accelerator}", f"trainer.devices={devices}"])


def test_good_trainer_settings_pass_and_the_lists_are_lightnings():
    for overrides in (["trainer.precision=bf16-mixed"], ["trainer.devices=2"], ["trainer.devices=auto"],
                      ["trainer.accelerator=gpu", "trainer.devices=0,2"], ["trainer.strategy=ddp"]):
        load_experiment("nyc_baselines", overrides)
    assert set(ACCELERATORS) - {"auto", "gpu"} == AcceleratorRegistry.available_accelerators()
    assert set(PRECISIONS) == set(_PRECISION_INPUT_STR.__args__) | set(_PRECISION_INPUT_STR_ALIAS.__args__)
    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())


def test_lightnings_misconfiguration_is_one_line():
    with pytest.raises(MisconfigurationException) as caught:
        if torch.cuda.is_available():
            raise MisconfigurationException("stands in for a machine without GPUs")
        L.Trainer(accelerator="gpu", logger=False)  # no GPU backend on this machine
    message = user_error_message(caught.value)
    assert message.startswith("Lightning refused the trainer settings (trainer.accelerator") and "\n" not in message
    assert user_error_message(ValueError("a bug")) is None and user_error_message(KeyError("x")) is None


@pytest.mark.parametrize(("override", "words"), [
    ("data.city=${nonexistent}", "config key data.city: its interpolation ${...} fails: Interpolation key "
                                 "'nonexistent' not found"),
    ("data.max_len=${data.city}", "config key data.max_len: its interpolation"),
    ("data.city=${oc.env:RECPIE_NO_SUCH_VARIABLE}", "Environment variable 'RECPIE_NO_SUCH_VARIABLE' not found"),
    ("data.city=${data.city}", "Recursive interpolation detected"),
    ("eval.topk=${no_resolver:1}", "config key eval.topk: its interpolation ${...} fails: Unsupported"),
])
def test_interpolation_errors_are_one_line_naming_the_key(capsys, monkeypatch, override, words):
    monkeypatch.delenv("RECPIE_DEBUG", raising=False)
    assert main(["run", "nyc_baselines", "--print-config", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_interpolation_error_in_data_stats_and_with_debug(capsys, monkeypatch):
    monkeypatch.delenv("RECPIE_DEBUG", raising=False)
    assert main(["data", "stats", "nyc_baselines", "data.city=${nonexistent}"]) == 2
    assert capsys.readouterr().err == ("error: config key data.city: its interpolation ${...} fails: Interpolation "
                                       "key 'nonexistent' not found\n")
    with pytest.raises(Exception, match="Interpolation key 'nonexistent' not found"):  # the library's traceback
        main(["data", "stats", "nyc_baselines", "data.city=${nonexistent}", "--debug"])


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_output_dir_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch, where):
    monkeypatch.delenv("RECPIE_DEBUG", raising=False)
    root = tmp_path / "root"
    write_tsmc(root / "foursquare_nyc_tsmc2014")
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "results"
    assert main(["run", "nyc_baselines", f"data.data_root={root}", "data.names_file=", "data.use_cache=false",
                 "data.min_poi_checkins=1", "data.min_user_checkins=1", "eval.topk=5", f"run.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run.output_dir" in err and err.count("\n") == 1


def _no_data(experiment: str):
    raise AssertionError("--out must be checked before the data is read and scored")


def test_evaluate_out_at_a_folder_or_under_a_file_fails_before_scoring(tmp_path):
    (tmp_path / "scores.npy").write_bytes(b"")
    (tmp_path / "taken").write_text("a file")
    base = ["--experiment", "nyc_baselines", "--file", str(tmp_path / "scores.npy")]
    with pytest.raises(InputError, match=f"--out {tmp_path} is a folder: give the path of the JSON file"):
        evaluate_main([*base, "--out", str(tmp_path)], load_data=_no_data)
    with pytest.raises(ConfigError, match=r"--out: cannot write to .*taken"):
        evaluate_main([*base, "--out", str(tmp_path / "taken" / "metrics.json")], load_data=_no_data)


def _torch_zip_with(tmp_path: Path, name: str, payload: bytes) -> Path:
    """A checkpoint written by torch.save whose data.pkl is replaced by ``payload`` (a whole zip)."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    out = tmp_path / name
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        for member in src.namelist():
            dst.writestr(member, payload if member.endswith("data.pkl") else src.read(member))
    return out


def _cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    torch.save({"state_dict": {"w": torch.ones(64)}}, tmp_path / "whole.ckpt")
    whole = (tmp_path / "whole.ckpt").read_bytes()
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("notes/readme.txt", "not a checkpoint")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    (tmp_path / "notes.ckpt").write_text("hello, this is text\n")
    np.save(tmp_path / "array.npy", np.arange(4))
    (tmp_path / "cut.ckpt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "tail.ckpt").write_bytes(whole[:-10])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(64)}, legacy, _use_new_zipfile_serialization=False)  # torch's pre-1.6 format
    (tmp_path / "legacy_cut.pt").write_bytes(legacy.read_bytes()[:60])
    return {
        # whole zips that are not torch checkpoints, or whose pickle asks for code: never "truncated"
        "foreign_zip": (tmp_path / "other.zip", r"is not a torch checkpoint \(a zip archive of notes/readme.txt\)"),
        "blocked_module": (_torch_zip_with(tmp_path, "os.ckpt", b"cos\nsystem\n(S'true'\ntR."),
                           "refused to load .*GLOBAL os.system whose module os is blocked"),  # torch 2.13's text
        "protocol_4": (_torch_zip_with(tmp_path, "p4.ckpt", pickle.dumps({"a": 1.5}, protocol=4)),
                       "refused to load .*Unsupported operand 149"),
        "inst_opcode": (_torch_zip_with(tmp_path, "inst.ckpt", b"(S'true'\nios\nsystem\n."), "refused to load"),
        "no_stop": (_torch_zip_with(tmp_path, "nostop.ckpt", b"\x80\x02}q\x00"),  # a whole zip, its pickle cut
                    "is not a torch checkpoint \\(a whole zip archive that torch cannot read: EOFError"),
        "raw_pickle": (tmp_path / "plain.pkl", "is not a torch checkpoint \\(Invalid magic number"),
        "text": (tmp_path / "notes.ckpt", "or not a checkpoint at all"),  # was a KeyError traceback
        "npy": (tmp_path / "array.npy", "or not a checkpoint at all"),
        # cut files: truncated, with the way out
        "half": (tmp_path / "cut.ckpt", "is truncated or corrupt .*disk was full"),
        "tail": (tmp_path / "tail.ckpt", "is truncated or corrupt"),
        "empty": (tmp_path / "empty.ckpt", "is truncated or corrupt"),
        "legacy_cut": (tmp_path / "legacy_cut.pt", "is truncated or corrupt .*disk was full"),
    }


CUT = ["half", "tail", "empty", "legacy_cut"]
CASES = ["foreign_zip", "blocked_module", "protocol_4", "inst_opcode", "no_stop", "raw_pickle", "text", "npy", *CUT]


@pytest.mark.parametrize("case", CASES)
def test_foreign_or_crafted_checkpoints_are_not_called_truncated(tmp_path, case):
    path, words = _cases(tmp_path)[case]
    with pytest.raises(CheckpointError, match=words) as err:
        load_checkpoint(path, "recpie.backbone_checkpoint")
    message = str(err.value)
    assert message.startswith("recpie.backbone_checkpoint: ") and "\n" not in message
    assert ("disk was full" in message) == (case in CUT)
    assert "add_safe_globals" not in message  # torch's advice to allowlist what the file asks for


def test_explain_adapters_of_another_explainer_are_one_line(tmp_path, tiny_llm_dir):  # noqa: F811
    root = tmp_path / "root"
    write_tsmc(root / "foursquare_nyc_tsmc2014")
    base = ["100", "--k", "2", "--max-new-tokens", "2", "--model", str(tiny_llm_dir), "--data-root", str(root)]
    torch.save({"soft.w": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"--adapters: .*other.pt lacks \d+ of the explainer's \d+ tensors"):
        explain_main([*base, "--adapters", str(tmp_path / "other.pt")])
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(InputError, match="holds Tensor, not a dict of tensors"):
        explain_main([*base, "--adapters", str(tmp_path / "tensor.pt")])
    from recpie.explainer.config import ExplainerConfig
    from recpie.explainer.explainer import Explainer

    cfg = ExplainerConfig(model=str(tiny_llm_dir), num_candidates=2, granularity="candidate", soft_tokens=0,
                          max_new_tokens=2, few_shot=False)
    state = Explainer(cfg, user_dim=1).trainable_state_dict()  # what explain builds for these flags
    torch.save(state, tmp_path / "right.pt")
    assert explain_main([*base, "--adapters", str(tmp_path / "right.pt")]) == 0
    name = sorted(state)[0]
    torch.save({**state, name: torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)}, tmp_path / "rank.pt")
    with pytest.raises(InputError, match=rf"--adapters: .*rank.pt: {name} has shape"):  # was a size-mismatch traceback
        explain_main([*base, "--adapters", str(tmp_path / "rank.pt")])


def test_load_llm_refuses_a_misspelt_lora_target_beside_good_ones(tiny_llm_dir):  # noqa: F811
    """The library path (no CLI preflight): peft adapted q_proj and dropped "qproj" without a word."""
    from recpie.explainer.config import ExplainerConfig, LoraSection
    from recpie.explainer.llm import load_llm

    cfg = ExplainerConfig(model=str(tiny_llm_dir), device="cpu", lora=LoraSection(target_modules=["q_proj", "qproj"]))
    with pytest.raises(ConfigError, match=r"explainer.lora.target_modules: \['qproj'\] name no module of"):
        load_llm(cfg)
