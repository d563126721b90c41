"""Warm starts (issue: data-efficiency knobs): --init-from starts a run of any objective from another
run's weights, exactly (the source's validation loss at step 0), with words seen continuing, refused
in one line when the source does not fit; --attention-anneal-steps anneals causal to full attention;
a warm-started run resumes exactly."""

import json
import shutil

import helpers
import pytest
import torch
from helpers import assert_one_line_error, metric_rows, tiny_flags
from safetensors.torch import load_file

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.model import AttentionSpec
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train
from hybridlm.warmstart import annealed_visibility

TINY = dict(helpers.TINY, lr=3e-3, precision="fp32", eval_batches=2, log_interval=1)


def _records(run):
    return metric_rows(run)


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("warm") / "causal"
    train(TrainConfig(data=str(data_dir), out=str(out), objective="causal", max_steps=20, eval_interval=20, **TINY),
          quiet=True)  # fmt: skip
    return out


def test_a_warm_start_begins_exactly_where_its_source_ended(source, data_dir, tmp_path):
    src_val = [r for r in _records(source) if "val_loss" in r][-1]
    src_state = json.loads((source / "checkpoints" / "step_0000020" / "state.json").read_text())
    out = tmp_path / "warm"
    cfg = TrainConfig(data=str(data_dir), out=str(out), objective="causal", max_steps=4, eval_interval=4,
                      init_from=str(source), checkpoint_words=[str(src_state["words_seen"] + 10)], **TINY)  # fmt: skip
    summary = train(cfg, quiet=True)
    first = _records(out)[0]
    assert first["step"] == 0 and first["val_loss"] == src_val["val_loss"]  # the same weights, bit for bit
    # words and tokens continue from the source; a words_N checkpoint past the source's count is made
    state = json.loads((out / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert state["words_seen"] > src_state["words_seen"] and summary["words_seen"] == state["words_seen"]
    assert state["tokens_seen"] == src_state["tokens_seen"] + 4 * 8 * 32
    assert any(p.name.startswith("words_") for p in (out / "checkpoints").iterdir())
    saved = json.loads((out / "config.json").read_text())
    assert saved["init_from"] == f"{source.resolve()}:step_0000020"  # recorded as the weights it means


def test_any_objective_warm_starts_and_the_anneal_runs(cli, source, data_dir, tmp_path):
    out = tmp_path / "diffusion"
    cli("train", "--data", data_dir, "--out", out, "--objective", "diffusion", "--init-from", f"{source}:step_0000020",
        "--attention-anneal-steps", 3, *tiny_flags(max_steps=4, eval_interval=4, eval_batches=2))  # fmt: skip
    records = _records(out)
    assert records[0]["step"] == 0 and "val_bpb" in records[0]
    # the run's identity: another source or anneal on --resume is refused
    proc = cli("train", "--out", out, "--resume", "--attention-anneal-steps", 5, "--max-steps", 6, check=False)
    assert_one_line_error(proc, "attention_anneal_steps")
    cli("train", "--out", out, "--resume", "--init-from", f"{source}:step_0000020", "--max-steps", 5)


def test_the_annealed_mask_is_causal_at_first_and_full_after_n_steps():
    T, N = 16, 10
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    assert torch.equal(annealed_visibility(T, 0, N, seed=1), causal)
    shares = [annealed_visibility(T, s, N, seed=1).float().mean().item() for s in range(N)]
    assert shares == sorted(shares) and shares[-1] > 0.9
    assert annealed_visibility(T, N, N, seed=1) is None  # full attention from step N on
    # in the model's mask: bidirectional rows see what the anneal allows, causal rows stay causal
    spec = AttentionSpec(torch.tensor([False, True]), visible=annealed_visibility(T, 0, N, seed=1))
    mask, _ = spec.mask(T, "cpu")
    assert torch.equal(mask[0, 0], causal) and torch.equal(mask[1, 0], causal)
    full, flag = AttentionSpec(False, visible=annealed_visibility(T, N, N, seed=1)).mask(T, "cpu")
    assert full is None and flag is False


def test_a_source_that_does_not_fit_is_refused_before_anything_is_written(cli, source, data_dir, tmp_path, corpus):
    base = ("train", "--data", data_dir, *tiny_flags(max_steps=2))
    out = tmp_path / "new"
    assert_one_line_error(cli(*base, "--out", out, "--init-from", tmp_path, check=False), "not a hybridlm run")
    proc = cli(*base, "--out", out, "--init-from", source, "--model", '{"n_layer": 3}', check=False)
    assert_one_line_error(proc, "another shape")
    proc = cli(*base, "--out", out, "--init-from", f"{source}:step_0000099", check=False)
    assert_one_line_error(proc, "step_0000099")
    train_tokenizer([corpus], vocab_size=300, out_dir=tmp_path / "tok")
    prepare([corpus], tmp_path / "tok", tmp_path / "other", val_fraction=0.05)
    proc = cli("train", "--data", tmp_path / "other", "--out", out, "--init-from", source, check=False)
    assert_one_line_error(proc, "another tokenizer")
    assert not out.exists()


def test_a_warm_started_run_resumes_exactly(cli, source, data_dir, tmp_path):
    whole = tmp_path / "whole"
    cfg = TrainConfig(data=str(data_dir), out=str(whole), objective="mntp", max_steps=4, eval_interval=0,
                      checkpoint_interval=2, keep_checkpoints=4, init_from=str(source), **TINY)  # fmt: skip
    train(cfg, quiet=True)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step_0000004")
    (cut / "checkpoints" / "latest").write_text("step_0000002\n")
    cli("train", "--out", cut, "--resume")
    a, b = (load_file(str(r / "checkpoints" / "step_0000004" / "model.safetensors")) for r in (whole, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["loss"] for r in _records(run) if "loss" in r] for run in (whole, cut)]
    assert losses[0] == losses[1]


def test_diffusion_can_keep_the_next_token_layout_of_the_causal_model_it_adapts(source, data_dir, tmp_path):
    from hybridlm.objectives.diffusion import DiffusionObjective

    ids = torch.randint(5, 300, (64, 33), generator=torch.Generator().manual_seed(0))
    b = DiffusionObjective(300, diffusion_shift=True).corrupt(
        ids, torch.Generator().manual_seed(1), t=torch.full((64,), 0.5)
    )
    assert torch.equal(b.targets, ids[:, 1:]) and torch.equal(b.input_ids[:, 0], ids[:, 0])
    hidden = b.input_ids[:, 1:] == 3  # input position i shows token i, masked exactly when target i-1 is scored
    assert torch.equal(hidden, b.loss_weights[:, :-1] > 0)
    assert torch.equal(b.input_ids[:, 1:][~hidden], ids[:, 1:-1][~hidden])
    # from a causal source, the shifted layout starts closer to a good diffusion model (this source is
    # 20 tiny steps old: mostly unigram statistics, so the gap is small)
    first = {}
    for shift in (False, True):
        out = tmp_path / f"shift-{shift}"
        train(TrainConfig(data=str(data_dir), out=str(out), objective="diffusion", diffusion_shift=shift, max_steps=1,
                          eval_interval=1, init_from=str(source), **TINY), quiet=True)  # fmt: skip
        first[shift] = _records(out)[0]["val_loss"]
    assert first[True] < first[False], first
    # it scores, infills and samples in that layout
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.evaluate.scoring import score_sentences
    from hybridlm.generate import generate_text, infill_text
    from hybridlm.runs import load_run

    lm = RunLM(tmp_path / "shift-True")
    assert lm.objective.capabilities.infill.shift == 1 and all(s < 0 for s in score_sentences(lm, ["the dog ."]))
    run = load_run(tmp_path / "shift-True")
    assert infill_text(run, "the <mask> .") and isinstance(generate_text(run, "the", max_new_tokens=4, steps=4), str)
