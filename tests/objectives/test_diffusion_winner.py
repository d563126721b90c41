"""The 2025 BabyLM diffusion winner's noise schedules against its own masking/noise_schedules.py: alpha(t), the
mask probabilities and the loss weights at the same point of the schedule and the same step."""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import SHARED

from hybridlm.objectives.diffusion import DiffusionObjective

SCHEDULES = SHARED.parent / "reference" / "babylm-diffusion" / "masking" / "noise_schedules.py"
GAUSS = dict(gaussian_mu=0.2, gaussian_sigma=0.12)  # the reference's defaults
# slurm-scripts/config-gauss.json, the submitted bimodal run
BIMODAL = dict(bimodal_left_mean=0.12, bimodal_left_std=0.02, bimodal_right_initial=0.4, bimodal_right_final=0.85,
               bimodal_right_std=0.08, bimodal_exp_rate=1.0, bimodal_weight_left=0.6)  # fmt: skip


@pytest.fixture(scope="module")
def reference():
    if not SCHEDULES.is_file():
        pytest.skip(f"{SCHEDULES} not found (the reference implementations live in ../shared/reference)")
    spec = importlib.util.spec_from_file_location("winner_noise_schedules", SCHEDULES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MaskingStrategies


def _theirs(reference, monkeypatch, u, step=1, **args):
    """The reference's (mask probabilities, loss weights) at global_step `step` with its uniform draws fixed to u."""
    monkeypatch.setattr(reference, "sample_low_discrepancy", staticmethod(lambda n, device: u.clone()))
    off = dict(cosine_squared=False, cosine_linear=False, uniform_schedule=False, gaussian_schedule=False,
               bimodal_gaussian_schedule=False)  # fmt: skip
    namespace = SimpleNamespace(**{**off, **args})
    return reference.get_batch_mask_probabilities_and_weights(namespace, step, torch.device("cpu"), len(u))


T = torch.tensor([0.001, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.999])


@pytest.mark.parametrize("power", [1.0, 0.1])
def test_the_gaussian_schedule_is_the_winners(reference, monkeypatch, power):
    mask_p, weights = _theirs(reference, monkeypatch, 1 - T, gaussian_schedule=True, gaussian_power=power, **GAUSS)
    ours = DiffusionObjective(64, schedule="gaussian", loss_weight_power=power, **GAUSS)
    alpha, weight = ours.schedule_at(T, torch.Generator().manual_seed(0))
    assert torch.allclose(1 - alpha, mask_p, rtol=1e-5, atol=1e-6)
    assert torch.allclose(weight, weights, rtol=1e-4)
    assert (1 - alpha).argsort().tolist() == list(range(len(T)))  # masked more as t grows, as hlm's schedules


@pytest.mark.parametrize("share", [1.0, 0.0], ids=["left-mode", "right-mode"])
@pytest.mark.parametrize("step", [0, 300, 1000])
def test_the_bimodal_schedule_is_the_winners_on_each_mode_at_each_step(reference, monkeypatch, share, step):
    """Each mode alone (the reference draws a sequence's mode with torch.rand < share: always or never here),
    at the start, during and at the end of training (the right mode's mean moves)."""
    max_steps, args = 1000, {**BIMODAL, "bimodal_weight_left": share}
    mask_p, weights = _theirs(reference, monkeypatch, 1 - T, step, bimodal_gaussian_schedule=True,
                              gaussian_power=0.1, max_steps=max_steps, **args)  # fmt: skip
    ours = DiffusionObjective(64, schedule="bimodal-gaussian", loss_weight_power=0.1, **args)
    alpha, weight = ours.schedule_at(T, torch.Generator().manual_seed(0), done=step / max_steps)
    assert torch.allclose(1 - alpha, mask_p, rtol=1e-5, atol=1e-6)
    assert torch.allclose(weight, weights, rtol=1e-4)


def _right_mean(done):
    moved = 1 - math.exp(-BIMODAL["bimodal_exp_rate"] * min(done, 1.0))
    return (
        BIMODAL["bimodal_right_initial"] + (BIMODAL["bimodal_right_final"] - BIMODAL["bimodal_right_initial"]) * moved
    )


def test_the_right_mode_moves_over_training_and_each_sequence_draws_its_mode():
    ours = DiffusionObjective(64, schedule="bimodal-gaussian", **BIMODAL)
    t = torch.full((20_000,), 0.5)  # the median of each mode: its mean mask rate
    for done in (0.0, 0.5, 1.0):
        alpha, _ = ours.schedule_at(t, torch.Generator().manual_seed(1), done=done)
        rates = 1 - alpha
        left = torch.isclose(rates, torch.tensor(BIMODAL["bimodal_left_mean"]), atol=1e-5)
        assert abs(left.float().mean().item() - 0.6) < 0.02
        assert torch.allclose(rates[~left], torch.tensor(_right_mean(done)), atol=1e-5)


def test_validation_is_the_nelbo_whatever_weights_training_uses():
    """A gaussian or bimodal run, or any schedule with gamma != 1, validates, scores and samples with the
    log-linear NELBO: the very batches a log-linear run validates on."""
    ids = torch.randint(5, 64, (8, 33), generator=torch.Generator().manual_seed(0))
    plain = DiffusionObjective(64)
    want = plain.corrupt(ids, torch.Generator().manual_seed(3), train=False)
    for options in ({"schedule": "gaussian"}, {"schedule": "bimodal-gaussian", **BIMODAL},
                    {"schedule": "cosine", "loss_weight_power": 0.5}):  # fmt: skip
        other = DiffusionObjective(64, **options)
        got = other.corrupt(ids, torch.Generator().manual_seed(3), train=False)
        assert torch.equal(got.input_ids, want.input_ids) and torch.equal(got.loss_weights, want.loss_weights)
        assert other.alpha(0.3) == plain.alpha(0.3)
        trained = other.corrupt(ids, torch.Generator().manual_seed(3), fraction_done=0.5)
        assert not torch.equal(trained.loss_weights, want.loss_weights)


def test_a_bimodal_run_trains_and_reports_a_bound(cli, data_dir, tmp_path):
    import json

    from helpers import tiny_flags

    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(objective="diffusion", schedule="bimodal-gaussian",
        loss_weight_power=0.1, bimodal_right_initial=0.4, max_steps=4, eval_interval=4, eval_batches=2))  # fmt: skip
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(last["val_bpb"]) and last["val_loss"] > 0


