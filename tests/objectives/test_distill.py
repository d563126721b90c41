"""Distillation: the KL term against a teacher identical to the student is zero and gives no
gradient; a student trains from teacher runs and from local Hugging Face causal LMs from the CLI;
a teacher on another tokenizer is refused."""

import copy
import dataclasses
import json

import pytest
import torch
from helpers import assert_one_line_error, hlm, metric_rows, tiny_flags

from hybridlm.config import TrainConfig
from hybridlm.distill import Distiller
from hybridlm.losses import loss_of
from hybridlm.model import PRESETS, ModelConfig, Transformer
from hybridlm.objectives import build_objective


@pytest.mark.parametrize("objective", ["causal", "masked", "mntp", "diffusion"])
def test_kl_to_an_identical_teacher_is_zero_with_no_gradient(objective):
    torch.manual_seed(0)
    student = Transformer(ModelConfig(vocab_size=300, **{**PRESETS["tiny"], "max_seq_len": 64}))
    obj = build_objective(TrainConfig(objective=objective), 300)
    ids = torch.randint(5, 300, (4, 33), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 1
    batch = obj.corrupt(ids, torch.Generator().manual_seed(2))
    loss, metrics = loss_of(student, obj, batch, teachers=Distiller([copy.deepcopy(student)], 0.0, 2.0))
    assert abs(loss.item()) < 1e-6 and abs(metrics["kl"][0].item()) < 1e-6
    loss.backward()
    assert max(p.grad.abs().max().item() for p in student.parameters() if p.grad is not None) < 1e-6
    # a different teacher: a positive KL with a gradient; alpha = 1 is the plain loss
    other = Transformer(ModelConfig(vocab_size=300, **{**PRESETS["tiny"], "max_seq_len": 64}))
    assert loss_of(student, obj, batch, teachers=Distiller([other], 0.0, 2.0))[0].item() > 1e-4
    plain = loss_of(student, obj, batch)[0]
    assert loss_of(student, obj, batch, teachers=Distiller([other], 1.0, 2.0))[0].item() == pytest.approx(
        plain.item(), rel=1e-6
    )


def test_a_student_distils_from_teacher_runs(runs, data_dir, tmp_path):
    import os
    from pathlib import Path

    relative = os.path.relpath(runs["causal"], tmp_path)  # a teacher named relative to where hlm runs
    hlm(
        "train",
        "--data",
        data_dir,
        "--out",
        tmp_path / "student",
        *tiny_flags(max_steps=4, log_interval=1, eval_interval=4, eval_batches=2),
        "--distill-from",
        relative,
        "--distill-from",
        runs["hybrid"],
        "--distill-alpha",
        0.5,
        cwd=tmp_path,
    )
    saved = json.loads((tmp_path / "student" / "config.json").read_text())["distill_from"]
    assert saved == [str(Path(runs["causal"]).resolve()), str(Path(runs["hybrid"]).resolve())]  # resumes from anywhere
    rows = metric_rows(tmp_path / "student")
    train_rows = [r for r in rows if "loss" in r]
    assert all(r["kl"] > 0 for r in train_rows)
    teacher_params = 2 * 121_152
    assert train_rows[-1]["teacher_flops"] == pytest.approx(4 * 2 * teacher_params * 8 * 32, rel=0.1)
    assert any("val_bpb" in r for r in rows)


def test_a_teacher_on_another_tokenizer_is_refused(cli, runs, tmp_path, corpus):
    from hybridlm.data import prepare
    from hybridlm.tokenizer import train_tokenizer

    train_tokenizer([corpus], vocab_size=400, out_dir=tmp_path / "tok")
    prepare([corpus], tmp_path / "tok", tmp_path / "data", val_fraction=0.05)
    proc = cli(
        "train", "--data", tmp_path / "data", "--out", tmp_path / "s", "--distill-from", runs["causal"], check=False
    )
    assert_one_line_error(proc, "another tokenizer")
    assert not (tmp_path / "s").exists()
    assert_one_line_error(
        cli("train", "--data", tmp_path / "data", "--out", tmp_path / "s", "--distill-from", tmp_path, check=False),
        "neither a hybridlm run nor a Hugging Face model",
    )


def _packed_batch(objective: str, vocab: int):
    """Windows of three packed documents each, corrupted by the objective (document mask on)."""
    from hybridlm.objectives.base import SPECIAL

    ids = torch.randint(5, vocab, (4, 33), generator=torch.Generator().manual_seed(3))
    ids[:, [0, 9, 21]] = SPECIAL["bos"]
    return build_objective(TrainConfig(objective=objective), vocab).corrupt(ids, torch.Generator().manual_seed(4))


@pytest.mark.parametrize("objective", ["causal", "prefix"])
def test_a_hugging_face_teacher_equals_the_run_it_was_exported_from(runs, data_dir, tmp_path, objective):
    """The export of a run, read by transformers, teaches exactly what the run teaches: the same
    attention (packed documents, a prefix) reaches the HF model through its 4D mask."""
    from hybridlm.data import load_manifest
    from hybridlm.distill import HFTeacher
    from hybridlm.export import export_run

    export_run(runs["causal"], tmp_path / "hf")
    batch = _packed_batch(objective, load_manifest(data_dir)["vocab_size"])
    select = (batch.loss_weights > 0).reshape(-1).nonzero().squeeze(1)
    hf, run = (Distiller.from_paths([p], data_dir, 32, "cpu", 0.5, 2.0) for p in (tmp_path / "hf", runs["causal"]))
    assert isinstance(hf.teachers[0], HFTeacher) and hf.parameters == run.parameters
    p_hf, p_run = hf.teacher_probs(batch, select, None), run.teacher_probs(batch, select, None)
    assert torch.allclose(p_hf, p_run, atol=1e-5), (p_hf - p_run).abs().max()
    # the documents are really separated: without the mask the teacher's distribution moves
    unmasked = dataclasses.replace(batch, attention=dataclasses.replace(batch.attention, document_ids=None))
    assert (hf.teacher_probs(unmasked, select, None) - p_hf).abs().max() > 1e-3


def test_a_student_distils_from_a_hugging_face_teacher_and_bad_ones_are_refused(cli, runs, data_dir, tmp_path):
    from safetensors.torch import load_file

    from hybridlm.export import export_run

    hf = export_run(runs["causal"], tmp_path / "hf")
    common = (
        "--data",
        data_dir,
        *tiny_flags(max_steps=2, log_interval=1, eval_interval=0),
    )
    cli("train", *common, "--out", tmp_path / "student", "--distill-from", hf)
    rows = metric_rows(tmp_path / "student")
    assert [r["kl"] > 0 for r in rows if "loss" in r] == [True, True]
    # a masked student cannot read a causal LM's predictions
    assert_one_line_error(
        cli("train", *common, "--out", tmp_path / "m", "--objective", "masked", "--distill-from", hf, check=False),
        "Hugging Face causal LM",
        "bidirectional",
    )
    # another vocabulary: one token renamed in the teacher's tokenizer
    other = tmp_path / "other"
    export_run(runs["causal"], other)
    tok = json.loads((other / "tokenizer.json").read_text())
    word = next(w for w, i in tok["model"]["vocab"].items() if i == 100)
    tok["model"]["vocab"]["zz" + word] = tok["model"]["vocab"].pop(word)
    (other / "tokenizer.json").write_text(json.dumps(tok))
    assert_one_line_error(
        cli("train", *common, "--out", tmp_path / "o", "--distill-from", other, check=False), "another vocabulary"
    )
    # pickled weights only: refused, never unpickled
    pickled = tmp_path / "pickled"
    export_run(runs["causal"], pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert_one_line_error(
        cli("train", *common, "--out", tmp_path / "p", "--distill-from", pickled, check=False), ".safetensors"
    )
    # a masked LM folder is no causal teacher
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    assert_one_line_error(
        cli("train", *common, "--out", tmp_path / "b", "--distill-from", other, check=False), "causal LM"
    )
    # damaged weights: refused from the header, before the run folder exists
    damaged = tmp_path / "damaged"
    export_run(runs["causal"], damaged)
    data = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(
        cli("train", *common, "--out", tmp_path / "d", "--distill-from", damaged, check=False),
        "not a readable safetensors file",
    )
    assert not any((tmp_path / n).exists() for n in "mopbd")
