"""The lm-evaluation-harness backend: parity with the harness's own `hf` backend for every request type,
hlm eval's numbers for the other objectives, and hlm eval harness with the in-context GLUE tasks."""

import json
import math
import shutil

import pytest
from helpers import SHARED, assert_one_line_error

lm_eval = pytest.importorskip("lm_eval")  # an extra: pip install 'hybridlm[lmeval]' (in the test extras)

from lm_eval.tasks import TaskManager  # noqa: E402

import hybridlm.evaluate.harness  # noqa: E402,F401 (registers the hlm backend)
from hybridlm.evaluate.lm import RunLM  # noqa: E402
from hybridlm.evaluate.scoring import score_sentences  # noqa: E402

PAIRS = [
    ("The dogs run .", "The dogs runs ."),
    ("A cat sleeps near the tree .", "A cat sleep near the tree ."),
    ("These boys laugh .", "This boys laugh ."),
]


def _yaml(path, **config):
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML


def _tasks(root):
    """Local tasks of every request type: multiple choice (with a context, and BLiMP-style without),
    rolling log-likelihood and greedy generation."""
    rows = {
        "choice": [
            {"question": "the dogs", "choices": [" run .", " runs ."], "label": 0},
            {"question": "a cat", "choices": [" sleep .", " sleeps ."], "label": 1},
            {"question": "the boys near the tree", "choices": [" laugh .", " laughs .", " laughed ."], "label": 0},
        ],
        "pairs": [{"good": g, "bad": b} for g, b in PAIRS],
        "rolling": [{"text": "The cat sees a dog . The boys run quickly ."}, {"text": "Many small birds sleep ."}],
        "generate": [{"prompt": "the cat", "answer": " runs"}, {"prompt": "two dogs", "answer": " sleep"}],
    }
    for name, docs in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = {"dataset_path": "json", "test_split": "test"}

    def files(name):
        return {"dataset_kwargs": {"data_files": {"test": str(root / f"{name}.jsonl")}}}

    acc = [{"metric": "acc"}]
    _yaml(root / "t_choice.yaml", task="t_choice", output_type="multiple_choice", doc_to_text="{{question}}",
          doc_to_choice="choices", doc_to_target="label", target_delimiter="", metric_list=acc, **common,
          **files("choice"))  # fmt: skip
    _yaml(root / "t_pairs.yaml", task="t_pairs", output_type="multiple_choice", doc_to_text="",
          doc_to_choice="{{[good, bad]}}", doc_to_target=0, target_delimiter="", metric_list=acc, **common,
          **files("pairs"))  # fmt: skip
    _yaml(root / "t_rolling.yaml", task="t_rolling", output_type="loglikelihood_rolling", doc_to_text="",
          doc_to_target="{{text}}", target_delimiter="", metric_list=[{"metric": "word_perplexity"}], **common,
          **files("rolling"))  # fmt: skip
    _yaml(root / "t_generate.yaml", task="t_generate", output_type="generate_until", doc_to_text="{{prompt}}",
          doc_to_target="{{answer}}", generation_kwargs={"until": ["."], "max_gen_toks": 6, "do_sample": False},
          metric_list=[{"metric": "exact_match"}], **common, **files("generate"))  # fmt: skip
    return TaskManager(include_path=str(root), include_defaults=False)


def _evaluate(model, args, tasks, manager):
    out = lm_eval.simple_evaluate(
        model=model, model_args=args, tasks=tasks, task_manager=manager, log_samples=True, batch_size=2, device="cpu"
    )
    return out["results"], {t: [s["resps"] for s in rows] for t, rows in out["samples"].items()}


def _flat(responses):
    return [r for doc in responses for option in doc for r in option]


@pytest.fixture(scope="module")
def export(runs, tmp_path_factory):
    from hybridlm.export import export_run

    out = tmp_path_factory.mktemp("harness") / "export"
    export_run(runs["causal"], out)
    return out