@pytest.fixture(scope="module")
def winner_frequency():
    root = SCHEDULES.parent.parent
    if not (root / "masking" / "frequency_masking.py").is_file():
        pytest.skip(f"{root} not found (the reference implementations live in ../shared/reference)")
    import sys

    sys.path.insert(0, str(root))  # its modules import each other from its root
    try:
        from masking.frequency_masking import FrequencyMaskingSetup
        from masking.masking_processor import MaskingProcessor
    finally:
        sys.path.remove(str(root))
    return FrequencyMaskingSetup, MaskingProcessor


@pytest.mark.parametrize("epoch", [0, 4, 9])
def test_rank_frequency_masking_is_the_winners(winner_frequency, epoch):
    """The same token counts: the rank weights, then each token's mask probability in a sequence at the same mask
    rate and epoch (its curriculum raises the exponent epoch / 9 of the way to pow_frequency)."""
    setup, processor = winner_frequency
    V = 64
    counts = torch.randperm(V, generator=torch.Generator().manual_seed(0)) * 7 + 1  # distinct: no rank ties
    weights = setup._compute_weights(counts, int(counts.sum()), "rank", 1.0, V)
    ids = torch.randint(5, V, (6, 40), generator=torch.Generator().manual_seed(1))
    mask_p = torch.tensor([0.05, 0.15, 0.3, 0.5, 0.7, 0.95])
    args = SimpleNamespace(pow_frequency=0.02, mask_curriculum=True)
    theirs = processor._compute_frequency_mask_probabilities(ids, mask_p, args, epoch, weights)
    ours = DiffusionObjective(V, frequency_method="rank", pow_frequency=0.02, mask_curriculum=True,
                              unigram=counts.numpy())  # fmt: skip
    assert torch.allclose(ours.rank_weights, weights)
    got = ours.frequency_mask_probabilities(ids, 1 - mask_p, done=epoch / 10)
    assert torch.allclose(got, theirs, rtol=1e-5, atol=1e-6)
    assert torch.allclose(got.mean(1), mask_p, atol=1e-4)  # each sequence keeps its mask rate


