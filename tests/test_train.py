import json
import math

import pytest
import torch
from helpers import TINY, assert_one_line_error, hlm, logged, metric_rows, tiny_flags, train_until_killed

from hybridlm.config import TrainConfig, load_config, merge_config
from hybridlm.errors import UserError
from hybridlm.train import train

FAST = dict(TINY, lr=3e-3, eval_interval=0, log_interval=1)


@pytest.mark.parametrize("objective", ["causal", "masked", "hybrid", "diffusion"])
def test_validation_loss_falls(tmp_path, data_dir, objective):
    cfg = TrainConfig(
        data=str(data_dir),
        out=str(tmp_path / objective),
        objective=objective,
        max_steps=40,
        **{**FAST, "eval_interval": 20, "eval_batches": 4, "lr": 1e-2},
    )
    summary = train(cfg, quiet=True)
    val = logged(tmp_path / objective, "val_loss")
    assert val[40] < val[20] < 5.8  # log(320) = 5.77 is a uniform guess
    assert summary["tokens_seen"] == 40 * 8 * 32
    assert (tmp_path / objective / "checkpoints" / "step_0000040" / "model.safetensors").is_file()


def test_gradient_accumulation_does_not_change_the_run(tmp_path, data_dir):
    a = TrainConfig(
        data=str(data_dir), out=str(tmp_path / "a"), objective="hybrid", max_steps=6, precision="fp32", **FAST
    )
    b = TrainConfig(**{**a.to_dict(), "out": str(tmp_path / "b"), "micro_batch_size": 2})
    train(a, quiet=True), train(b, quiet=True)
    la, lb = logged(tmp_path / "a"), logged(tmp_path / "b")
    assert la.keys() == lb.keys()
    for s in la:
        assert la[s] == pytest.approx(lb[s], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, data_dir):
    args = ["--data", data_dir, *tiny_flags(objective="hybrid", max_steps=300, log_interval=1, eval_interval=0,
                                           checkpoint_interval=5, seed=11)]  # fmt: skip
    killed = tmp_path / "killed"
    train_until_killed(args, killed, 10)
    latest = (killed / "checkpoints" / "latest").read_text().strip()
    resumed_from = int(latest.split("_")[1])
    assert resumed_from < 300, "the run finished before SIGKILL"
    hlm("train", "--out", killed, "--resume", "--max-steps", 300)
    reference = tmp_path / "reference"
    hlm("train", *args, "--out", reference)
    got, want = logged(killed), logged(reference)
    assert sorted(got) == list(range(1, 301))  # nothing repeated, nothing missing after resume
    for s in range(resumed_from + 1, resumed_from + 21):
        assert got[s] == pytest.approx(want[s], rel=1e-6), s
    assert got[300] == pytest.approx(want[300], rel=1e-5)
    from safetensors.torch import load_file

    a, b = (load_file(str(r / "checkpoints" / "step_0000300" / "model.safetensors")) for r in (killed, reference))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run's weights are bit-identical


def test_existing_run_is_never_overwritten(cli, tmp_path, data_dir):
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), max_steps=2, **FAST)
    train(cfg, quiet=True)
    before = (tmp_path / "r" / "checkpoints" / "step_0000002" / "model.safetensors").read_bytes()
    proc = cli("train", "--data", data_dir, "--out", tmp_path / "r", "--max-steps", 2, check=False)
    assert_one_line_error(proc, "already holds a run", "--resume")
    assert (tmp_path / "r" / "checkpoints" / "step_0000002" / "model.safetensors").read_bytes() == before


def test_corrupt_checkpoint_gives_a_clear_error(cli, tmp_path, data_dir):
    cfg = TrainConfig(
        data=str(data_dir), out=str(tmp_path / "r"), max_steps=4, checkpoint_interval=2, keep_checkpoints=3, **FAST
    )
    train(cfg, quiet=True)
    f = tmp_path / "r" / "checkpoints" / "step_0000004" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    proc = cli("train", "--out", tmp_path / "r", "--resume", "--max-steps", 6, check=False)
    assert_one_line_error(proc, "corrupt", "step_0000002")
    assert (tmp_path / "r" / "checkpoints" / "step_0000002" / "model.safetensors").is_file()


