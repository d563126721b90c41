"""GIDD's mask-plus-uniform noise (issue 40, part 1): p_uniform = 0 is diffusion, the bound is GIDD's formula
(the reference's code, imported), a uniform model's bound is log N, and a run trains, validates and resumes."""

import importlib.util
import json
import math
import sys
import types

import pytest
import torch
from helpers import SHARED, assert_one_line_error, tiny_config

from hybridlm.losses import GiddELBO, TrainingLoss, loss_of
from hybridlm.model import build_model
from hybridlm.objectives import DiffusionObjective, GiddObjective
from hybridlm.objectives.gidd import elbo_weights, gidd_elbo, mixing

GIDD = SHARED.parent / "reference" / "gidd" / "gidd"
V = 45
N = V - 5  # the text tokens: uniform noise's support


def _ids(rows=4, length=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (rows, length), generator=g)
    ids[:, 0] = 1
    return ids


def test_p_uniform_zero_is_diffusion_on_the_same_batch():
    torch.manual_seed(0)
    model = build_model("tiny", V)
    ids = _ids()
    for seed in range(3):  # GIDD's KL form at p = 0 (what a p = 0 run computes as diffusion's CE, bit for bit)
        gidd = GiddObjective(V).gidd_batch(ids, torch.Generator().manual_seed(seed)).prepared()
        diffusion = DiffusionObjective(V).corrupt(ids, torch.Generator().manual_seed(seed)).prepared()
        assert torch.equal(gidd.input_ids, diffusion.input_ids)  # the same draws, the same masks
        a, ma = TrainingLoss(model, GiddObjective(V), [GiddELBO(N)])(gidd)
        b, mb = loss_of(model, DiffusionObjective(V), diffusion)
        a, b = a.detach(), b.detach()
        assert abs(float(a) - float(b)) < 1e-6 and abs(float(ma["nll"][0]) - float(mb["nll"][0])) < 1e-6
    noisy = GiddObjective(V, p_uniform=0.3).corrupt(ids, torch.Generator().manual_seed(0))
    replaced = (noisy.input_ids != ids[:, :-1]) & (noisy.input_ids != 3)
    assert replaced.any() and (noisy.input_ids[replaced] >= 5).all()  # uniform noise: text tokens only