def test_hlm_backend_equals_the_harness_hf_backend_on_every_request_type(runs, export, tmp_path):
    manager = _tasks(tmp_path)
    tasks = ["t_choice", "t_pairs", "t_rolling", "t_generate"]
    hf_results, hf = _evaluate("hf", f"pretrained={export},dtype=float32", tasks, manager)
    for args in (f"run={runs['causal']}", f"hf_model={export}"):
        results, ours = _evaluate("hlm", args, tasks, manager)
        for task in ("t_choice", "t_pairs"):
            for (a, greedy_a), (b, greedy_b) in zip(_flat(ours[task]), _flat(hf[task])):
                assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b, (args, task)
            assert results[task]["acc,none"] == hf_results[task]["acc,none"]
        assert results["t_rolling"]["word_perplexity,none"] == pytest.approx(
            hf_results["t_rolling"]["word_perplexity,none"], rel=1e-4
        )
        assert ours["t_generate"] == hf["t_generate"]  # identical strings, stop sequence honoured
        assert all("." not in text for doc in ours["t_generate"] for text in doc[0])


@pytest.mark.parametrize("objective", ["masked", "hybrid", "diffusion"])
def test_harness_numbers_are_hlm_evals_for_other_objectives(objective, runs, tmp_path):
    manager = _tasks(tmp_path)
    _, ours = _evaluate("hlm", f"run={runs[objective]},samples=2", ["t_pairs"], manager)
    lm = RunLM(runs[objective])
    expected = score_sentences(lm, [s for pair in PAIRS for s in pair], samples=2)
    got = [value for value, _ in _flat(ours["t_pairs"])]
    assert got == pytest.approx(expected, abs=1e-6)
    if objective == "masked":  # <mask>s after the text change what a bidirectional model reads
        _, padded = _evaluate("hlm", f"run={runs[objective]},mask_padding=3", ["t_pairs"], manager)
        values = [value for value, _ in _flat(padded["t_pairs"])]
        assert all(math.isfinite(v) for v in values) and values != pytest.approx(got, abs=1e-6)


def test_pseudo_likelihoods_refuse_rolling_and_diffusion_generates(runs, tmp_path, cli):
    _tasks(tmp_path)
    r = cli("eval", "harness", "--run", runs["masked"], "--tasks", "t_rolling", "--include-path", tmp_path, check=False)
    # (after the harness's own progress bars) one line, no traceback
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert last.startswith("hlm: error: loglikelihood_rolling") and "pseudo-likelihood" in last
    results, ours = _evaluate("hlm", f"run={runs['diffusion']},steps=4", ["t_generate", "t_rolling"], _tasks(tmp_path))
    texts = [doc[0][0] for doc in ours["t_generate"]]
    assert len(texts) == 2 and all(isinstance(t, str) and "." not in t for t in texts)
    assert math.isfinite(results["t_rolling"]["word_perplexity,none"])  # a bound, over the rolling windows
    _, hybrid = _evaluate("hlm", f"run={runs['hybrid']}", ["t_generate"], _tasks(tmp_path))  # left to right
    assert all("." not in doc[0][0] for doc in hybrid["t_generate"])


@pytest.mark.slow
def test_in_context_glue_tasks_land_in_the_run(runs, tmp_path, cli):
    glue = SHARED / "babylm-2025" / "full_eval" / "glue_filtered"
    if not glue.is_dir():
        pytest.skip("../shared/data/babylm-2025 is not here")
    run = shutil.copytree(runs["hybrid"], tmp_path / "hybrid")
    for shots in (0, 2):
        cli("eval", "harness", "--run", run, "--tasks", "rte_icl,wsc_icl", "--glue-data", glue, "--num-fewshot",
            shots, "--limit", 6)  # fmt: skip
    result = json.loads((run / "eval" / "harness-rte_icl+wsc_icl-2shot.json").read_text())
    assert result["scorer"] == "mntp" and result["num_fewshot"] == 2 and result["n"]["rte_icl"] == 6
    assert 0 <= result["results"]["rte_icl"]["acc,none"] <= 1 and 0.5 <= result["majority"]["rte_icl"] <= 1
    assert math.isfinite(result["results"]["wsc_icl"]["acc_stderr,none"])
    assert_one_line_error(cli("eval", "harness", "--run", run, "--tasks", "rte_icl", check=False), "--glue-data")
    cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "in_context.png" in report and "| rte\\_icl | 2 |" in report
    assert (tmp_path / "rep" / "in_context.png").stat().st_size > 1000


