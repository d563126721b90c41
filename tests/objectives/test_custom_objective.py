"""An objective defined here, outside the package, with two options: it trains from CLI flags and
from TOML, refuses a changed option on --resume, validates its options, scores, says it cannot
export or generate, reports and appears in the demo, with no edit anywhere in hybridlm, because
every part of the package asks the objective (its Options and its Capabilities record)."""

import json
from dataclasses import dataclass

import pytest
import torch
from helpers import tiny_flags

from hybridlm import cli
from hybridlm.demo import run_demo
from hybridlm.errors import UserError
from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.export import export_run
from hybridlm.generate import generate_text, infill_text
from hybridlm.grammar import write_minimal_pairs
from hybridlm.model import AttentionSpec
from hybridlm.objectives import (
    OBJECTIVES,
    Attention,
    Batch,
    Capabilities,
    Likelihood,
    Objective,
    Options,
    option,
    register,
)
from hybridlm.report import make_report
from hybridlm.runs import load_run
from hybridlm.scorers import SCORERS, Copy, Scorer, register_scorer


@dataclass(frozen=True)
class PreviousTokenOptions(Options):
    reverse_fraction: float = option(
        1.0, "previous: the share of rows read right to left", check=lambda v: 0 <= v <= 1, rule="lie in [0, 1]"
    )
    skip_bos: bool = option(True, "previous: <s> is never a target")


class PreviousTokenObjective(Objective):
    """Predict the previous token (next-token prediction on the reversed window) on a share of the rows."""

    name = "previous"
    Options = PreviousTokenOptions
    # a likelihood (bits per byte), scored with the causal scorer; it neither generates, infills nor exports
    capabilities = Capabilities(Attention.CAUSAL, Likelihood.EXACT, ("causal",), loss_label="previous-token CE")

    def corrupt(self, ids, generator, fraction_done=1.0, train=True):
        n_reversed = round(self.options.reverse_fraction * len(ids))
        rows = torch.cat([ids[:n_reversed].flip(1), ids[n_reversed:]])
        inputs, targets = rows[:, :-1], rows[:, 1:]
        valid = (targets != 0) & ((targets != 1) if self.options.skip_bos else True)
        w = valid.float()
        return Batch(
            input_ids=inputs,
            targets=targets,
            loss_weights=w / w.sum().clamp(min=1),
            token_mask=valid,
            attention=AttentionSpec(torch.ones(len(ids), dtype=torch.bool)),
        )


@pytest.fixture
def registered():
    register(PreviousTokenObjective)
    yield
    OBJECTIVES.pop("previous")


def _hlm(capsys, *args) -> tuple[int, str, str]:
    try:
        cli.main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


TINY = [
    *tiny_flags(lr=0.01, eval_interval=6, eval_batches=2, log_interval=3),
]


def test_an_objective_with_options_needs_no_edit_in_the_package(cli, registered, tmp_path, data_dir, capsys):
    # trains from flags: its options are flags of hlm train, and land in the run's config
    flags = tmp_path / "flags"
    code, out, err = _hlm(
        capsys,
        "train",
        "--data",
        data_dir,
        "--out",
        flags,
        "--objective",
        "previous",
        *TINY,
        "--max-steps",
        6,
        "--reverse-fraction",
        0.5,
        "--no-skip-bos",
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["objective"] == "previous" and summary["val_bpb"] > 0  # a likelihood: bits per byte reported
    saved = json.loads((flags / "config.json").read_text())
    assert saved["reverse_fraction"] == 0.5 and saved["skip_bos"] is False
    assert "mask_ratio_start" not in saved  # only its own options

    # ... and from TOML
    toml = tmp_path / "previous.toml"
    toml.write_text('objective = "previous"\nreverse_fraction = 0.25\nmax_steps = 6\n')
    code, _, err = _hlm(capsys, "train", "--config", toml, "--data", data_dir, "--out", tmp_path / "toml", *TINY)
    assert code == 0, err
    assert json.loads((tmp_path / "toml" / "config.json").read_text())["reverse_fraction"] == 0.25
    assert "--reverse-fraction" in _hlm(capsys, "train", "--help")[1]

    # a changed option is refused on --resume (it would be another run); an unchanged one resumes
    code, _, err = _hlm(capsys, "train", "--out", flags, "--resume", "--reverse-fraction", 0.9, "--max-steps", 8)
    assert code == 2 and "reverse_fraction" in err and "0.5" in err and len(err.strip().splitlines()) == 1
    code, _, err = _hlm(capsys, "train", "--out", flags, "--resume", "--reverse-fraction", 0.5, "--max-steps", 8)
    assert code == 0, err

    # validated by its Options, before anything is written
    code, _, err = _hlm(
        capsys,
        "train",
        "--data",
        data_dir,
        "--out",
        tmp_path / "bad",
        "--objective",
        "previous",
        *TINY,
        "--reverse-fraction",
        2,
    )
    assert code == 2 and "reverse_fraction must lie in [0, 1]" in err and not (tmp_path / "bad").exists()
    code, _, err = _hlm(
        capsys,
        "train",
        "--data",
        data_dir,
        "--out",
        tmp_path / "bad",
        "--objective",
        "causal",
        *TINY,
        "--reverse-fraction",
        0.5,
    )
    assert code == 2 and "option of previous" in err

    # scores (its capabilities name the scorer), says it cannot export, generate or infill, reports
    pairs = load_pairs([write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=4)])
    result = evaluate_pairs(RunLM(flags), pairs)
    assert result["scorer"] == "causal" and 0 <= result["macro_accuracy"] <= 1 and result["n_pairs"] == len(pairs)
    with pytest.raises(UserError, match="has no Hugging Face export"):
        export_run(flags, tmp_path / "export")
    run = load_run(flags)
    with pytest.raises(UserError, match="does not generate"):
        generate_text(run, "the")
    with pytest.raises(UserError, match="cannot fill masks"):
        infill_text(run, "the <mask> .")
    text = make_report([flags], tmp_path / "report").read_text()
    assert "| flags | previous |" in text and "neither generates nor infills" in text

    # the demo lists it, and takes it (an unknown name is refused before --steps is looked at)
    assert "previous" in _hlm(capsys, "demo", "--help")[1]
    with pytest.raises(UserError, match="--steps must be positive"):
        run_demo(objectives=["previous"], steps=0)
    with pytest.raises(UserError, match="unknown objective"):
        run_demo(objectives=["nonexistent"], steps=0)


