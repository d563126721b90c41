"""The objectives added on the one interface: mntp, mix (with schedules; hybrid is its preset) and prefix."""

import math
import shutil

import pytest
import torch
from helpers import assert_one_line_error, hlm, metric_rows, tiny_config, tiny_flags, torchrun

from hybridlm.config import TrainConfig
from hybridlm.errors import UserError
from hybridlm.model import PRESETS, AttentionSpec, ModelConfig, Transformer
from hybridlm.objectives import Likelihood, build_objective
from hybridlm.objectives.mix import parse_mix, parse_phases
from hybridlm.objectives.prefix import PrefixObjective


def _mix(**kw):
    return build_objective(TrainConfig(objective="mix", **kw), 300)


def test_hybrid_is_the_mix_preset():
    for f in (1 / 16, 0.25, 0.5, 1.0):
        new = build_objective(TrainConfig(objective="hybrid", causal_fraction=f), 300)
        mix = _mix(mix=f"causal:{f},mntp:{1 - f}")
        ids = torch.randint(5, 300, (16, 33), generator=torch.Generator().manual_seed(7))
        ids[:, 0] = 1
        before = ids.clone()
        for step in range(6):
            want = mix.corrupt(ids, torch.Generator().manual_seed(step), fraction_done=step / 5)
            for got in (new.corrupt(ids, torch.Generator().manual_seed(step), fraction_done=step / 5),):
                assert torch.equal(got.input_ids, want.input_ids) and torch.equal(
                    got.attention.is_causal, want.attention.is_causal
                )
                assert torch.equal(got.token_mask, want.token_mask) and torch.equal(got.targets, want.targets)
                assert torch.allclose(got.loss_weights, want.loss_weights, rtol=1e-6, atol=1e-9)
        assert torch.equal(ids, before)  # the windows are never written to


def test_rows_by_stochastic_rounding_and_weights_by_share():
    obj = _mix(mix="causal:1,mntp:2,masked:1")
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(1)
    for _ in range(300):
        b = obj.corrupt(torch.randint(5, 300, (10, 33), generator=g), g)
        n_causal = int(b.attention.is_causal.sum())
        # each objective's weights sum to its share of the rows (0 if its rows hold nothing to predict)
        assert abs(b.loss_weights[b.attention.is_causal].sum().item() - n_causal / 10) < 1e-5
        total = b.loss_weights.sum().item()
        assert min(abs(total - k / 10) for k in range(11)) < 1e-5 and total <= 1 + 1e-5
        counts[0] += n_causal
    expected = 300 * 10 / 4
    assert abs(counts[0].item() - expected) / expected < 0.03  # 2.5 causal rows a step on average
    with pytest.raises(UserError):
        parse_mix("causal=1")


