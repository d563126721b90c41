"""Issue 40, parts 2-4: uniform-state noise (p_uniform = 1) and its bound (Duo's, imported), GIDD's bound as a
sentence scorer, the reverse process that redraws every position (`denoise`), GIDD's self-correction, gidd in a
mix and in an export."""

import importlib.util
import json
import math
import sys
import types

import pytest
import torch
from helpers import SHARED, assert_one_line_error, tiny_config, tiny_flags

from hybridlm.evaluate.lm import ScoringLM
from hybridlm.evaluate.scoring import score_completions, score_sentences
from hybridlm.losses import GiddELBO, TokenCE, TrainingLoss
from hybridlm.model import build_model
from hybridlm.objectives import CausalObjective, GiddObjective
from hybridlm.objectives.gidd import elbo_weights, gidd_elbo, mixing

DUO = SHARED.parent / "reference" / "duo"
V = 45
N = V - 5


def _duo():
    if not (DUO / "algo.py").is_file():
        pytest.skip(f"Duo's reference code is not at {DUO}")
    pytest.importorskip("fsspec")
    for name in ("trainer_base", "utils"):  # (not in the snapshot; the loss does not use them)
        sys.modules.setdefault(name, types.ModuleType(name))
    for base in ("TrainerBase", "AbsorbingState", "UniformState"):
        if not hasattr(sys.modules["trainer_base"], base):
            setattr(sys.modules["trainer_base"], base, type(base, (), {}))
    spec = importlib.util.spec_from_file_location("duo_reference_algo", DUO / "algo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_uniform_state_bound_is_duos():
    """p_uniform = 1: hlm's bound per token equals UDLM's as Duo computes it (`DUO_BASE.nll_per_token`, alpha_t =
    1 - t, its derivative -1), in Duo's vocabulary (the N text tokens)."""
    algo = _duo()
    g = torch.Generator().manual_seed(0)
    B, L = 5, 7
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    x = torch.randint(5, V, (B, L), generator=g)
    z = torch.where(torch.rand(B, L, generator=g) < 0.5, x, torch.randint(5, V, (B, L), generator=g))
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    logits[..., :5] = -1e9
    mix = mixing(t, 1.0, 1.0, N)
    on_x, on_mask, on_other = (w[:, None].expand(B, L) for w in elbo_weights(t, mix, N))
    assert not on_mask.any() and not mix["mask"].any()  # no <mask> in uniform-state noise
    weight = torch.where(z == x, on_x, on_other)
    noise = torch.stack([mix[k][:, None].expand(B, L) for k in ("alpha", "mask", "uniform")], -1).reshape(-1, 3)
    ours = weight.reshape(-1) * gidd_elbo(logits.reshape(-1, V), x.reshape(-1), z.reshape(-1), noise, N).double()
    duo = algo.DUO_BASE.nll_per_token(types.SimpleNamespace(vocab_size=N), torch.log_softmax(logits[..., 5:], -1),
                                      z - 5, x - 5, (1 - t)[:, None].expand(B, L), -torch.ones(B, L))  # fmt: skip
    torch.testing.assert_close(ours.view(B, L), duo.double(), rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize("p_uniform", [0.3, 1.0])
def test_the_reverse_step_reverses_the_forward_process(p_uniform):
    """The transition q_{t|s} behind `posterior` carries q_s(.|x) to q_t(.|x) for every x, and the reverse step is
    Bayes' rule with it: p(z_s = y | z_t) = q_s(y | x_hat) q_{t|s}(z_t | y) / q_t(z_t | x_hat)."""
    objective = GiddObjective(V, p_uniform=p_uniform)
    t, s = 0.7, 0.4

    def marginal(time, x):  # q_time(. | x) over the vocabulary, x a distribution [V]
        m = objective.mixing(torch.tensor([time], dtype=torch.float64))
        out = float(m["alpha"]) * x
        out[3] += float(m["mask"])
        out[5:] += float(m["uniform"])
        return out

    eye = torch.eye(V, dtype=torch.float64)
    at, as_ = (objective.mixing(torch.tensor([v], dtype=torch.float64)) for v in (t, s))
    ratio = float(at["alpha"] / as_["alpha"])
    gamma = marginal(t, torch.zeros(V, dtype=torch.float64)) - ratio * marginal(s, torch.zeros(V, dtype=torch.float64))
    assert (gamma >= -1e-12).all()  # a transition: no negative probability
    transition = ratio * eye + gamma[None]  # [y, z]
    for x in (5, 17, 2):  # text tokens and a special one (</s>)
        torch.testing.assert_close(marginal(s, eye[x]) @ transition, marginal(t, eye[x]))
    x_hat = torch.softmax(torch.randn(V, dtype=torch.float64), 0)
    x_hat[:5] = 0
    x_hat /= x_hat.sum()
    for z_t in (3, 9) if p_uniform < 1 else (9, 30):
        post = objective.posterior(x_hat[None, None], torch.tensor([[z_t]]), t, s)[0, 0]
        bayes = marginal(s, x_hat) * transition[:, z_t]
        torch.testing.assert_close(post, bayes / bayes.sum())


class _UniformLM(ScoringLM):
    """A scoring view of a model that predicts every text token equally."""

    def __init__(self, objective):
        self.objective, self.bos_id, self.mask_id, self.max_len, self.name = objective, 1, 3, 64, "uniform"

    def tokenize_offsets(self, text):
        ids = [5 + (ord(c) % N) for c in text.replace(" ", "")]
        return ids, [True] * len(ids), [(i, i + 1) for i in range(len(ids))]

    def selected_logits(self, ids, lengths, attention, select):
        logits = torch.zeros(int(select.sum()), V)
        logits[:, :5] = -1e9
        return logits


@pytest.mark.parametrize("p_uniform", [0.2, 1.0])
def test_the_gidd_scorer_gives_a_uniform_model_n_log_n(p_uniform):
    """The gidd-elbo scorer (GIDD's bound at a stratified grid of times, through hlm's scoring engine) of a text of
    n tokens under the uniform model is n log N: averaged over many draws, to a few percent."""
    lm = _UniformLM(GiddObjective(V, p_uniform=p_uniform))
    assert lm.scorers == ("gidd-elbo",)
    texts = [("".join(chr(97 + (i * 7 + k) % 26) for k in range(6)), 0, i) for i in range(1000)]  # (own draws)
    scores = score_completions(lm, texts, samples=2)
    assert -sum(scores) / len(scores) == pytest.approx(6 * math.log(N), rel=0.03)
    # a minimal pair (two texts of one length) shares its draws: equal texts, equal scores
    assert score_sentences(lm, ["abcdef", "abcdef"]) == score_sentences(lm, ["abcdef"]) * 2


def test_token_ce_rows_through_the_gidd_term_are_their_ce():
    """In a mix, the rows of a CE objective reach GIDD's term as rows without noise (alpha 1): their loss is their
    token CE (<mask> never predicted, as the mix says of every row)."""
    torch.manual_seed(0)
    model = build_model("tiny", V)
    ids = torch.randint(5, V, (3, 12))
    ids[:, 0] = 1
    batch = CausalObjective(V).corrupt(ids, torch.Generator().manual_seed(0))
    noise = torch.zeros(*batch.input_ids.shape, 4)
    noise[..., 0], noise[..., 3] = 1.0, batch.loss_weights
    gidd = TrainingLoss(model, GiddObjective(V, p_uniform=0.3), [GiddELBO(N)])
    plain = TrainingLoss(model, GiddObjective(V, p_uniform=0.3), [TokenCE()])
    a, _ = gidd(type(batch)(**{**batch.__dict__, "noise": noise}).prepared())
    b, _ = plain(batch.prepared())
    assert float(a.detach()) == pytest.approx(float(b.detach()), abs=1e-5)


@pytest.fixture(scope="module")
def gidd_runs(data_dir, tmp_path_factory):
    from hybridlm.train import train

    out = tmp_path_factory.mktemp("gidd")
    for name, options in (("p30", {"p_uniform": 0.3}), ("p100", {"p_uniform": 1.0})):
        train(tiny_config(data_dir, out / name, objective="gidd", max_steps=30, eval_interval=30, options=options),
              quiet=True)  # fmt: skip
    train(tiny_config(data_dir, out / "diffusion", objective="diffusion", max_steps=30, eval_interval=30), quiet=True)
    train(tiny_config(data_dir, out / "causal", objective="causal", max_steps=4, eval_interval=4), quiet=True)
    return out


@pytest.mark.parametrize("name", ["p30", "p100"])
def test_denoise_generation_redraws_every_position_and_infills(gidd_runs, name):
    from hybridlm.generate import generate_samples, infill_text, sampling_of
    from hybridlm.runs import load_run

    run = load_run(gidd_runs / name)
    sampling = sampling_of(steps=6)
    samples = generate_samples(run, "the cat", 12, sampling, num_samples=3, seed=4)
    assert samples.nfe == [6, 6, 6] and all(len(ids) <= 12 for ids in samples.token_ids)
    assert all(3 not in ids for ids in samples.token_ids)  # never <mask>
    again = generate_samples(run, "the cat", 12, sampling, num_samples=1, seed=4, first_index=2)
    assert again.texts == samples.texts[2:]  # sample i is the same text whatever the batch
    filled = infill_text(run, "the <mask> sees <mask> .", span=2, seed=1, steps=4)
    assert filled.startswith("the") and " sees" in filled and filled.endswith(" .") and "<mask>" not in filled


def test_self_correction(gidd_runs, cli, tmp_path):
    from hybridlm.generate import generate_samples, sampling_of
    from hybridlm.runs import load_run

    for name in ("p30", "diffusion"):
        run = load_run(gidd_runs / name)
        plain = generate_samples(run, "the", 10, sampling_of(steps=5), num_samples=4, seed=2)
        zero = generate_samples(run, "the", 10, sampling_of(steps=5, self_correct=0), num_samples=4, seed=2)
        assert (zero.token_ids, zero.nfe) == (plain.token_ids, plain.nfe)  # zero rounds: no self-correction
        fixed = generate_samples(run, "the", 10, sampling_of(steps=5, self_correct=8), num_samples=4, seed=2)
        assert all(5 <= n <= 5 + 8 for n in fixed.nfe) and max(fixed.nfe) > 5
        changed = [sum(a != b for a, b in zip(x, y)) for x, y in zip(plain.token_ids, fixed.token_ids)]
        assert all(n <= 8 for n in changed) and any(changed)  # one token a round at most
        assert all(len(x) == len(y) for x, y in zip(plain.token_ids, fixed.token_ids))  # lengths kept
    bad = cli("generate", "--run", gidd_runs / "causal", "--self-correct", "3", check=False)
    assert_one_line_error(bad, "reads only the next token")
    bad = cli("generate", "--run", gidd_runs / "p30", "--sampler", "confidence", check=False)
    assert_one_line_error(bad, "redraws every position each round")
    cli("eval", "generation", "--run", gidd_runs / "p30", "--num-samples", "2", "--length", "8", "--steps", "4",
        "--self-correct", "4")  # fmt: skip
    result = json.loads((gidd_runs / "p30" / "eval" / "generation-ancestral-correct4-steps4.json").read_text())
    assert result["sampler"] == "ancestral" and result["sampling"]["self_correct"] == 4
    cli("eval", "generation", "--run", gidd_runs / "p30", "--num-samples", "2", "--length", "8", "--steps", "4")
    cli("report", gidd_runs / "p30", "--out", tmp_path / "rep", "--no-samples")
    report = (tmp_path / "rep" / "report.md").read_text()  # both ways of decoding: a row each
    assert "| ancestral | 4 |" in report and "| ancestral self-correct 4 | 4 |" in report


def test_gidd_mixes_and_exports(data_dir, tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    from hybridlm.runs import load_run

    cli("train", "--data", data_dir, "--out", tmp_path / "mix", "--objective", "mix", "--mix", "causal:1,gidd:1",
        "--p-uniform", "0.2", *tiny_flags(max_steps=4, eval_interval=4))  # fmt: skip
    last = json.loads((tmp_path / "mix" / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(last["val_ce_gidd"]) and math.isfinite(last["val_ce_causal"])
    cli("train", "--data", data_dir, "--out", tmp_path / "g", "--objective", "gidd", "--p-uniform", "1",
        *tiny_flags(max_steps=2, eval_interval=0))  # fmt: skip
    cli("export", "--run", tmp_path / "g", "--out", tmp_path / "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", trust_remote_code=True,
                                                           dtype=torch.float32).eval()  # fmt: skip
    ids = torch.randint(5, 300, (2, 16))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, load_run(tmp_path / "g").model(ids, False, logits=True), atol=1e-4)


def test_duos_curriculum_draws_uniform_state_noise_and_ends_where_asked():
    """Duo's curriculum: the argmax of its Gaussian latent is uniform-state noise with alpha(gamma) (`duo_alpha`,
    checked by the share of z_t = x over many draws), the model's soft input is a distribution whose argmax is z_t,
    the temperature falls log-linearly from its start to its end, and past its end the batch is the plain one."""
    objective = GiddObjective(V, p_uniform=1.0, duo_curriculum_end=0.5, duo_curriculum_start=0.2)
    ids = torch.randint(5, V, (64, 257), generator=torch.Generator().manual_seed(0))
    batch = objective.corrupt(ids, torch.Generator().manual_seed(1), fraction_done=0.1)
    x = ids[:, :-1]
    alpha = batch.noise[:, 0, 0].double()
    expected = alpha + (1 - alpha) / N  # P(z = x) of uniform-state noise
    kept = (batch.input_ids == x).double().mean(1)
    spread = (expected * (1 - expected) / x.shape[1]).sqrt()
    assert float(((kept - expected) / spread).mean().abs()) < 3 / 8  # the mean of 64 standardised rows
    assert torch.equal(batch.soft_inputs.argmax(-1), batch.input_ids)
    torch.testing.assert_close(batch.soft_inputs.sum(-1), torch.ones(64, 256))
    assert objective.duo_temperature(0.1) == pytest.approx(0.1) and objective.duo_temperature(0.5) == pytest.approx(
        0.01
    )
    assert objective.duo_temperature(0.35) == pytest.approx(10**-1.5)
    late = objective.corrupt(ids, torch.Generator().manual_seed(1), fraction_done=0.5)
    plain = GiddObjective(V, p_uniform=1.0).corrupt(ids, torch.Generator().manual_seed(1), fraction_done=0.5)
    assert late.soft_inputs is None and torch.equal(late.input_ids, plain.input_ids)
    assert torch.equal(late.noise, plain.noise)
    with pytest.raises(Exception, match="add --p-uniform 1"):
        GiddObjective(V, p_uniform=0.5, duo_curriculum_end=0.2)
