"""Optimizers and the EMA of the weights against the BabyLM winners' own code (../shared/reference), and in
training: exact resume, one and two processes, one-line errors."""

import importlib.util
import json

import pytest
import torch
from helpers import (
    SHARED,
    assert_one_line_error,
    assert_train_refused,
    logged,
    tiny_flags,
    torchrun,
    train_until_killed,
)

from hybridlm.optim import Lamb, WeightEMA

REFERENCE = SHARED.parent / "reference"
LAMBS = [REFERENCE / "gpt-bert/pretraining/lamb.py", REFERENCE / "babylm-diffusion/optimization/lamb.py"]


def _module(path):
    if not path.is_file():
        pytest.skip(f"{path} not found (the reference implementations live in ../shared/reference)")
    spec = importlib.util.spec_from_file_location(path.stem + str(abs(hash(path))), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 8, generator=g), torch.randn(8, 8, generator=g), torch.randn(8, generator=g)]


def _groups(params):
    return [{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "weight_decay": 0.0}]


@pytest.mark.parametrize("reference", LAMBS, ids=["gpt-bert", "diffusion-winner"])
def test_lamb_equals_the_reference_over_20_steps(reference):
    """The same parameters and gradients, 20 steps, as GPT-BERT's (and the 2025 diffusion winner's) Lamb
    is built in their training scripts: two groups, the decayed one with the trust ratio."""
    theirs_cls = _module(reference).Lamb
    ours, theirs = [torch.nn.Parameter(p) for p in _params()], [torch.nn.Parameter(p) for p in _params()]
    opt_ours = Lamb(_groups(ours), lr=1.41e-2, betas=(0.9, 0.98), eps=1e-8)
    opt_theirs = theirs_cls(_groups(theirs), 1.41e-2, betas=(0.9, 0.98), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (a - b).abs().max()
    assert not torch.equal(ours[0], _params()[0])  # it moved


def test_lamb_skips_a_flagged_step_on_the_device():
    params = [torch.nn.Parameter(p) for p in _params()]
    opt = Lamb(_groups(params), lr=1e-2)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = [p.detach().clone() for p in params], {k: v.clone() for k, v in opt.state[params[0]].items()}
    opt.found_inf = torch.ones(())  # a bad step: nothing changes, moments and step count included
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before[0], params))
    assert all(torch.equal(v, opt.state[params[0]][k]) for k, v in before[1].items())
    opt.found_inf = torch.zeros(())
    opt.step()
    assert not torch.equal(before[0][0], params[0]) and opt.state[params[0]]["step"].item() == 2


def test_ema_equals_gpt_berts_and_the_diffusion_winners():
    """GPT-BERT's update is two lines of train_10m.py (280-281), written here as they stand; the diffusion
    winner's is its ExponentialMovingAverage class (with its decay warm-up), imported."""
    winner = _module(REFERENCE / "babylm-diffusion/training/ema.py").ExponentialMovingAverage
    model = torch.nn.Linear(8, 4)
    plain, warm = WeightEMA(model, 0.9), WeightEMA(model, 0.999, warmup=True)
    gpt_bert = [p.detach().clone() for p in model.parameters()]
    theirs = winner(model.parameters(), decay=0.999, use_num_updates=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        plain.update()
        warm.update()
        theirs.update(model.parameters())
        for param_q, param_k in zip(model.parameters(), gpt_bert):  # train_10m.py, as written there
            param_k.data.mul_(0.9).add_((1.0 - 0.9) * param_q.detach().data)
    for ours, ref in ((plain.shadow, gpt_bert), (warm.shadow, theirs.shadow_params)):
        for a, b in zip(ours, ref):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (a - b).abs().max()
    raw = [p.detach().clone() for p in model.parameters()]
    plain.swap()
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), gpt_bert)) or all(
        torch.allclose(p, s, atol=1e-6) for p, s in zip(model.parameters(), gpt_bert)
    )
    plain.swap()
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))


def test_a_run_with_lamb_and_an_ema_validates_both_and_saves_the_average(cli, data_dir, tmp_path):
    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(objective="hybrid", max_steps=6, eval_interval=3,
        eval_batches=2, optimizer="lamb", lr=1e-2, ema_decay=0.9, log_interval=1))  # fmt: skip
    val = logged(run, "val_loss")
    ema = logged(run, "val_loss_ema")
    assert sorted(val) == sorted(ema) == [3, 6] and all(val[s] != ema[s] for s in val)
    assert {"val_ce_causal_ema", "val_bpb_ema"} <= set(json.loads((run / "metrics.jsonl").read_text().split("\n")[-2]))
    step = run / "checkpoints" / "step_0000006"
    from safetensors.torch import load_file

    raw, average = load_file(str(step / "model.safetensors")), load_file(str(step / "ema.safetensors"))
    assert raw.keys() == average.keys() and any(not torch.equal(raw[k], average[k]) for k in raw)