# BabyLM 2026's multilingual task files as babylm-eval ships them (multilingual/tasks/blimp_nl/ at 45fe2c1): a base
# task reading a hub dataset, and one that includes it
BLIMP_NL = """task: blimp_nl_anaphor_agreement
dataset_path: juletxara/blimp-nl
dataset_name: anaphor_agreement
test_split: train
training_split: null
validation_split: null
output_type: multiple_choice
doc_to_text: ''
doc_to_target: 0
doc_to_choice: '{{[sentence_good, sentence_bad]}}'
num_fewshot: 0
metric_list:
- metric: acc
  aggregation: mean
  higher_is_better: true
metadata:
  version: 1.0
"""
BLIMP_NL_DETERMINERS = (
    "include: blimp_nl_anaphor_agreement.yaml\ntask: blimp_nl_determiners\ndataset_name: determiners\n"
)
DUTCH_PAIRS = {
    "anaphor_agreement": [("Het meisje ziet zichzelf .", "Het meisje ziet zichzelven ."),
                          ("De jongens wassen zich .", "De jongens wast zich .")],
    "determiners": [("De kat slaapt .", "Het kat slaapt ."), ("Het huis is groot .", "De huis is groot ."),
                    ("Een hond blaft .", "Een honden blaft .")],
}  # fmt: skip