def test_bad_arguments_are_one_line_errors(cli, tmp_path, data_dir):
    assert_one_line_error(
        cli("train", "--data", data_dir, "--out", tmp_path / "x", "--objective", "gpt", check=False),
        "unknown objective",
        "causal",
    )
    assert_one_line_error(
        cli("train", "--data", data_dir, "--out", tmp_path / "x", "--preset", "huge", check=False), "unknown preset"
    )
    assert_one_line_error(
        cli("train", "--data", tmp_path / "none", "--out", tmp_path / "x", check=False), "hlm prepare"
    )
    assert_one_line_error(cli("train", "--out", tmp_path / "nothing", "--resume", check=False), "nothing to resume")


def test_config_file_typo_names_the_closest_key(cli, tmp_path, data_dir):
    f = tmp_path / "c.toml"
    f.write_text('objective = "masked"\nmask_ratio_strat = 0.3\n')
    with pytest.raises(UserError, match="mask_ratio_strat.*did you mean 'mask_ratio_start'"):
        load_config(f)
    proc = cli("train", "--config", f, "--data", data_dir, "--out", tmp_path / "x", check=False)
    assert_one_line_error(proc, "mask_ratio_strat", "mask_ratio_start")
    with pytest.raises(UserError, match="must be a int"):
        merge_config({"max_steps": "ten"})


def test_config_file_and_flags_are_resolved_into_the_run(cli, tmp_path, data_dir):
    f = tmp_path / "c.toml"
    f.write_text('objective = "masked"\nseq_len = 32\nbatch_size = 8\nmax_steps = 3\nlr = 0.01\n[model]\nn_layer = 1\n')
    cli("train", "--config", f, "--data", data_dir, "--out", tmp_path / "r", "--max-steps", 2)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["objective"] == "masked" and saved["max_steps"] == 2 and saved["model"] == {"n_layer": 1}


def test_sequence_length_schedule_keeps_tokens_per_step(tmp_path, data_dir):
    cfg = TrainConfig(
        data=str(data_dir),
        out=str(tmp_path / "r"),
        objective="masked",
        max_steps=10,
        seq_len_schedule=[[0, 16], [0.5, 32], [0.8, 64]],
        **{**FAST, "seq_len": 16, "batch_size": 16},
    )
    summary = train(cfg, quiet=True)
    rows = metric_rows(tmp_path / "r")
    assert [r["tokens"] for r in rows if "loss" in r] == [256 * s for s in range(1, 11)]
    assert cfg.stages() == [(0, 16, 16), (5, 32, 8), (8, 64, 4)]
    state = json.loads((tmp_path / "r" / "checkpoints" / "step_0000010" / "state.json").read_text())
    assert state["seq_len"] == 64 and summary["tokens_seen"] == 2560
    with pytest.raises(UserError, match="must divide"):
        TrainConfig(seq_len=16, batch_size=3, seq_len_schedule=[[0, 16], [0.5, 32]]).validate()


def test_lr_schedule_warmup_cosine_cooldown():
    from hybridlm.train import lr_at

    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_fraction=0.1, cooldown_fraction=0.2, max_steps=100)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(79, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(80, cfg) == pytest.approx(0.1) and lr_at(99, cfg) == pytest.approx(0.1 / 20)


def test_tensorboard_and_yaml_config(cli, tmp_path, data_dir):
    f = tmp_path / "c.yaml"
    f.write_text("objective: causal\nmax_steps: 3\nseq_len: 32\nbatch_size: 8\nlog: [tensorboard]\neval_interval: 3\n")
    cli("train", "--config", f, "--data", data_dir, "--out", tmp_path / "r")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    assert {"loss", "val_loss", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [3]


# ---------------------------------------------------------------- resume honours what the user typed
@pytest.mark.slow
def test_resume_extends_a_finished_run_even_to_the_default_length(cli, tmp_path, data_dir):
    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(max_steps=3, eval_interval=0))
    # 1000 is TrainConfig's default max_steps: an explicit flag equal to a default is still applied
    cli("train", "--out", run, "--resume", "--max-steps", 1000, "--log-interval", 500, "--checkpoint-interval", 1000)
    assert json.loads((run / "config.json").read_text())["max_steps"] == 1000
    assert (run / "checkpoints" / "step_0001000").is_dir()
    assert max(logged(run)) == 1000


def test_resume_refuses_another_objective_even_the_default_one(cli, tmp_path, data_dir):
    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(objective="hybrid", max_steps=2))
    proc = cli("train", "--out", run, "--resume", "--objective", "causal", "--max-steps", 4, check=False)
    assert_one_line_error(proc, "objective='causal'", "'hybrid'")
    proc = cli("train", "--out", run, "--resume", "--seq-len", 128, check=False)  # 128 is the default seq_len
    assert_one_line_error(proc, "seq_len", "new --out")
    cli("train", "--out", run, "--resume", "--objective", "hybrid", "--max-steps", 4)  # the same value is fine


