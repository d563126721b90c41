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