def _hub_copy(root):
    """A local copy of the dataset as the hub's dataset repositories hold it: a folder per config, the configs
    named in the README's YAML header."""
    repo = root / "juletxara" / "blimp-nl"
    header = ["---", "configs:"]
    for config, pairs in DUTCH_PAIRS.items():
        (repo / config).mkdir(parents=True)
        rows = [{"sentence_good": g, "sentence_bad": b, "UID": config} for g, b in pairs]
        (repo / config / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        header += [f"- config_name: {config}", "  data_files:", "  - split: train", f"    path: {config}/train.jsonl"]
    (repo / "README.md").write_text("\n".join(header + ["---", ""]))
    return root


def test_the_2026_task_files_run_offline_on_local_data_and_equal_the_hf_backend(runs, export, tmp_path, cli):
    from hybridlm.evaluate.harness import localise_tasks

    tasks, data = tmp_path / "tasks", _hub_copy(tmp_path / "data")
    tasks.mkdir()
    (tasks / "blimp_nl_anaphor_agreement.yaml").write_text(BLIMP_NL)
    (tasks / "blimp_nl_determiners.yaml").write_text(BLIMP_NL_DETERMINERS)
    names = ["blimp_nl_anaphor_agreement", "blimp_nl_determiners"]
    cli("eval", "harness", "--run", runs["causal"], "--tasks", ",".join(names), "--include-path", tasks,
        "--task-data", data, "--json", tmp_path / "ours.json")  # fmt: skip
    ours_cli = json.loads((tmp_path / "ours.json").read_text())["results"]
    assert (tasks / "blimp_nl_anaphor_agreement.yaml").read_text() == BLIMP_NL  # the user's files untouched

    manager = TaskManager(include_path=str(localise_tasks(tasks, data, tmp_path / "local")), include_defaults=False)
    hf_results, hf = _evaluate("hf", f"pretrained={export},dtype=float32", names, manager)
    results, ours = _evaluate("hlm", f"run={runs['causal']}", names, manager)
    for task in names:
        assert len(_flat(ours[task])) == 2 * len(DUTCH_PAIRS[task.removeprefix("blimp_nl_")])
        for (a, _), (b, _) in zip(_flat(ours[task]), _flat(hf[task])):
            assert a == pytest.approx(b, abs=1e-4), task
        assert results[task]["acc,none"] == hf_results[task]["acc,none"] == ours_cli[task]["acc,none"]

    missing = cli("eval", "harness", "--run", runs["causal"], "--tasks", names[0], "--include-path", tasks,
                  "--task-data", tmp_path / "tasks", check=False)  # fmt: skip
    assert_one_line_error(missing, "--task-data", "huggingface-cli download")


def test_the_multilingual_track_table_per_language(runs, tmp_path, cli):
    """hlm eval babylm --track multilingual: the zeroshot_nld group (a group and a task under it) from DATA/tasks
    on DATA/task-data, per language, with ties right in the official convention and wrong in hlm's."""
    data = tmp_path / "track"
    (data / "tasks").mkdir(parents=True)
    _hub_copy(data / "task-data")
    tie = ("De kat slaapt .", "De kat slaapt .")  # one pair the model cannot tell apart
    rows = [{"sentence_good": g, "sentence_bad": b} for g, b in [*DUTCH_PAIRS["determiners"], tie]]
    (data / "task-data/juletxara/blimp-nl/determiners/train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    (data / "tasks" / "blimp_nl_anaphor_agreement.yaml").write_text(BLIMP_NL)
    (data / "tasks" / "blimp_nl_determiners.yaml").write_text(BLIMP_NL_DETERMINERS)
    _yaml(data / "tasks" / "_blimp_nl.yaml", group="blimp_nl", task=["blimp_nl_anaphor_agreement"],
          aggregate_metric_list=[{"metric": "acc", "aggregation": "mean", "weight_by_size": True}])  # fmt: skip
    _yaml(data / "tasks" / "zeroshot_nld.yaml", group="zeroshot_nld", task=["blimp_nl", "blimp_nl_determiners"],
          aggregate_metric_list=[{"metric": "acc", "aggregation": "mean", "weight_by_size": True}])  # fmt: skip
    tables = {}
    for convention in ("official", "hlm"):
        cli("eval", "babylm", "--run", runs["causal"], "--track", "multilingual", "--data", data, "--languages", "nld",
            "--convention", convention, "--json", tmp_path / f"{convention}.json")  # fmt: skip
        tables[convention] = json.loads((tmp_path / f"{convention}.json").read_text())
    from hybridlm.evaluate.harness import run_harness

    harness = run_harness(run=runs["causal"], tasks="zeroshot_nld", include_path=data / "tasks",
                          task_data=data / "task-data")["results"]  # fmt: skip
    official, ours = tables["official"]["languages"]["nld"], tables["hlm"]["languages"]["nld"]
    assert set(official["tasks"]) == {"blimp_nl", "blimp_nl_determiners"}
    for task in official["tasks"]:
        assert official["tasks"][task]["acc"] == pytest.approx(100 * harness[task]["acc,none"])
    assert official["score"] == pytest.approx(sum(t["acc"] for t in official["tasks"].values()) / 2)
    determiners = official["tasks"]["blimp_nl_determiners"]
    assert determiners["ties"] == 1 and determiners["n"] == 4
    assert ours["tasks"]["blimp_nl_determiners"]["acc"] == pytest.approx(determiners["acc"] - 25)  # the tie: wrong
    cli("report", runs["causal"], "--out", tmp_path / "rep", "--no-samples")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "BabyLM 2026 multilingual" in report and "| nld | mean |" in report
    bad = cli("eval", "babylm", "--run", runs["causal"], "--track", "multilingual", "--data", tmp_path, check=False)
    assert_one_line_error(bad, "tasks/", "task-data/")


def test_a_harness_builtin_task_a_group_lists_runs_offline_on_its_local_copy(runs, tmp_path, cli):
    """zeroshot_eng lists the harness's own `blimp`, which the track's task folder does not hold: with its dataset
    in task-data (nyu-mll/blimp, the hub's layout), the harness's task files are copied in and read it offline."""
    data = tmp_path / "track"
    (data / "tasks").mkdir(parents=True)
    repo = data / "task-data" / "nyu-mll" / "blimp"
    (repo / "anaphor_gender_agreement").mkdir(parents=True)
    pairs = [("Anna saw herself .", "Anna saw himself ."), ("The boys hurt themselves .", "The boys hurt herself ."),
             ("Tom likes himself .", "Tom likes herself .")]  # fmt: skip
    rows = [{"sentence_good": g, "sentence_bad": b} for g, b in pairs]
    (repo / "anaphor_gender_agreement" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    header = "---\nconfigs:\n- config_name: anaphor_gender_agreement\n  data_files:\n  - split: train\n"
    (repo / "README.md").write_text(header + "    path: anaphor_gender_agreement/train.jsonl\n---\n")
    _yaml(data / "tasks" / "zeroshot_eng.yaml", group="zeroshot_eng", task=["blimp_anaphor_gender_agreement"],
          aggregate_metric_list=[{"metric": "acc", "aggregation": "mean", "weight_by_size": True}])  # fmt: skip
    cli("eval", "babylm", "--run", runs["causal"], "--track", "multilingual", "--data", data, "--languages", "eng",
        "--json", tmp_path / "eng.json")  # fmt: skip
    table = json.loads((tmp_path / "eng.json").read_text())["languages"]["eng"]
    assert table["tasks"]["blimp_anaphor_gender_agreement"]["n"] == len(pairs)
    assert list((data / "tasks").iterdir()) == [data / "tasks" / "zeroshot_eng.yaml"]  # the user's folder untouched
