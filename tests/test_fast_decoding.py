"""Fast diffusion decoding: Fast-dLLM's threshold rounds and caches, LLaDA's guidance, and samples that
never depend on the batch they share."""

import importlib.util
import json
import sys
import types

import pytest
import torch
from helpers import SHARED, assert_one_line_error
from test_samplers import MASK, SPECIALS, Recorder, _canvas, _peaked_model

from hybridlm.errors import UserError
from hybridlm.evaluate.scoring import score_copies
from hybridlm.generate import check_decoding, generate_samples, unmask_rows
from hybridlm.objectives import BlockDiffusionObjective, DiffusionObjective
from hybridlm.runs import load_run
from hybridlm.samplers import RowRandom, Sampling, parallel_counts
from hybridlm.scorers import Copy

FAST_DLLM = SHARED.parent / "reference" / "fast-dllm" / "llada" / "generate.py"


def _sample(model, objective, x, sampling, seed=0, shift=0, use_cache=True):
    g = torch.Generator().manual_seed(seed)
    return unmask_rows(model, objective, x, MASK, sampling, g, SPECIALS, shift, use_cache)


@pytest.mark.parametrize("block_length", [0, 4])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_threshold_one_is_the_confidence_sampler_one_token_per_round(block_length, temperature):
    model, obj = _peaked_model(40, scale=6.0), DiffusionObjective(40)
    x = _canvas(5, [9, 10], 12)
    knobs = dict(block_length=block_length, temperature=temperature)
    slow, slow_calls = _sample(model, obj, x, Sampling("confidence", steps=12, **knobs))
    fast, fast_calls = _sample(model, obj, x, Sampling("confidence", steps=0, threshold=1.0, **knobs))
    assert torch.equal(slow, fast) and torch.equal(slow_calls, fast_calls)
    assert (fast_calls == 12).all() and not (fast == MASK).any()


def test_a_lower_threshold_takes_fewer_calls_and_steps_stay_an_upper_bound():
    model, obj = _peaked_model(40, scale=25.0), DiffusionObjective(40)  # sure of some tokens
    x = _canvas(4, [9], 16)
    calls = {tau: _sample(model, obj, x, Sampling("confidence", steps=0, threshold=tau))[1] for tau in (1.0, 0.9, 0.5)}
    assert (calls[1.0] == 16).all() and (calls[0.5] <= calls[0.9]).all() and (calls[0.9] <= calls[1.0]).all()
    assert (calls[0.5] < 16).any()
    out, bounded = _sample(model, obj, x, Sampling("confidence", steps=3, threshold=0.999))
    assert (bounded <= 3).all() and not (out == MASK).any()


def test_the_factor_rule_reveals_the_longest_run_of_sure_tokens():
    confidence = torch.tensor([[0.99, 0.3, 0.9, 0.8, 0.0], [0.2, 0.1, 0.05, 0.0, 0.0]], dtype=torch.float64)
    masked = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    # sorted 0.99, 0.9, 0.8, 0.3 against 1 - f/(n+1) with f = 1: (any), 0.667, 0.75, 0.8 -> three; the second
    # row's best is unsure: one
    got = parallel_counts(Sampling(threshold_factor=1.0), confidence, masked)
    assert got.tolist() == [3, 1]
    assert parallel_counts(Sampling(threshold_factor=0.1), confidence, masked).tolist() == [1, 1]
    assert parallel_counts(Sampling(threshold=0.85), confidence, masked).tolist() == [2, 1]