@pytest.mark.slow
def test_resume_trains_the_folder_given_not_the_one_saved(tmp_path, data_dir):
    import shutil

    orig = tmp_path / "orig"
    hlm(
        "train",
        "--data",
        data_dir,
        "--out",
        orig,
        *tiny_flags(max_steps=2, eval_interval=0),
    )
    before = {p.name: p.stat().st_mtime_ns for p in orig.rglob("*")}
    shutil.copytree(orig, tmp_path / "copy")
    hlm("train", "--out", tmp_path / "copy", "--resume", "--max-steps", 4, cwd=tmp_path)
    assert (tmp_path / "copy" / "checkpoints" / "step_0000004").is_dir()
    assert {p.name: p.stat().st_mtime_ns for p in orig.rglob("*")} == before  # the original run untouched


# ---------------------------------------------------------------- what is reported
def test_z_loss_is_optimised_but_not_reported(tmp_path, data_dir):
    from hybridlm.runs import RunDir
    from hybridlm.train import Dist, evaluate, setup

    cfg = TrainConfig(
        data=str(data_dir),
        out=str(tmp_path / "z"),
        objective="causal",
        max_steps=4,
        z_loss=0.05,
        **{**FAST, "eval_interval": 4, "eval_batches": 3},
    )
    logged = train(cfg, quiet=True)
    run = RunDir(tmp_path / "z")
    plain = run.read_config()
    plain.z_loss = 0.0  # the same weights, evaluated without the penalty
    result = evaluate(setup(plain, Dist("cpu"), run, resume=True))
    assert result["val_bpb"] == pytest.approx(logged["val_bpb"], rel=1e-6)
    assert result["val_loss"] == pytest.approx(logged["val_loss"], rel=1e-6)


def test_bits_per_byte_counts_the_bytes_of_the_tokens_scored(tokenizer_dir, corpus):
    from hybridlm.tokenizer import load_tokenizer, token_byte_lengths

    tok = load_tokenizer(tokenizer_dir)
    table = token_byte_lengths(tok)
    assert (table[:5] == 0).all()  # special tokens stand for no text
    for line in corpus.read_text().splitlines()[:20]:
        if line:
            ids = tok.encode(line, add_special_tokens=False).ids
            assert table[ids].sum() == len(line.encode("utf-8")) + 1  # + the space before the first word


def test_a_non_finite_loss_never_reaches_the_weights(tmp_path, data_dir):
    from hybridlm.runs import RunDir
    from hybridlm.train import Dist, read_record, save, setup, train_step

    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), max_steps=2, **FAST)
    train(cfg, quiet=True)
    run = RunDir(tmp_path / "r")
    t = setup(run.read_config(), Dist("cpu"), run, resume=True)
    t.cfg.max_steps = 4
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    moments = {k: v.clone() for k, v in t.optimizer.state_dict()["state"][0].items()}
    t.loss.terms[0].z_loss = float("nan")  # poisons the loss of the next step (the token CE term)
    record = train_step(t)  # the step is skipped on the device, without waiting for it
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    assert all(
        torch.equal(moments[k], v) for k, v in t.optimizer.state_dict()["state"][0].items()
    )  # Adam's step count too
    t.loss.terms[0].z_loss = 0.0
    train_step(t)  # a later finite step trains, but the run still stops, naming the bad step
    with pytest.raises(UserError, match="non-finite .* at step 3"):
        read_record(t, record)
    # the loop stops before a checkpoint is written: the run folder keeps its last good one
    t.loss.terms[0].z_loss = float("nan")
    train_step(t)
    with pytest.raises(UserError, match="non-finite"):
        save(t)
    assert [p.name for p in run.checkpoints()] == ["step_0000002"]