def test_each_objective_keeps_its_own_weights_inside_a_mix():
    ids = torch.randint(5, 300, (8, 33), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = 1
    # alone in a mix, an objective's weights are its own: the diffusion ELBO weights (not a mean) and
    # the MTP heads' loss weights survive the mix's per-row rescaling
    for objective, kw in (("diffusion", {}), ("causal", {"mtp_heads": 3, "mtp_weights": [0.5, 0.25]})):
        alone = build_objective(TrainConfig(objective=objective, **kw), 300)
        mixed = _mix(mix=f"{objective}:1", **kw)
        g = torch.Generator().manual_seed(4)
        torch.rand((), generator=g), torch.randperm(8, generator=g)  # the mix's two draws before its objectives'
        want = alone.corrupt(ids, g)
        got = mixed.corrupt(ids, torch.Generator().manual_seed(4))
        assert torch.allclose(got.loss_weights, want.loss_weights, rtol=1e-6, atol=0), objective
        if want.extra_weights is not None:
            assert torch.allclose(got.extra_weights, want.extra_weights, rtol=1e-6, atol=0)
            assert got.extra_weights[..., 0].sum().item() == pytest.approx(0.5)
    # and within rows shared with another objective, diffusion's weights keep their ELBO proportions
    half = _mix(mix="causal:1,diffusion:1").corrupt(ids, torch.Generator().manual_seed(5))
    d = ~half.attention.is_causal
    assert half.loss_weights[d].sum().item() != pytest.approx(d.float().mean().item())  # not forced to a mean


def test_schedules_linear_and_phases():
    lin = _mix(mix="causal:1,mntp:3", mix_end="causal:1,mntp:1")
    assert lin.shares(0.0) == pytest.approx([0.25, 0.75]) and lin.shares(1.0) == pytest.approx([0.5, 0.5])
    assert lin.shares(0.5) == pytest.approx([0.375, 0.625])
    antlm = _mix(mix_phases=[[0.0, "causal:1"], [0.4, "mntp:1"], [0.8, "causal:1"]])
    assert antlm.shares(0.1) == [1.0, 0.0] and antlm.shares(0.5) == [0.0, 1.0] and antlm.shares(0.9) == [1.0, 0.0]
    b = antlm.corrupt(torch.randint(5, 300, (8, 17)), torch.Generator().manual_seed(0), fraction_done=0.5)
    assert not b.attention.is_causal.any()
    assert parse_phases(["0@causal:1", "0.5@mntp:1"]) == [(0.0, {"causal": 1.0}), (0.5, {"mntp": 1.0})]
    for bad in ([[0.2, "causal:1"]], [[0.0, "causal:1"], [0.0, "mntp:1"]], ["0:causal"]):
        with pytest.raises(UserError):
            parse_phases(bad)
    assert set(antlm.validation_views()) == {"causal", "mntp"} and antlm.capabilities.likelihood is Likelihood.EXACT


def test_mntp_scores_where_the_next_token_was_masked():
    obj = build_objective(TrainConfig(objective="mntp"), 300)
    ids = torch.randint(5, 300, (8, 65), generator=torch.Generator().manual_seed(0))
    b = obj.corrupt(ids, torch.Generator().manual_seed(1), fraction_done=0.0)
    assert (b.targets == ids[:, 1:]).all() and not b.attention.is_causal.any()
    scored = b.loss_weights > 0
    assert (b.input_ids[:, 1:][scored[:, :-1]] != ids[:, 1:-1][scored[:, :-1]]).float().mean() > 0.8  # mostly hidden
    assert 0.25 < scored.float().mean() < 0.35  # the 30% ratio at the start of training


def test_prefix_targets_only_after_the_prefix():
    obj = PrefixObjective(300, prefix_min=0.25, prefix_max=0.75)
    ids = torch.randint(5, 300, (64, 41), generator=torch.Generator().manual_seed(0))
    b = obj.corrupt(ids, torch.Generator().manual_seed(1))
    assert b.attention.is_causal.all() and (b.targets == ids[:, 1:]).all()
    for row, p in enumerate(b.attention.prefix_lengths.tolist()):
        assert 10 <= p <= 30
        weights = b.loss_weights[row]
        assert (weights[: p - 1] == 0).all() and (weights[p - 1 :] > 0).all()  # from the last prefix token on


def test_prefix_attention_never_leaks_and_sees_the_whole_prefix():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=300, **{**PRESETS["tiny"], "max_seq_len": 32})).eval()
    ids = torch.randint(5, 300, (1, 20))
    p = AttentionSpec(True, prefix_lengths=torch.tensor([8]))
    base = model(ids, p)
    later = ids.clone()
    later[0, 12] = (later[0, 12] + 1) % 300
    moved = model(later, p)
    assert torch.allclose(moved[0, :12], base[0, :12], atol=1e-6)  # a token after the prefix moves nothing before it
    assert not torch.allclose(moved[0, 12], base[0, 12])
    early = ids.clone()
    early[0, 7] = (early[0, 7] + 1) % 300  # the prefix's last token
    moved = model(early, p)
    assert not torch.allclose(moved[0, 0], base[0, 0], atol=1e-6)  # the prefix is bidirectional
    assert not torch.allclose(moved[0, 15], base[0, 15], atol=1e-6)  # and the continuation sees all of it
    assert torch.allclose(
        model(ids, AttentionSpec(True, prefix_lengths=torch.tensor([0]))), model(ids), atol=1e-6
    )  # empty prefix: causal


def test_prefix_scorer_reads_the_context_as_a_prefix(runs_extra):
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.evaluate.scoring import score_completions, score_sentences

    lm = RunLM(runs_extra["prefix"])
    sentences = ["the cat near the dogs sleeps .", "the dogs sleep ."]
    assert score_sentences(lm, sentences, "prefix") == pytest.approx(score_sentences(lm, sentences, "causal"), abs=1e-5)
    context, completion = "the cat near the dogs", " sleeps ."
    got = score_completions(lm, [(context + completion, len(context), None)], "prefix")[0]
    ctx, _ = lm.tokenize(context)
    full, _ = lm.tokenize(context + completion)
    ids = torch.tensor([[lm.bos_id] + full])
    with torch.no_grad():
        logp = torch.log_softmax(
            lm.model(ids, AttentionSpec(True, prefix_lengths=torch.tensor([len(ctx) + 1])), logits=True)[0].double(), -1
        )
    want = sum(logp[i - 1, ids[0, i]].item() for i in range(len(ctx) + 1, ids.shape[1]))
    assert got == pytest.approx(want, abs=1e-4)