def test_a_run_with_the_winners_noise_and_rank_masking_trains(cli, data_dir, tmp_path):
    import json

    from helpers import tiny_flags

    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(objective="diffusion", schedule="bimodal-gaussian",
        loss_weight_power=0.1, frequency_method="rank", pow_frequency=0.02, mask_curriculum=True, max_steps=4,
        eval_interval=4, eval_batches=2))  # fmt: skip
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(last["val_bpb"])
    from hybridlm.runs import load_run

    assert load_run(run).objective.rank_weights is None  # evaluation needs no corpus counts: the bound is plain


def test_the_noise_embedding_is_the_winners():
    path = SCHEDULES.parent.parent / "model.py"
    if not path.is_file():
        pytest.skip(f"{path} not found (the reference implementations live in ../shared/reference)")
    spec = importlib.util.spec_from_file_location("winner_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from hybridlm.model import NoiseEmbedding

    t = torch.tensor([0.0, 0.013, 0.15, 0.5, 0.87, 1.0])
    assert torch.allclose(NoiseEmbedding.sinusoids(t, 256), module.TimestepEmbedding.timestep_embedding(t, 256))


def test_a_conditioned_model_is_told_the_share_of_its_tokens_masked():
    from hybridlm.model import build_model
    from hybridlm.objectives.base import SPECIAL

    objective = DiffusionObjective(64, time_conditioning=True)
    ids = torch.randint(5, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    ids[1, :5] = SPECIAL["mask"]
    ids[2, :] = SPECIAL["mask"]
    ids[0, -2:] = SPECIAL["pad"]  # padding is no token of the sequence
    assert objective.noise_level(ids).tolist() == [0.0, 0.5, 1.0]
    torch.manual_seed(0)
    model = build_model("tiny", 64, {"cond_dim": 16}).eval()
    objective.condition(model)
    same = torch.randint(5, 64, (1, 10))
    plain = model(same, False, logits=True)
    for p in model.adaln.parameters():  # zero at first: every level gives the same output; then it matters
        torch.nn.init.normal_(p, std=0.5)
    told = [model(same, False, logits=True)]
    model.noise_of = lambda input_ids: torch.full((len(input_ids),), 0.9)
    told.append(model(same, False, logits=True))
    assert not torch.allclose(told[0], told[1]) and not torch.allclose(plain, told[0])


def test_a_time_conditioned_run_trains_resumes_scores_samples_and_has_no_export(cli, data_dir, tmp_path):
    import json
    import shutil

    from helpers import assert_one_line_error, logged, tiny_flags

    from hybridlm.grammar import write_minimal_pairs

    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(objective="diffusion", time_conditioning=True,
        cond_dim=32, schedule="bimodal-gaussian", loss_weight_power=0.1, max_steps=6, checkpoint_interval=3,
        eval_interval=3, eval_batches=2, log_interval=1, precision="fp32"))  # fmt: skip
    straight = {key: logged(run, key) for key in ("loss", "val_loss")}
    assert math.isfinite(straight["val_loss"][6])
    from safetensors.torch import load_file

    assert any(
        k.startswith("adaln.") for k in load_file(str(run / "checkpoints" / "step_0000006" / "model.safetensors"))
    )
    shutil.rmtree(run / "checkpoints" / "step_0000006")
    (run / "checkpoints" / "latest").write_text("step_0000003\n")
    cli("train", "--out", run, "--resume")
    assert {key: logged(run, key) for key in straight} == straight
    pairs = write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=2)
    cli("eval", "blimp", "--run", run, "--data", pairs, "--json", tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["scorer"] == "elbo"
    assert cli("generate", "--run", run, "--max-new-tokens", 4, "--steps", 4).returncode == 0
    assert_one_line_error(cli("export", "--run", run, "--out", tmp_path / "hf", check=False), "no hugging face export")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("objective", ["causal", "mix"])
def test_time_conditioning_is_diffusions_alone(cli, data_dir, tmp_path, objective):
    from helpers import assert_train_refused

    flags = ["--objective", objective, "--time-conditioning"] + (
        ["--mix", "causal:1,diffusion:1"] * (objective == "mix")
    )
    assert_train_refused(cli, data_dir, tmp_path / "x", flags, "time")