# ---------------------------------------------------------------- no pickle
def test_checkpoints_load_without_pickle(tmp_path, data_dir, monkeypatch):
    import pickle

    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), max_steps=2, **FAST)
    train(cfg, quiet=True)

    def refuse(*a, **k):
        raise AssertionError("pickle used to load a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    train({"out": str(tmp_path / "r"), "max_steps": 3}, resume=True, quiet=True)
    assert (tmp_path / "r" / "checkpoints" / "step_0000003").is_dir()


def test_a_crafted_rng_pickle_never_runs(cli, tmp_path, data_dir):
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), max_steps=2, **FAST)
    train(cfg, quiet=True)
    ckpt = tmp_path / "r" / "checkpoints" / "step_0000002"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save(Payload(), ckpt / "rng.pt")  # a checkpoint in the old pickle layout, crafted
    (ckpt / "rng.json").unlink()
    proc = cli("train", "--out", tmp_path / "r", "--resume", "--max-steps", 3, check=False)
    assert_one_line_error(proc, "pickle")
    assert not marker.exists()


@pytest.mark.slow
def test_compiled_training_equals_eager(tmp_path, data_dir):
    # the trunk is compiled in place (parameter names unchanged), and the fused head + CE's chunks apart
    args = dict(data=str(data_dir), objective="hybrid", max_steps=2, precision="fp32", **FAST)
    train(TrainConfig(out=str(tmp_path / "eager"), **args), quiet=True)
    train(TrainConfig(out=str(tmp_path / "compiled"), compile=True, **args), quiet=True)
    eager, compiled = logged(tmp_path / "eager"), logged(tmp_path / "compiled")
    assert compiled.keys() == eager.keys() == {1, 2}
    for s in eager:
        assert compiled[s] == pytest.approx(eager[s], rel=1e-5)


@pytest.mark.parametrize("objective", ["hybrid", "mix"])
def test_compiled_training_does_not_recompile_after_warm_up(tmp_path, data_dir, monkeypatch, objective):
    """--compile builds its graphs in the first steps and the first validation (the hybrid's rows of both
    modes, its two validation views, a mix's objectives, a last smaller batch) and never again: no graph is
    compiled afterwards (torch._dynamo's counters; the "eager" backend traces as Inductor would, without
    code generation)."""
    from torch._dynamo.utils import counters

    import hybridlm.train as train_mod

    monkeypatch.setattr(train_mod, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    graphs = []  # graphs compiled so far, after each step and each validation
    step, validate = train_mod.train_step, train_mod.evaluate

    def counted(fn, kind):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            graphs.append((kind, counters["stats"]["unique_graphs"]))
            return out

        return call

    monkeypatch.setattr(train_mod, "train_step", counted(step, "step"))
    monkeypatch.setattr(train_mod, "evaluate", counted(validate, "validation"))
    mix = {"objective": "mix", "mix": "causal:0.5,diffusion:0.5"} if objective == "mix" else {"objective": objective}
    cfg = {**FAST, "eval_interval": 3, "eval_batches": 2, "log_interval": 3}
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), compile=True, max_steps=10, **cfg, **mix)
    train(cfg, quiet=True)
    first_validation = next(i for i, (kind, _) in enumerate(graphs) if kind == "validation")
    warm = graphs[first_validation][1]
    assert warm > 0 and [n for _, n in graphs[first_validation:]] == [warm] * (len(graphs) - first_validation)
    assert sum(kind == "validation" for kind, _ in graphs) >= 3