def _fast_dllm():
    if not FAST_DLLM.is_file():
        pytest.skip(f"Fast-dLLM's reference code is not at {FAST_DLLM}")
    pytest.importorskip("transformers")
    stub = types.ModuleType("model.modeling_llada")
    stub.LLaDAModelLM = object  # its model class: imported at the top, not used by the functions compared
    sys.modules.setdefault("model", types.ModuleType("model"))
    sys.modules.setdefault("model.modeling_llada", stub)
    spec = importlib.util.spec_from_file_location("fast_dllm_generate", FAST_DLLM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _AsLLaDA(torch.nn.Module):
    """hlm's model as Fast-dLLM's code calls LLaDA: model(x).logits, the tokens hlm forbids at -inf."""

    def __init__(self, model):
        super().__init__()
        self.model, self.device = model, torch.device("cpu")

    def forward(self, x):
        logits = self.model(x, False, logits=True).float()
        logits[..., SPECIALS] = float("-inf")
        return types.SimpleNamespace(logits=logits)


@pytest.mark.parametrize("threshold", [0.9, 0.6])
@pytest.mark.parametrize("block_length", [4, 12])
def test_threshold_decoding_is_fast_dllms(threshold, block_length):
    """Greedy threshold decoding over semi-autoregressive blocks, token for token and call for call
    against Fast-dLLM's own `generate` (imported from ../shared/reference/fast-dllm)."""
    reference = _fast_dllm()
    model, obj = _peaked_model(40, seed=5, scale=10.0), DiffusionObjective(40)
    for prompt in ([9, 10, 11], [20]):
        x = _canvas(1, prompt, 12)
        ours, calls = _sample(model, obj, x, Sampling("confidence", steps=0, threshold=threshold,
                                                      block_length=block_length, temperature=0.0))  # fmt: skip
        theirs, nfe = reference.generate(
            _AsLLaDA(model), x[:, : 1 + len(prompt)], steps=12, gen_length=12, block_length=block_length,
            temperature=0.0, mask_id=MASK, threshold=threshold,
        )  # fmt: skip
        assert torch.equal(ours, theirs) and int(calls[0]) == nfe


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_a_cache_refreshed_every_round_is_no_cache(cache, shift, cfg_scale):
    model, obj = _peaked_model(40, scale=6.0), DiffusionObjective(40)
    x = _canvas(4, [9, 10], 12)
    knobs = dict(steps=12, block_length=4, cfg_scale=cfg_scale)
    plain, plain_calls = _sample(model, obj, x, Sampling("confidence", **knobs), shift=shift)
    cached, calls = _sample(model, obj, x, Sampling("confidence", cache=cache, cache_refresh=1, **knobs), shift=shift)
    assert torch.equal(plain, cached) and torch.equal(plain_calls, calls)
    for tau in (0.5, None):  # the approximate cache, with and without a threshold: complete samples, the prompt kept
        out, _ = _sample(model, obj, x, Sampling("confidence", cache=cache, threshold=tau, **knobs), shift=shift)
        assert not (out == MASK).any() and torch.equal(out[:, :3], x[:, :3])


@pytest.mark.parametrize("cache, refresh", [("prefix", None), ("dual", None), ("dual", 2)])
def test_a_cache_reads_only_its_window_between_refreshes(cache, refresh):
    model, obj = Recorder(_peaked_model(40)), DiffusionObjective(40)
    x = _canvas(2, [9], 12)  # 2 + 12 positions, blocks of 4 from position 2
    _, calls = _sample(model, obj, x, Sampling("confidence", steps=12, block_length=4, cache=cache,
                                               cache_refresh=refresh))  # fmt: skip
    widths = [seen.shape[1] for seen in model.seen]
    assert (calls == 12).all() and len(widths) == 12  # every row in every call: one forward each
    every = refresh or 4
    for i, width in enumerate(widths):
        block, round_ = divmod(i, 4)
        if round_ % every == 0:
            assert width == 14  # a refresh reads the whole canvas
        else:
            assert width == (4 if cache == "dual" else 14 - 2 - 4 * block)


@pytest.mark.parametrize("sampler", ["confidence", "ancestral"])
def test_block_diffusion_keeps_its_exact_cache(sampler):
    model, obj = _peaked_model(48, seed=2, scale=4.0), BlockDiffusionObjective(48, block_size=4)
    x = _canvas(3, [7, 8], 13)
    sampling = Sampling(sampler, steps=0, threshold=0.6 if sampler == "confidence" else None)
    cached, _ = _sample(model, obj, x, sampling, use_cache=True)
    plain, _ = _sample(model, obj, x, sampling, use_cache=False)
    assert torch.equal(cached, plain)
    with pytest.raises(UserError, match="exactly"):
        check_decoding(obj, Sampling(block_length=4, cache="dual"))


def test_guidance_zero_is_none_and_guidance_costs_two_evaluations():
    model, obj = _peaked_model(40, scale=6.0), DiffusionObjective(40)
    x = _canvas(3, [9, 10, 11], 8)
    plain, calls = _sample(model, obj, x, Sampling("confidence", steps=8))
    zero, zero_calls = _sample(model, obj, x, Sampling("confidence", steps=8, cfg_scale=0.0))
    guided, guided_calls = _sample(model, obj, x, Sampling("confidence", steps=8, cfg_scale=3.0))
    assert torch.equal(plain, zero) and torch.equal(calls, zero_calls)
    assert torch.equal(guided_calls, 2 * calls) and not torch.equal(plain, guided)


def test_guided_bound_is_llada_rule(runs):
    """score_copies with cfg_scale w reads u + (w + 1)(c - u), u with the context (after <s>) masked."""
    from hybridlm.evaluate.lm import RunLM

    lm = RunLM(runs["diffusion"])
    ids = [1, 11, 12, 13, MASK, MASK]
    copy = Copy(0, ids, positions=[4, 5], targets=[20, 21], weight=0.5, context=4)
    got = score_copies(lm, [copy], 1, False, cfg_scale=2.0)[0]
    with torch.no_grad():
        cond = lm.run.model(torch.tensor([ids]), False, logits=True)[0].float()
        uncond = lm.run.model(torch.tensor([[1, MASK, MASK, MASK, MASK, MASK]]), False, logits=True)[0].float()
    guided = (uncond + 3.0 * (cond - uncond)).log_softmax(-1)
    want = 0.5 * (guided[4, 20] + guided[5, 21]).item()
    assert got == pytest.approx(want, abs=1e-4)
    assert score_copies(lm, [copy], 1, False, cfg_scale=0.0)[0] != pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize(
    "knobs",
    [dict(threshold=0.5, block_length=4), dict(threshold=0.5, block_length=4, cache="dual"),
     dict(sampler="ancestral", block_length=4),
     dict(sampler="first-hitting", block_length=4), dict(sampler="remdm", eta=0.3, block_length=4)],
)  # fmt: skip
def test_a_row_draws_the_same_alone_as_beside_rows_that_finish_sooner(knobs):
    """Rows that finish a block in fewer rounds (a threshold, chance) must not change what the others draw."""
    model, obj = _peaked_model(40, scale=25.0), DiffusionObjective(40)  # sure of some tokens: rows differ in rounds
    x = _canvas(6, [9], 16)
    sampling = Sampling(**{"sampler": "confidence", "steps": 0 if "threshold" in knobs else 16, **knobs})
    many, calls = unmask_rows(model, obj, x, MASK, sampling, RowRandom.seeded(3, 6), SPECIALS)
    few, _ = unmask_rows(model, obj, x[:2], MASK, sampling, RowRandom.seeded(3, 2), SPECIALS)
    assert torch.equal(many[:2], few)
    if "threshold" in knobs:
        assert len(set(calls.tolist())) > 1  # the rows did finish in different numbers of rounds


SETTINGS = [
    {},
    {"threshold": 0.7, "steps": 0},
    {"block_length": 4, "cache": "prefix"},
    {"block_length": 4, "cache": "dual", "threshold": 0.7, "steps": 0},
    {"block_length": 4, "cache": "dual", "cache_refresh": 2, "threshold_factor": 1.0, "steps": 0},
]


@pytest.mark.parametrize("knobs", SETTINGS)
def test_sample_i_does_not_depend_on_the_batch(runs, knobs):
    run = load_run(runs["diffusion"], "cpu")
    sampling = Sampling("confidence", **{"steps": 8, **knobs})
    every = generate_samples(run, "the", 8, sampling, num_samples=5, seed=3).texts
    assert len(set(every)) > 1  # the rows differ: each draws from its own stream
    for n, batch in ((1, None), (3, None), (5, 2), (4, 3)):
        assert generate_samples(run, "the", 8, sampling, n, seed=3, batch_size=batch).texts == every[:n]


def test_causal_sample_i_does_not_depend_on_the_batch(runs):
    run = load_run(runs["causal"], "cpu")
    every = generate_samples(run, "the", 6, Sampling(), num_samples=4, seed=1).texts
    assert generate_samples(run, "the", 6, Sampling(), 2, seed=1, batch_size=1).texts == every[:2]


def test_fast_decoding_from_the_cli(cli, runs):
    args = ("generate", "--run", runs["diffusion"], "--prompt", "the", "--max-new-tokens", 8, "--num-samples", 3)
    slow = cli(*args, "--block-length", 4, "--steps", 8)
    fast = cli(*args, "--block-length", 4, "--threshold", 0.9, "--cache", "dual", "--batch-size", 2)
    assert len(fast.stdout.strip().split("\n")) == 3 and "network calls each" in fast.stderr
    assert len(slow.stdout.strip().split("\n")) == 3
    one = cli("generate", "--run", runs["diffusion"], "--prompt", "the", "--max-new-tokens", 8, "--block-length", 4,
              "--threshold", 0.9, "--cache", "dual")  # fmt: skip
    assert one.stdout.split("\n")[0] == fast.stdout.split("\n")[0]  # sample 0 alone is sample 0 of three
    filled = cli("infill", "--run", runs["diffusion"], "--text", "the <mask> sat .", "--span", 4, "--block-length", 2,
                 "--cache", "prefix", "--threshold", 0.8)  # fmt: skip
    assert "<mask>" not in filled.stdout


@pytest.mark.parametrize(
    "extra, words",
    [
        (("--threshold", 0), "--threshold"),
        (("--threshold", 1.5), "--threshold"),
        (("--threshold-factor", "nan"), "--threshold-factor"),
        (("--block-length", 4, "--cache", "dual", "--cache-refresh", 0), "--cache-refresh"),
        (("--cfg-scale", "inf"), "--cfg-scale"),
        (("--cfg-scale", "nan"), "--cfg-scale"),
        (("--cfg-scale", 1), "--prompt"),
        (("--cache", "dual"), "--block-length"),
        (("--cache-refresh", 2), "--cache"),
        (("--sampler", "ancestral", "--threshold", 0.9), "--threshold"),
        (("--threshold", 0.9, "--threshold-factor", 1), "not both"),
        (("--block-length", 4, "--steps", 3, "--cache", "prefix"), "one round per block"),
    ],
)
def test_bad_fast_decoding_is_one_line(cli, runs, extra, words):
    proc = cli("generate", "--run", runs["diffusion"], "--max-new-tokens", 12, *extra, check=False)
    assert_one_line_error(proc, words)


def test_a_causal_run_refuses_diffusion_decoding(cli, runs):
    proc = cli("generate", "--run", runs["causal"], "--threshold", 0.9, check=False)
    assert_one_line_error(proc, "left to right")
    proc = cli("eval", "harness", "--run", runs["causal"], "--tasks", "x", "--cfg-scale", 1, check=False)
    assert_one_line_error(proc, "--cfg-scale")


def test_harness_generates_with_cache_and_threshold(runs, tmp_path):
    """A local generate_until task through `hlm eval harness`: the fast setting answers every request, and
    the knobs are kept in the result."""
    pytest.importorskip("lm_eval")
    from hybridlm.evaluate.harness import run_harness

    docs = tmp_path / "generate.jsonl"
    docs.write_text('{"prompt": "the cat", "answer": " runs"}\n{"prompt": "two dogs", "answer": " sleep"}\n')
    (tmp_path / "t_generate.yaml").write_text(json.dumps({
        "task": "t_generate", "dataset_path": "json", "test_split": "test", "output_type": "generate_until",
        "dataset_kwargs": {"data_files": {"test": str(docs)}}, "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["."], "max_gen_toks": 6, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}],
    }))  # fmt: skip
    result = run_harness(run=runs["diffusion"], tasks="t_generate", include_path=tmp_path, log_samples=True,
                         block_length=2, threshold=0.9, cache="dual")  # fmt: skip
    answers = [r[0] for r in (s["resps"] for s in result["samples"]["t_generate"])]
    assert len(answers) == 2 and result["sampling"]["cache"] == "dual" and result["sampling"]["threshold"] == 0.9