def test_the_registry_refuses_what_is_not_an_objective():
    with pytest.raises(TypeError):
        register(int)
    with pytest.raises(TypeError):
        register(Objective)  # the base has no name of its own

    @dataclass(frozen=True)
    class Clashing(Options):
        max_span: float = option(3.0, "a key another objective defines with another type")

    class ClashingObjective(Objective):
        name = "clashing"
        Options = Clashing

    with pytest.raises(TypeError, match="max_span"):
        register(ClashingObjective)


# ---------------------------------------------------------------- an attention rule and a scorer of its own
@dataclass(frozen=True)
class LookaheadOptions(Options):
    lookahead: int = option(2, "lookahead: tokens a position sees to its right", check=lambda v: v >= 0, rule="be >= 0")


class LookaheadObjective(Objective):
    """A masked LM whose positions see the past and only `lookahead` tokens ahead: an attention rule no
    other objective has, declared once (`inference_attention`) and used by training, scoring and perplexity."""

    name = "lookahead"
    Options = LookaheadOptions
    capabilities = Capabilities(Attention.BIDIRECTIONAL, Likelihood.NONE, ("pll-pair",), loss_label="masked CE")

    def seen(self, length: int) -> torch.Tensor:
        i = torch.arange(length)
        return i[None, :] <= i[:, None] + self.options.lookahead

    def inference_attention(self, causal, length):
        return AttentionSpec(causal) if causal else AttentionSpec(False, visible=self.seen(length))

    def corrupt(self, ids, generator, fraction_done=1.0, train=True):
        x = ids[:, :-1]
        masked = (torch.rand(x.shape, generator=generator) < 0.25) & (x > 4)
        w = masked.float()
        spec = AttentionSpec(torch.zeros(len(x), dtype=torch.bool), visible=self.seen(x.shape[1]))
        return Batch(torch.where(masked, torch.full_like(x, 3), x), x, w / w.sum().clamp(min=1), masked, spec)


def _pair_copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed):
    """PLL with the next token hidden too: x_i and x_{i+1} masked, x_i read in place."""
    out = []
    for i in scored:
        masked = [lm.mask_id if j in (i, i + 1) else t for j, t in enumerate(ids)]
        out.append(Copy(index, masked, [i], [ids[i]]))
    return out


@pytest.fixture
def lookahead():
    register(LookaheadObjective)
    register_scorer(Scorer("pll-pair", "pseudo", False, _pair_copies))
    yield
    OBJECTIVES.pop("lookahead")
    SCORERS.pop("pll-pair")


def test_an_attention_rule_and_a_scorer_of_its_own_need_no_edit_in_the_package(lookahead, tmp_path, data_dir, corpus):
    run = tmp_path / "look"
    cli.main(["train", "--data", str(data_dir), "--out", str(run), "--objective", "lookahead", "--lookahead", "1",
              *map(str, TINY), "--max-steps", "6"])  # fmt: skip
    pairs = write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=3)
    text = tmp_path / "valid.txt"
    text.write_text(corpus.read_text()[:600])
    cli.main(["eval", "blimp", "--run", str(run), "--data", str(pairs)])
    cli.main(["eval", "perplexity", "--run", str(run), "--input", str(text)])
    blimp = json.loads((run / "eval" / "blimp-pll-pair.json").read_text())
    assert blimp["scorer"] == "pll-pair" and blimp["n_pairs"] == 18
    ppl = json.loads(next((run / "eval").glob("perplexity*.json")).read_text())
    assert ppl["pll-pair"]["measure"] == "pseudo" and ppl["pll-pair"]["perplexity"] > 1

    # the rule reaches the model: the same weights read with everything visible score otherwise
    lm = RunLM(run)
    sentences = ["the dog sees the cat near the big house .", "a cat sleeps ."]
    own = score_sentences(lm, sentences)
    lm.objective = LookaheadObjective(lm.objective.vocab_size, lookahead=10_000)
    assert score_sentences(lm, sentences) != own
    text = make_report([run], tmp_path / "report").read_text()
    assert "| look | lookahead |" in text and "pll-pair (pseudo)" in text and "| look | pll-pair |" in text