@pytest.mark.slow
def test_lamb_with_an_ema_resumes_bit_identically_after_sigkill(tmp_path, data_dir):
    args = ["--data", data_dir, *tiny_flags(objective="hybrid", max_steps=200, log_interval=1, eval_interval=50,
                                           eval_batches=2, checkpoint_interval=5, seed=3, optimizer="lamb", lr=1e-2,
                                           ema_decay=0.95, ema_warmup=True)]  # fmt: skip
    killed = tmp_path / "killed"
    train_until_killed(args, killed, 10)
    from helpers import hlm

    hlm("train", "--out", killed, "--resume")
    reference = tmp_path / "reference"
    hlm("train", *args, "--out", reference)
    for key in ("loss", "val_loss", "val_loss_ema"):
        got, want = logged(killed, key), logged(reference, key)
        assert got and all(got[s] == want[s] for s in got), key  # bit-identical, the average included


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_lamb_and_the_ema_on_two_processes_match_one(tmp_path, data_dir, mode):
    args = tiny_flags(objective="hybrid", max_steps=6, log_interval=1, eval_interval=6, eval_batches=2,
                      precision="fp32", seed=5, optimizer="lamb", lr=1e-2, ema_decay=0.9)  # fmt: skip
    torchrun(2, "--data", data_dir, "--out", tmp_path / "two", "--distributed", mode, *args)
    from helpers import hlm

    hlm("train", "--data", data_dir, "--out", tmp_path / "one", *args)
    for key in ("loss", "val_loss", "val_loss_ema"):
        two, one = logged(tmp_path / "two", key), logged(tmp_path / "one", key)
        assert sorted(two) == sorted(one) and all(two[s] == pytest.approx(one[s], rel=1e-4) for s in one), key


def test_muon_trains_and_resumes_exactly(cli, data_dir, tmp_path):
    import shutil

    run = tmp_path / "m"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(objective="causal", eval_interval=0, max_steps=4,
        checkpoint_interval=2, optimizer="muon", lr=2e-2, precision="fp32", log_interval=1))  # fmt: skip
    straight = logged(run)
    shutil.rmtree(run / "checkpoints" / "step_0000004")  # as if killed after step 2
    (run / "checkpoints" / "latest").write_text("step_0000002\n")
    cli("train", "--out", run, "--resume")
    assert logged(run) == straight  # the Muon and the AdamW halves of the state both came back
    assert straight[4] < straight[1]


@pytest.mark.parametrize(
    "flags, needle",
    [(["--optimizer", "sgd"], "unknown optimizer"), (["--ema-decay", "1"], "ema_decay"),
     (["--ema-warmup"], "--ema-decay"), (["--adam-eps", "0"], "adam_eps"), (["--muon-momentum", "1.5"], "muon")],
)  # fmt: skip
def test_bad_optimizer_settings_are_one_line_before_anything_is_written(cli, data_dir, tmp_path, flags, needle):
    assert_train_refused(cli, data_dir, tmp_path / "x", flags, needle)


def test_another_optimizer_on_resume_is_refused(cli, data_dir, tmp_path):
    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(max_steps=1, eval_interval=0))
    assert_one_line_error(cli("train", "--out", run, "--resume", "--optimizer", "lamb", check=False), "optimizer")


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, data_dir):
    from helpers import tiny_config

    from hybridlm.train import train

    out = tmp_path_factory.mktemp("ema") / "run"
    train(tiny_config(data_dir, out, objective="hybrid", max_steps=8, lr=1e-2, optimizer="lamb", ema_decay=0.8,
                      eval_interval=0, checkpoint_interval=8), quiet=True)  # fmt: skip
    return out