# ---------------------------------------------------------------- the device never waits
class _HostSyncs(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the ops that make a GPU wait for its host: reading a value (item, bool, float),
    and shapes that depend on data (nonzero, boolean indexing, masked_select, unique)."""

    SYNC = {
        "_local_scalar_dense",
        "nonzero",
        "masked_select",
        "unique_dim",
        "_unique2",
        "unique_consecutive",
        "repeat_interleave",
        "is_nonzero",
        "equal",
    }

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        boolean_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []) or []
        )
        if name in self.SYNC or boolean_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "objective,extra",
    [("causal", {"mtp_heads": 2}), ("hybrid", {}), ("diffusion", {}), ("mix", {"mix": "causal:1,prefix:1,masked:1"})],
)
def test_the_device_part_of_a_step_never_waits_for_the_host(tmp_path, data_dir, objective, extra, monkeypatch):
    """Everything after the host's batch preparation (forward, loss, backward, statistics, the
    finiteness check, clipping, the optimizer) runs without an op that would synchronise a GPU.
    The CPU stands in for the device: values are treated as if they lived there."""
    from hybridlm import model as model_module
    from hybridlm.runs import RunDir
    from hybridlm.train import Dist, prepare_batch, read_record, setup, train_step

    cfg = TrainConfig(
        data=str(data_dir), out=str(tmp_path / "r"), objective=objective, max_steps=1, z_loss=1e-4, **FAST, **extra
    )
    train(cfg, quiet=True)
    run = RunDir(tmp_path / "r")
    t = setup(run.read_config(), Dist("cpu"), run, resume=True)
    t.cfg.max_steps = 3
    host = prepare_batch(t, t.step)  # the host's part, moves included
    monkeypatch.setattr(model_module, "values_on_host", lambda *tensors: False)
    with _HostSyncs() as syncs:
        record = train_step(t, host)
    assert syncs.seen == []
    monkeypatch.undo()
    assert math.isfinite(read_record(t, record)["loss"])


def test_batches_prepared_ahead_are_the_batches_of_their_steps(tmp_path, data_dir):
    from hybridlm.runs import RunDir
    from hybridlm.train import BatchPrefetcher, Dist, prepare_batch, setup

    train(TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), objective="hybrid", max_steps=1, **FAST), quiet=True)
    run = RunDir(tmp_path / "r")
    t = setup(run.read_config(), Dist("cpu"), run, resume=True)
    t.cfg.max_steps = 5
    ahead = BatchPrefetcher(t, enabled=True)
    got = [ahead.get(s) for s in (1, 2, 3, 4)]
    ahead.close()
    for s, host in zip((1, 2, 3, 4), got):
        want = prepare_batch(t, s)
        assert host.step == s and host.words == want.words
        for a, b in zip(host.micro_batches, want.micro_batches):
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.loss_weights, b.loss_weights)


def test_attention_backend_and_compile_follow_the_device(cli, tmp_path, data_dir):
    from hybridlm.plan import attention_backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert attention_backend(TrainConfig(), cuda, compiled=True) == "flex"
    assert attention_backend(TrainConfig(), cuda, compiled=False) == "sdpa"  # eager FlexAttention is a slow reference
    assert attention_backend(TrainConfig(precision="fp32"), cpu, compiled=True) == "sdpa"
    # SDPA's CPU kernel is slow in bf16: two matmuls there, compiled or not
    assert attention_backend(TrainConfig(precision="bf16"), cpu, compiled=True) == "matmul"
    assert attention_backend(TrainConfig(precision="bf16", attention="sdpa"), cpu, compiled=False) == "sdpa"
    assert attention_backend(TrainConfig(attention="sdpa"), cuda, compiled=True) == "sdpa"
    proc = cli(
        "train", "--data", data_dir, "--out", tmp_path / "f", "--attention", "flex", "--device", "cpu", check=False
    )
    assert_one_line_error(proc, "--attention flex", "CUDA only")
    assert not (tmp_path / "f").exists()
    assert_one_line_error(
        cli("train", "--data", data_dir, "--out", tmp_path / "g", "--attention", "fast", check=False),
        "unknown attention",
    )


def test_a_run_saved_before_objectives_owned_their_options_resumes(cli, tmp_path, data_dir):
    """Run folders from before the redesign hold every objective's keys in config.json (and old hlm
    accepted any of them): they resume, keep their own options, and a changed own option is refused."""
    run = tmp_path / "r"
    cfg = TrainConfig(data=str(data_dir), out=str(run), objective="masked", max_span=4, **FAST, max_steps=2)
    train(cfg, quiet=True)
    saved = json.loads((run / "config.json").read_text())
    old = {
        **saved,
        "mask_ratio_start": 0.3,
        "mask_ratio_end": 0.15,
        "causal_fraction": 1 / 16,
        "schedule": "loglinear",
        "diffusion_eps": 1e-3,
        "diffusion_estimator": "time",
        "frequency_masking": 0.0,
        "mix": "",
        "mix_end": "",
        "mix_phases": [],
        "mtp_heads": 1,
        "mtp_weights": [],
        "prefix_min": 0.3,
        "prefix_max": 0.9,
    }
    (run / "config.json").write_text(json.dumps(old))
    cli("train", "--out", run, "--resume", "--max-steps", 4)
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["max_span"] == 4 and resumed["max_steps"] == 4 and "prefix_min" not in resumed
    assert_one_line_error(cli("train", "--out", run, "--resume", "--max-span", 3, check=False), "max_span")
