"""hlm finetune: sequence classification with the BabyLM recipe, for runs and local HF models."""

import json

import pytest
from helpers import assert_one_line_error

from hybridlm.finetune import FinetuneConfig, RunClassifier, finetune
from hybridlm.grammar import write_grammaticality
from hybridlm.runs import load_run


@pytest.fixture(scope="module")
def grammar_task(tmp_path_factory):
    return write_grammaticality(tmp_path_factory.mktemp("grammar"), n_train=240, n_valid=60)


def test_finetune_keeps_the_best_epoch_and_reports_seeds(runs, grammar_task):
    cfg = FinetuneConfig(lr=1e-3, epochs=3, batch_size=16, seeds=2)
    result = finetune(
        lambda n: RunClassifier(load_run(runs["masked"]), n, cfg.dropout),
        "grammar",
        grammar_task,
        cfg,
        progress=False,
        name="masked",
    )
    assert result["metric"] == "accuracy" and result["n_train"] == 240 and result["n_valid"] == 60
    assert len(result["seeds"]) == 2 and result["stdev"] >= 0 and result["majority_baseline"] == pytest.approx(0.5)
    for run in result["seeds"]:
        assert len(run["history"]) == 3
        assert run["value"] == max(h["accuracy"] for h in run["history"])  # the best epoch on validation
    assert result["value"] == pytest.approx(sum(r["value"] for r in result["seeds"]) / 2)
    assert result["config"]["epochs"] == 3 and result["config"]["max_length"] == 512  # official default kept


def test_official_defaults_per_task():
    assert FinetuneConfig().resolved("rte").batch_size == 32 and FinetuneConfig().resolved("boolq").batch_size == 16
    assert FinetuneConfig().resolved("wsc").epochs == 30 and FinetuneConfig().resolved("mrpc").epochs == 10


def test_pooling_follows_the_attention(runs):
    assert RunClassifier(load_run(runs["causal"]), 2, 0.1).causal
    assert not RunClassifier(load_run(runs["hybrid"]), 2, 0.1).causal  # mixed attention: bidirectional, mean-pooled


def test_finetune_cli_for_a_run_and_an_hf_export(cli, runs, grammar_task, tmp_path):
    out = tmp_path / "r.json"
    cli(
        "finetune",
        "--run",
        runs["causal"],
        "--task",
        "grammar",
        "--data",
        grammar_task,
        "--epochs",
        1,
        "--lr",
        1e-3,
        "--json",
        out,
    )
    saved = json.loads(out.read_text())
    assert saved["task"] == "grammar" and 0 <= saved["value"] <= 1
    cli("export", "--run", runs["causal"], "--out", tmp_path / "hf")
    p = cli(
        "finetune",
        "--hf-model",
        tmp_path / "hf",
        "--task",
        "grammar",
        "--data",
        grammar_task,
        "--epochs",
        1,
        "--batch-size",
        16,
    )
    assert "best-epoch validation accuracy" in p.stdout