@pytest.fixture(scope="module")
def runs_extra(tmp_path_factory, data_dir):
    from hybridlm.train import train

    root = tmp_path_factory.mktemp("runs_extra")
    out = {}
    for objective, extra in (
        ("prefix", {}),
        ("mix", {"mix": "causal:1,prefix:1,mntp:2", "mix_end": "causal:1,mntp:1"}),
        ("mntp", {}),
    ):
        cfg = tiny_config(data_dir, root / objective, objective=objective, max_steps=12, lr=3e-3, eval_interval=6,
                          eval_batches=2, log_interval=2, **extra)  # fmt: skip
        out[objective] = (root / objective, train(cfg, quiet=True))
    return {k: v[0] for k, v in out.items()} | {f"{k}_summary": v[1] for k, v in out.items()}


def test_new_objectives_train_validate_score_and_generate(runs_extra, tmp_path):
    from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.generate import generate_text
    from hybridlm.grammar import write_minimal_pairs
    from hybridlm.runs import load_run

    pairs = load_pairs([write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=3)])
    for name in ("prefix", "mix", "mntp"):
        summary = runs_extra[f"{name}_summary"]
        assert math.isfinite(summary["val_loss"]), name
        assert ("val_bpb" in summary) == (name != "mntp"), (
            name
        )  # a likelihood reading: prefix's empty prefix, the mix's causal rows
        result = evaluate_pairs(RunLM(runs_extra[name]), pairs)
        assert 0 <= result["macro_accuracy"] <= 1, name
    assert {"val_ce_causal", "val_ce_prefix", "val_ce_mntp"} <= set(runs_extra["mix_summary"])
    for name in ("prefix", "mix"):
        assert isinstance(generate_text(load_run(runs_extra[name]), "the", max_new_tokens=5, seed=0), str)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["mix", "distill+mtp"])
def test_resume_is_exact_and_two_processes_match_one(data_dir, tmp_path, runs, setting):
    # a scheduled mix with prefix-LM rows (both new objectives in one run), and a causal student with
    # multi-token heads distilled from a teacher run: each resumed, and under 2 processes
    objective = (
        ["--objective", "mix", "--mix", "causal:1,prefix:1,mntp:2", "--mix-end", "causal:1,mntp:1"]
        if setting == "mix"
        else ["--objective", "causal", "--mtp-heads", 2, "--distill-from", runs["hybrid"]]
    )
    args = [
        *objective,
        *tiny_flags(log_interval=1, eval_interval=0, precision="fp32", seed=5, max_steps=8, checkpoint_interval=4),
    ]
    hlm("train", "--data", data_dir, "--out", tmp_path / "one", *args)
    torchrun(2, "--data", data_dir, "--out", tmp_path / "two", *args)
    shutil.copytree(tmp_path / "one", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_0000008")
    (tmp_path / "resumed" / "checkpoints" / "latest").write_text("step_0000004\n")
    hlm("train", "--out", tmp_path / "resumed", "--resume")
    losses = {}
    for run in ("one", "two", "resumed"):
        rows = metric_rows(tmp_path / run)
        losses[run] = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses["one"]) == list(range(1, 9))
    for s in range(1, 9):
        assert losses["two"][s] == pytest.approx(losses["one"][s], rel=1e-5), s
        assert losses["resumed"][s] == pytest.approx(losses["one"][s], rel=1e-6), s
    changes = (
        (["--mix", "causal:1"], ["--prefix-min", 0.2])
        if setting == "mix"
        else (["--distill-alpha", 0.9], ["--mtp-heads", 3])
    )
    for changed in changes:  # the objectives' options (and the teachers) are the run's identity
        assert_one_line_error(
            hlm("train", "--out", tmp_path / "one", "--resume", *changed, check=False), "--resume with"
        )


def test_config_errors_are_one_line(cli, data_dir, tmp_path):
    for args, needle in (
        (["--objective", "mix"], "needs --mix"),
        (["--objective", "mix", "--mix", "hybrid:1"], "itself a mix"),
        (["--objective", "mix", "--mix", "causal:1,mntp:x"], "NAME:WEIGHT"),
        (["--objective", "mix", "--mix", "nothing:1"], "unknown objective"),
        (["--objective", "prefix", "--prefix-min", 0.9, "--prefix-max", 0.5], "prefix_min"),
    ):
        assert_one_line_error(cli("train", "--data", data_dir, "--out", tmp_path / "x", *args, check=False), needle)
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_demo_takes_a_list_of_objectives(tmp_path):
    from hybridlm.demo import run_demo

    rows = run_demo(tmp_path / "demo", steps=4, objectives=["prefix,mix"], words=20_000, pairs_per_paradigm=5)
    assert [r["objective"] for r in rows] == ["prefix", "mix"] and (tmp_path / "demo" / "runs" / "mix").is_dir()