def test_every_reader_takes_the_average_where_a_run_keeps_one_and_says_so(cli, ema_run, runs, corpus, tmp_path):
    from safetensors.torch import load_file

    text = tmp_path / "valid.txt"
    text.write_text(corpus.read_text()[:600])
    results = {}
    for weights in ("auto", "raw"):
        out = tmp_path / f"{weights}.json"
        cli("eval", "perplexity", "--run", ema_run, "--input", text, "--weights", weights, "--json", out)
        results[weights] = json.loads(out.read_text())
    assert results["auto"]["weights"] == "ema" and results["raw"]["weights"] == "raw"
    assert results["auto"]["causal"]["nll_per_token"] != results["raw"]["causal"]["nll_per_token"]
    # an export holds the average (and says so)
    cli("export", "--run", ema_run, "--out", tmp_path / "hf")
    average = load_file(str(ema_run / "checkpoints" / "step_0000008" / "ema.safetensors"))
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert torch.equal(exported["model.embed_tokens.weight"], average["embed.weight"])
    assert json.loads((tmp_path / "hf" / "hybridlm.json").read_text())["weights"] == "ema"
    # a warm start from it starts from the average and records that it did
    cli("train", "--data", _data(ema_run), "--out", tmp_path / "warm", "--init-from", ema_run,
        *tiny_flags(objective="hybrid", max_steps=1, eval_interval=0))  # fmt: skip
    assert json.loads((tmp_path / "warm" / "config.json").read_text())["init_weights"] == "ema"
    from hybridlm.config import TrainConfig
    from hybridlm.data import load_manifest
    from hybridlm.warmstart import find_source

    manifest = load_manifest(_data(ema_run))
    for which, want in (
        ("auto", average),
        ("raw", load_file(str(ema_run / "checkpoints/step_0000008/model.safetensors"))),
    ):
        cfg = TrainConfig(data=_data(ema_run), init_from=str(ema_run), init_weights=which)
        source = find_source(cfg, manifest["vocab_size"], manifest["tokenizer_hash"])
        assert all(torch.equal(source.weights[k], want[k]) for k in want), which
    # a run without an average: auto reads its weights, ema is refused
    proc = cli("eval", "perplexity", "--run", runs["causal"], "--input", text, "--weights", "ema", check=False)
    assert_one_line_error(proc, "no moving average", "--weights ema")


def _data(run):
    return json.loads((run / "config.json").read_text())["data"]


@pytest.mark.parametrize("where", ["gpt-bert/pretraining/utils.py", "babylm-diffusion/utils/utils.py"])
@pytest.mark.parametrize("steps", [7812, 250, 40])
def test_the_gpt_bert_lr_schedule_is_the_winners_at_every_step(where, steps):
    """Their LambdaLR, stepped as their loops step it (the rate an optimizer step uses is read before it)."""
    from hybridlm.config import TrainConfig
    from hybridlm.train import lr_at

    make = _module(REFERENCE / where).cosine_schedule_with_warmup_cooldown
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.41e-2)
    scheduler = make(optimizer, int(steps * 0.016), int(steps * 0.016), steps, 0.1)
    cfg = TrainConfig(lr=1.41e-2, lr_schedule="gpt-bert", max_steps=steps, warmup_fraction=0.016,
                      cooldown_fraction=0.016, min_lr_ratio=0.1)  # fmt: skip
    theirs = []
    for _ in range(steps):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [lr_at(s, cfg) for s in range(steps)]
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


@pytest.mark.slow
def test_a_sharded_average_resumes_exactly(tmp_path, data_dir):
    """FSDP2: the EMA saved whole from its shards and sharded again on resume (two processes both times)."""
    import shutil

    args = tiny_flags(objective="hybrid", max_steps=8, log_interval=1, eval_interval=4, eval_batches=2, seed=5,
                      checkpoint_interval=4, precision="fp32", optimizer="lamb", lr=1e-2, ema_decay=0.9)  # fmt: skip
    torchrun(2, "--data", data_dir, "--out", tmp_path / "run", "--distributed", "fsdp", *args)
    straight = {key: logged(tmp_path / "run", key) for key in ("loss", "val_loss_ema")}
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000008")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step_0000004\n")
    torchrun(2, "--out", tmp_path / "run", "--resume", "--distributed", "fsdp")
    for key, want in straight.items():
        got = logged(tmp_path / "run", key)
        assert all(got[s] == pytest.approx(want[s], rel=1e-5) for s in want), key


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_muon_on_two_processes_matches_one(tmp_path, data_dir, mode):
    """Muon orthogonalises whole matrices: FSDP2's shards must not change its update (nor DDP's replicas)."""
    from helpers import hlm

    args = tiny_flags(objective="causal", max_steps=4, log_interval=1, eval_interval=4, eval_batches=2, seed=5,
                      precision="fp32", optimizer="muon", lr=2e-2)  # fmt: skip
    torchrun(2, "--data", data_dir, "--out", tmp_path / "two", "--distributed", mode, *args)
    hlm("train", "--data", data_dir, "--out", tmp_path / "one", *args)
    two, one = logged(tmp_path / "two"), logged(tmp_path / "one")
    assert sorted(two) == sorted(one) and all(two[s] == pytest.approx(one[s], rel=1e-4) for s in one)