def test_bad_fine_tuning_files_are_one_line(cli, runs, tmp_path):
    (tmp_path / "rte.train.jsonl").write_text(
        '{"sentence1": "a", "sentence2": "b", "label": 0}\n'
        '{"sentence1": "a", "sentence2": "b", "label": "entailment"}\n'
    )
    (tmp_path / "rte.valid.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 1}\n')
    proc = cli("finetune", "--run", runs["causal"], "--task", "rte", "--data", tmp_path, check=False)
    assert_one_line_error(proc, "rte.train.jsonl:2", "not an integer")
    assert_one_line_error(
        cli("finetune", "--run", runs["causal"], "--task", "cola", "--data", tmp_path, check=False), "unknown task"
    )
    assert_one_line_error(
        cli("finetune", "--run", runs["causal"], "--task", "mrpc", "--data", tmp_path, check=False), "mrpc.train.jsonl"
    )


def test_majority_baseline_is_the_training_majority_scored_with_the_tasks_metric():
    from hybridlm.finetune import majority_baseline

    assert majority_baseline([0, 0, 1], [1, 1, 0, 0], 2, "accuracy") == (
        0,
        0.5,
    )  # the train majority, not the valid one
    p = 0.68  # MRPC: "always paraphrase" has F1 2p / (1 + p)
    valid = [1] * 68 + [0] * 32
    assert majority_baseline([1, 1, 0], valid, 2, "f1")[1] == pytest.approx(2 * p / (1 + p))
    assert majority_baseline([0, 0, 1], valid, 2, "f1") == (0, 0.0)


# ---------------------------------------------------------------- the BabyLM 2026 multilingual recipe
def _write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def track_2026(tmp_path_factory):
    """babylm-eval's layout: en/sib200 (topics as strings), en/mnli (a pair), nl/arc (letters, one unseen in
    training order), each small."""
    import random

    root = tmp_path_factory.mktemp("ft2026") / "multilingual/finetune/data/multilingual"  # a babylm-eval checkout
    rng = random.Random(0)
    topics = ["travel", "sports", "health"]
    words = {"travel": "the cat walks", "sports": "a dog runs", "health": "the bird sings"}
    sib = [{"idx": i, "sentence": f"{words[t]} now", "label": t} for i in range(91) for t in [rng.choice(topics)]]
    _write_rows(root / "en/sib200/sib200_en.train.jsonl", sib[:70])
    _write_rows(root / "en/sib200/sib200_en.valid.jsonl", sib[70:])
    pair = {"premise": "the cat walks", "hypothesis": "a dog runs"}
    nli = [{"idx": i, **pair, "label": rng.choice(["neutral", "entailment"])} for i in range(40)]
    _write_rows(root / "en/mnli/mnli_en.train.jsonl", nli[:30])
    _write_rows(root / "en/mnli/mnli_en.valid.jsonl", nli[30:])
    arc = [{"idx": i, "sentence": "de kat loopt\nA: ja\nB: nee", "label": "BA"[i % 2]} for i in range(36)]
    _write_rows(root / "nl/arc/arc_nl.train.jsonl", arc[:20])
    _write_rows(root / "nl/arc/arc_nl.valid.jsonl", arc[20:])
    return root


def test_early_stopping_counts_as_transformers_callback():
    """epochs_without_gain is the counter of transformers' EarlyStoppingCallback fed the same metrics, with the
    Trainer's best metric updated after each evaluation (any strict gain), on random sequences with near-ties."""
    import random
    from types import SimpleNamespace

    from transformers import EarlyStoppingCallback

    from hybridlm.finetune import EARLY_STOPPING_THRESHOLD, epochs_without_gain

    rng = random.Random(0)
    for _ in range(200):
        values = [round(rng.choice([0.3, 0.3005, 0.301, 0.302, 0.31, 0.32]) + rng.random() * 0.002, 4)
                  for _ in range(rng.randint(1, 10))]  # fmt: skip
        callback = EarlyStoppingCallback(3, EARLY_STOPPING_THRESHOLD)
        args, state = SimpleNamespace(greater_is_better=True), SimpleNamespace(best_metric=None)
        for k, v in enumerate(values):
            callback.check_metric_value(args, state, None, v)
            state.best_metric = v if state.best_metric is None else max(state.best_metric, v)
            assert epochs_without_gain(values[: k + 1]) == callback.early_stopping_patience_counter, values


def test_recipe_2026_numbers_and_overrides():
    from hybridlm.finetune import FinetuneConfig

    c = FinetuneConfig.for_recipe("babylm-2026").resolved("sib200")
    assert (c.lr, c.batch_size, c.epochs, c.max_length, c.seed, c.patience, c.keep) == (
        5e-5,
        64,
        10,
        128,
        12,
        3,
        "last",
    )
    assert (c.weight_decay, c.warmup_fraction, c.schedule, c.max_grad_norm) == (0.0, 0.0, "linear", 1.0)
    assert FinetuneConfig.for_recipe("babylm-2026", lr=1e-3).lr == 1e-3
    assert FinetuneConfig.for_recipe("babylm-2025") == FinetuneConfig()
    # Trainer's linear schedule: the full rate at the first step, 0 after the last
    assert [c.lr_factor(s, 4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_recipe_2026_on_a_run(runs, track_2026):
    """Official loader: each epoch drops its last partial batch and scores whole batches of 8; hlm: every item.
    The last model is kept; labels are the sorted set of the training labels; patience stops a flat run."""
    from hybridlm.finetune import FinetuneConfig, finetune_2026, plan_2026

    plan = plan_2026(track_2026)
    assert {lang: sorted(t) for lang, t in plan.items()} == {"eng": ["mnli", "sib200"], "nld": ["arc"]}
    make = lambda n: RunClassifier(load_run(runs["causal"]), n, 0.1)  # noqa: E731
    cfg = FinetuneConfig.for_recipe("babylm-2026", batch_size=16, epochs=3, lr=1e-3)
    official = finetune_2026(make, {"eng": {"sib200": plan["eng"]["sib200"]}}, cfg, "official", progress=False)
    row = official["languages"]["eng"]["tasks"]["sib200"]
    (run,) = row["seeds"]
    assert row["n_valid"] == 21 and row["n_scored"] == 16 and run["steps"] == 3 * (70 // 16)
    assert run["kept_epoch"] == run["epochs_run"] == 3 and row["acc"] == pytest.approx(
        100 * run["history"][-1]["accuracy"]
    )
    assert row["labels"] == ["health", "sports", "travel"]
    assert official["languages"]["eng"]["score"] == pytest.approx(row["acc"])
    hlm = finetune_2026(make, {"eng": {"sib200": plan["eng"]["sib200"]}}, cfg, "hlm", progress=False)
    row = hlm["languages"]["eng"]["tasks"]["sib200"]
    assert row["n_scored"] == 21 and row["seeds"][0]["steps"] == 3 * 5
    flat = FinetuneConfig.for_recipe("babylm-2026", batch_size=8, epochs=10, lr=1e-12, patience=2, dropout=0.0)
    stopped = finetune_2026(make, {"nld": plan["nld"]}, flat, "official", progress=False)
    assert stopped["languages"]["nld"]["tasks"]["arc"]["seeds"][0]["epochs_run"] == 3  # a first score, then 2 flat


def test_recipe_2026_cli_and_report(cli, runs, track_2026, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["masked"], run)
    p = cli("finetune", "--recipe", "babylm-2026", "--run", run, "--data", track_2026.parents[3], "--languages", "eng",
            "--task", "mnli", "--batch-size", 8, "--epochs", 1)  # fmt: skip
    assert "eng:" in p.stdout and "mnli:" in p.stdout
    saved = json.loads((run / "eval" / "finetune-babylm-2026.json").read_text())
    assert saved["kind"] == "finetune-multilingual" and list(saved["languages"]) == ["eng"]
    assert list(saved["languages"]["eng"]["tasks"]) == ["mnli"]
    cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "fine-tuned" in report and "| eng | mnli |" in report and "| eng | mean |" in report


def test_recipe_2026_bad_input_is_one_line(cli, runs, track_2026, tmp_path):
    base = ("finetune", "--recipe", "babylm-2026", "--run", runs["causal"])
    assert_one_line_error(cli(*base, "--data", tmp_path, check=False), "no en/, nl/ or zh/")
    assert_one_line_error(cli(*base, "--data", track_2026, "--languages", "fra", check=False), "unknown language")
    bad = tmp_path / "bad"
    _write_rows(bad / "en/sib200/sib200_en.train.jsonl", [{"sentence": "a", "label": "x"}])
    _write_rows(bad / "en/sib200/sib200_en.valid.jsonl", [{"sentence": "a", "label": "y"}])
    assert_one_line_error(cli(*base, "--data", bad, check=False), "label 'y' never occurs")
    (bad / "en/sib200/sib200_en.valid.jsonl").unlink()
    assert_one_line_error(cli(*base, "--data", bad, check=False), "sib200_en.valid.jsonl is missing")
    assert_one_line_error(
        cli("finetune", "--run", runs["causal"], "--data", track_2026, check=False), "--task is required"
    )


def test_hf_classifier_pads_with_the_id_it_pools_by(tokenizer_dir, tmp_path):
    """A causal HF classifier pools the last token that is not its pad id: batches must be padded with that id
    (padding with 0 made a short item read a padding position). Batched logits equal one-at-a-time ones."""
    import torch
    import transformers
    from helpers import tiny_hf_model

    from hybridlm.finetune import HFClassifier, _batches, _padding

    config = transformers.GPT2Config(
        vocab_size=320, n_positions=64, n_embd=32, n_layer=2, n_head=2, pad_token_id=2, bos_token_id=1, eos_token_id=2
    )
    path = tiny_hf_model(tmp_path / "gpt2", transformers.GPT2LMHeadModel, config, tokenizer_dir)
    for official in (False, True):
        model = HFClassifier(path, 3, 0.0, official_2026=official).eval()
        examples = [(model.encode([t], 128), 0) for t in ("the cat", "the dog runs far away now", "a")]
        if official:  # the script's tokenisation: padded to max length, EOS as the model's pad id
            assert model.pad_to == 64 and model.model.config.pad_token_id == model.tok.eos_token_id
        with torch.no_grad():
            ids, lengths, _ = next(_batches(examples, 3, **_padding(model)))
            batched = model(ids, lengths)
            for k, (x, _) in enumerate(examples):
                one, n, _ = next(_batches([(x, 0)], 1, **_padding(model)))
                torch.testing.assert_close(batched[k], model(one, n)[0], atol=1e-5, rtol=1e-5)
