"""hlm eval babylm: each task scored as the official pipeline defines it, checked against
independent computations, for every objective and a local HF model."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from helpers import SHARED, FakeLM, assert_one_line_error

from hybridlm.evaluate.babylm import evaluate_babylm, r2_gain, spearman
from hybridlm.evaluate.lm import HFLM, RunLM
from hybridlm.evaluate.scoring import score_completions
from hybridlm.objectives.diffusion import DiffusionObjective

transformers = pytest.importorskip("transformers")
FAST = SHARED / "babylm-2025" / "fast_eval"


def test_completion_log_probs_equal_a_direct_transformers_loop(hf_causal):
    lm = HFLM(hf_causal)
    tok = transformers.AutoTokenizer.from_pretrained(hf_causal)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_causal).eval()
    ewok = ("The cat is on the mat.", " The mat is under the cat.")
    entity = ("Box 0 contains the dog, Box 1 contains nothing. Box 0 contains ", "the dog.")
    for context, completion in (ewok, entity):
        text = context + completion
        got = score_completions(lm, [(text, len(context), None)], "causal")[0]
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([[tok.bos_token_id] + enc["input_ids"]])
        scored = [i + 1 for i, (_, end) in enumerate(enc["offset_mapping"]) if end > len(context)]
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        want = sum(logp[i - 1, ids[0, i]].item() for i in scored)
        assert 0 < len(scored) < ids.shape[1] - 1  # only the completion is scored, the context is not
        assert got == pytest.approx(want, abs=1e-4)


class UniformLM(FakeLM):
    def tokenize_offsets(self, text):
        ids, starts = self.tokenize(text)
        chars = [i for i, ch in enumerate(text) if not ch.isspace()]
        return ids, starts, [(c, c + 1) for c in chars]


def test_diffusion_completion_bound_of_a_uniform_model_is_closed_form():
    lm = UniformLM(50, DiffusionObjective)
    context, completion = "ab cd", " efg"
    got = score_completions(lm, [(context + completion, len(context), 3)], "elbo")[0]
    assert got == pytest.approx(-3 * math.log(49), rel=1e-6)  # 3 completion tokens, each -log(V-1) (SUBS)


def test_reading_gain_equals_least_squares_by_hand():
    rng = np.random.default_rng(0)
    n = 200
    freq, length, ctx = rng.normal(size=n), rng.integers(1, 10, n).astype(float), rng.integers(0, 20, n).astype(float)
    surprisal = rng.gamma(2.0, size=n)
    y = 3 + 0.5 * freq - 0.2 * length + 0.8 * surprisal + rng.normal(size=n)
    y[5] = np.nan  # a missing measurement is dropped
    keep = np.isfinite(y)
    base = np.column_stack([np.ones(n), freq, length, ctx, freq * length, freq * ctx, length * ctx])[keep]
    full = np.column_stack([base, surprisal[keep]])

    def r2(X):
        beta = np.linalg.lstsq(X, y[keep], rcond=None)[0]
        res = y[keep] - X @ beta
        return 1 - res @ res / ((y[keep] - y[keep].mean()) ** 2).sum()

    want = (r2(full) - r2(base)) / (1 - r2(base)) * 100
    got = r2_gain(y, {"Subtlex_log10": freq, "length": length, "context_length": ctx}, surprisal)
    assert got == pytest.approx(want, rel=1e-9) and got > 0


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [3, 2, 2, 1]) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def small_fast_eval(tmp_path_factory):
    """The official fast_eval folders, a few items of each file (every task, every format)."""
    if not FAST.is_dir():
        pytest.skip(f"{FAST} not found (BabyLM 2025 data lives in ../shared)")
    out = tmp_path_factory.mktemp("fast_eval")
    for src in FAST.iterdir():
        (out / src.name).mkdir()
        for f in src.iterdir():
            if f.suffix == ".jsonl":
                lines = f.read_text(encoding="utf-8").splitlines()
                (out / src.name / f.name).write_text(
                    "\n".join(lines[:: max(1, len(lines) // 4)][:4]) + "\n", encoding="utf-8"
                )
            elif f.suffix == ".csv":
                lines = f.read_text(encoding="utf-8").splitlines()
                (out / src.name / f.name).write_text("\n".join(lines[:121]) + "\n", encoding="utf-8")
    return out


@pytest.mark.slow
def test_every_task_runs_for_every_objective_and_an_hf_model(cli, runs, small_fast_eval, hf_causal, tmp_path):
    for objective in ("causal", "masked", "hybrid", "diffusion"):
        result = evaluate_babylm(RunLM(runs[objective]), small_fast_eval)
        assert set(result["tasks"]) == {
            "blimp",
            "supplement",
            "entity_tracking",
            "wug_adj",
            "reading_eye_tracking",
            "reading_self_paced",
        }, objective
        for task, r in result["tasks"].items():
            assert (r["value"] is None and task == "wug_adj") or math.isfinite(r["value"]), (objective, task)
            if r["metric"] == "accuracy":
                assert 0 <= r["value"] <= 1 and r["n"] > 0 and r["ties"] >= 0
        assert set(result["tasks"]["entity_tracking"]["subsets"]) >= {"regular"}
    out = tmp_path / "hf.json"
    cli(
        "eval",
        "babylm",
        "--hf-model",
        hf_causal,
        "--data",
        small_fast_eval,
        "--tasks",
        "blimp,entity_tracking",
        "--json",
        out,
    )
    saved = json.loads(out.read_text())
    assert (
        saved["convention"] == "hlm"
        and saved["scorer"] == "causal"
        and set(saved["tasks"]) == {"blimp", "entity_tracking"}
    )
    for r in saved["tasks"].values():
        assert set(r) >= {"metric", "value", "n", "ties", "subsets"}


def test_results_are_kept_in_the_run_and_reported(cli, runs, small_fast_eval, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["hybrid"], run)
    cli("eval", "babylm", "--run", run, "--data", small_fast_eval, "--tasks", "blimp,wug_adj")
    assert json.loads((run / "eval" / "babylm-mntp.json").read_text())["scorer"] == "mntp"
    cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | mntp | hlm | blimp | accuracy |" in text and (tmp_path / "rep" / "babylm.png").is_file()


def test_bad_task_data_is_one_line_naming_file_and_line(cli, runs, tmp_path):
    bad = tmp_path / "bad"
    (bad / "ewok_filtered").mkdir(parents=True)
    (bad / "ewok_filtered" / "agents.jsonl").write_text('{"Context1": "a", "Target1": "b", "Domain": "d"}\n')
    assert_one_line_error(
        cli("eval", "babylm", "--run", runs["causal"], "--data", bad, check=False), "agents.jsonl:1", "Target2"
    )
    (bad / "ewok_filtered" / "agents.jsonl").write_text("\n")
    assert_one_line_error(cli("eval", "babylm", "--run", runs["causal"], "--data", bad, check=False), "no items")
    (tmp_path / "other").mkdir()
    assert_one_line_error(
        cli("eval", "babylm", "--run", runs["causal"], "--data", tmp_path / "other", check=False),
        "no BabyLM task folders",
    )
    assert_one_line_error(
        cli("eval", "babylm", "--run", runs["causal"], "--data", bad, "--tasks", "glue", check=False), "unknown task"
    )


def test_exports_add_bos_so_the_official_convention_scores_like_hlm(cli, runs, small_fast_eval, tmp_path):
    cli("export", "--run", runs["causal"], "--out", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("the cat sleeps .")["input_ids"][0] == 1  # <s>, as every training document began
    lm = HFLM(tmp_path / "hf")
    texts = [("the cat sleeps .", 0, None), ("Box 0 contains the cat. Box 0 contains the cat.", 24, None)]
    from hybridlm.evaluate.official import completion_scores

    assert completion_scores(lm, texts, "causal") == pytest.approx(score_completions(lm, texts, "causal"), abs=1e-5)
    assert completion_scores(RunLM(runs["causal"]), texts, "causal") == pytest.approx(
        score_completions(lm, texts, "causal"), abs=1e-4
    )
    assert score_completions(lm, texts, "causal") == pytest.approx(
        score_completions(RunLM(runs["causal"]), texts, "causal"), abs=1e-4
    )


def test_a_task_declared_by_a_record_alone_is_evaluated_listed_and_reported(cli, runs, tmp_path):
    """A new BabyLM task is one Task record: found, scored, named in --help, kept in the run and reported."""
    from hybridlm.evaluate import babylm

    def toy_item(where, row, f):
        return babylm.Item([row["yes"], row["no"]], [0, 0], row["group"], where=where)

    data = tmp_path / "data" / "toy_pairs"
    data.mkdir(parents=True)
    rows = [{"yes": "the dog runs .", "no": "the dog run .", "group": g} for g in ("a", "b")]
    (data / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    shutil.copytree(runs["causal"], run)
    babylm.register_task(babylm.Task("toy_agreement", ("toy_pairs",), "toy agreement pairs", read_item=toy_item))
    try:
        assert "toy_agreement" in cli("eval", "babylm", "--help").stdout
        cli("eval", "babylm", "--run", run, "--data", tmp_path / "data", "--tasks", "toy_agreement")
        result = json.loads((run / "eval" / "babylm-causal.json").read_text())["tasks"]["toy_agreement"]
        assert result["n"] == 2 and set(result["subsets"]) == {"a", "b"} and result["metric"] == "accuracy"
        cli("report", run, "--out", tmp_path / "rep", "--no-samples")
        assert "| run | causal | hlm | toy\\_agreement | accuracy |" in (tmp_path / "rep" / "report.md").read_text()
    finally:
        babylm.TASKS.pop("toy_agreement")


def test_every_task_runs_for_gidds_bound(data_dir, small_fast_eval, tmp_path):
    """GIDD's noise (mask plus uniform, and uniform-state) is scored by its own bound on every task of the suite."""
    from helpers import tiny_config

    from hybridlm.train import train

    for p_uniform in (0.3, 1.0):
        out = tmp_path / f"gidd{p_uniform}"
        train(tiny_config(data_dir, out, objective="gidd", max_steps=4, eval_interval=0,
                          options={"p_uniform": p_uniform}), quiet=True)  # fmt: skip
        result = evaluate_babylm(RunLM(out), small_fast_eval)
        assert result["scorer"] == "gidd-elbo" and len(result["tasks"]) == 6
        for task, r in result["tasks"].items():
            assert (r["value"] is None and task == "wug_adj") or math.isfinite(r["value"]), (p_uniform, task)