def _reference_loss(p_uniform, gamma):
    if not (GIDD / "loss.py").is_file():
        pytest.skip(f"GIDD's reference code is not at {GIDD}")
    sys.modules.setdefault("gidd", types.ModuleType("gidd"))
    utils = types.ModuleType("gidd.utils")  # (not in the snapshot; the noise and the loss do not use it)
    utils.sample_categorical = None
    sys.modules.setdefault("gidd.utils", utils)
    modules = {}
    for name in ("diffusion_process", "loss"):
        spec = importlib.util.spec_from_file_location(f"gidd_reference_{name}", GIDD / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    vocab = N + 1  # the reference's vocabulary: <mask> (id 0) and the text tokens
    tokenizer = type("Tok", (), {"mask_token_id": 0, "__len__": lambda self: vocab})()
    schedule = modules["diffusion_process"].HybridDiffusion(tokenizer, p_uniform=p_uniform, gamma=gamma)
    config = types.SimpleNamespace(loss=types.SimpleNamespace(loss_weighting="none", min_loss_weight=0.0,
                                                              max_loss_weight=1.0))  # fmt: skip
    return modules["loss"].GiddLoss(config, tokenizer, schedule)


@pytest.mark.parametrize("p_uniform,gamma", [(0.05, 1.0), (0.2, 1.0), (0.5, 1.0), (0.3, 2.0)])
def test_the_bound_is_the_reference_formula(p_uniform, gamma):
    reference = _reference_loss(p_uniform, gamma)
    g = torch.Generator().manual_seed(1)
    B, L = 6, 9
    t = torch.tensor([0.02, 0.1, 0.35, 0.5, 0.8, 0.97])
    x = torch.randint(5, V, (B, L), generator=g)
    kind = torch.randint(0, 3, (B, L), generator=g)  # z_t: x itself, <mask>, another text token
    z = torch.where(
        kind == 0, x, torch.where(kind == 1, torch.full_like(x, 3), torch.randint(5, V, (B, L), generator=g))
    )
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 3
    logits[..., [0, 1, 2, 4]] = -1e9  # the reference's vocabulary has no other special tokens
    # hlm
    mix = mixing(t, p_uniform, gamma, N)
    on_x, on_mask, on_other = (w[:, None].expand(B, L) for w in elbo_weights(t, mix, N))
    weight = torch.where(z == x, on_x, torch.where(z == 3, on_mask, on_other))
    noise = torch.stack([mix[k][:, None].expand(B, L) for k in ("alpha", "mask", "uniform")], -1).reshape(-1, 3)
    ours = weight.reshape(-1) * gidd_elbo(logits.reshape(-1, V), x.reshape(-1), z.reshape(-1), noise, N).double()

    # the reference, in its own vocabulary: <mask> -> 0, text token k -> k - 4
    def to_ref(ids):
        return torch.where(ids == 3, torch.zeros_like(ids), ids - 4)

    ref_logits = torch.cat([logits[..., 3:4], logits[..., 5:]], -1)
    _, elbo, _ = reference(ref_logits, to_ref(x), torch.ones(B, L), to_ref(z), t.double(), reduction="none")
    torch.testing.assert_close(ours.view(B, L), elbo.double(), rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("p_uniform", [0.0, 0.1, 0.5, 1.0])
def test_a_uniform_models_bound_is_log_n_per_token(p_uniform):
    """E_t E_z [w (KL + r - log r - 1)] with x_hat uniform over the N text tokens, integrated over t (t = sin^2
    of an even grid, which resolves the weights' 1/sqrt(t) ends), is log N: the bound is tight for it."""
    s = torch.linspace(1e-6, 1 - 1e-6, 100_001, dtype=torch.float64)
    t = torch.sin(math.pi * s / 2) ** 2
    dt_ds = math.pi * torch.sin(math.pi * s / 2) * torch.cos(math.pi * s / 2)
    mix = mixing(t, p_uniform, 1.0, N)
    on_x, on_mask, on_other = elbo_weights(t, mix, N)
    logits = torch.zeros(len(t), V)
    logits[:, :5] = -1e9
    x = torch.full((len(t),), 7)
    noise = torch.stack([mix[k] for k in ("alpha", "mask", "uniform")], 1).float()
    terms = [gidd_elbo(logits, x, z, noise, N).double() for z in (x, torch.full_like(x, 3), torch.full_like(x, 9))]
    a, m, u = mix["alpha"], mix["mask"], mix["uniform"]
    expected = (a + u) * on_x * terms[0] + m * on_mask * terms[1]
    if p_uniform:
        expected = expected + (N - 1) * u * on_other * terms[2]
    assert float(torch.trapezoid(expected * dt_ds, s)) == pytest.approx(math.log(N), abs=2e-4)


def test_a_gidd_run_trains_validates_scores_and_refuses_in_one_line(data_dir, tmp_path, cli):
    from hybridlm.train import train

    diffusion = train(tiny_config(data_dir, tmp_path / "d", objective="diffusion", max_steps=6, eval_interval=6),
                      quiet=True)  # fmt: skip
    same = train(tiny_config(data_dir, tmp_path / "g0", objective="gidd", max_steps=6, eval_interval=6), quiet=True)
    assert (same["val_loss"], same["val_bpb"]) == (diffusion["val_loss"], diffusion["val_bpb"])  # p = 0: diffusion
    run = tiny_config(data_dir, tmp_path / "g", objective="gidd", max_steps=6, eval_interval=6,
                      options={"p_uniform": 0.1, "loss_weighting": "dynamic"})  # fmt: skip
    noisy = train(run, quiet=True)
    assert math.isfinite(noisy["val_bpb"]) and noisy["val_bpb"] != same["val_bpb"]
    bad = cli("train", "--data", data_dir, "--out", tmp_path / "bad", "--objective", "gidd", "--p-uniform", "1",
              "--loss-weighting", "dynamic", check=False)  # fmt: skip
    assert_one_line_error(bad, "p_uniform 1 takes elbo or clip")
    assert not (tmp_path / "bad").exists()
    text = tmp_path / "text.txt"
    text.write_text("the cat runs .\n")
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "p.jsonl").write_text('{"sentence_good": "a cat runs .", "sentence_bad": "a cat run ."}\n')
    for command in (("perplexity", "--input", text), ("blimp", "--data", tmp_path / "pairs")):
        cli("eval", *command[:1], "--run", tmp_path / "g", *command[1:])
    scored = json.loads((tmp_path / "g" / "eval" / "perplexity.json").read_text())
    assert "gidd-elbo" in scored and math.isfinite(scored["gidd-elbo"]["bits_per_byte"])
    bad = cli("eval", "blimp", "--run", tmp_path / "g", "--data", tmp_path / "pairs", "--scorer", "elbo", check=False)
    assert_one_line_error(bad, "supports gidd-elbo")


@pytest.mark.parametrize(
    "noise",
    [
        ("--p-uniform", "0.2", "--loss-weighting", "dynamic"),
        ("--p-uniform", "1", "--duo-curriculum-end", "0.5", "--duo-curriculum-start", "0.2"),
    ],
)
def test_a_killed_gidd_run_resumes_bit_identically(cli, data_dir, tmp_path, noise):
    import json

    from helpers import tiny_flags, train_until_killed

    args = ("--data", data_dir, "--objective", "gidd", *noise,
            *tiny_flags(eval_interval=0, max_steps=40), "--log-interval", 1, "--checkpoint-interval", 2,
            "--precision", "fp32")  # fmt: skip
    cli("train", *args, "--out", tmp_path / "whole")
    killed = tmp_path / "killed"
    train_until_killed(args, killed, 4)
    assert int((killed / "checkpoints" / "latest").read_text().strip().split("_")[1]) < 40
    cli("train", "--out", killed, "--resume")

    def losses(run):
        return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}

    assert losses(killed) == losses(tmp_path / "whole") and len(losses(killed)) == 40


class _Uniform(torch.nn.Module):
    """A model that predicts every text token equally, whatever it reads."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, attention, mtp=False):
        return torch.zeros(*ids.shape, 1) + 0 * self.weight

    def head(self, hidden):
        logits = torch.zeros(hidden.shape[0], V) + 0 * self.weight
        logits[:, :5] = -1e9
        return logits


@pytest.mark.parametrize("p_uniform", [0.1, 0.5, 1.0])
def test_the_validation_estimate_of_a_uniform_models_bound_is_log_n(p_uniform):
    """What validation computes (corrupt with train=False, the GIDD term's nll), averaged over many draws, is
    log N for the uniform model: the estimator covers all of (0, 1), without the bias a cut at eps would add."""
    objective = GiddObjective(V, p_uniform=p_uniform)
    estimates = []
    for seed in range(6):  # (one estimate's spread is 2% at p = 1: the rare uniform token at small t weighs 1/t)
        ids = _ids(rows=4096, length=9, seed=seed)
        batch = objective.corrupt(ids, torch.Generator().manual_seed(seed), train=False).prepared()
        estimates.append(float(TrainingLoss(_Uniform(), objective, [GiddELBO(N)])(batch)[1]["nll"][0]))
    assert sum(estimates) / len(estimates) == pytest.approx(math.log(N), rel=0.025)
