import json
import shutil

import pytest

from hybridlm.grammar import write_minimal_pairs


def test_report_with_curves_blimp_perplexity_and_samples(cli, tmp_path, runs, corpus):
    pairs = write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=3)
    text = tmp_path / "valid.txt"
    text.write_text(corpus.read_text()[:800])
    for obj in ("causal", "diffusion"):
        cli("eval", "blimp", "--run", runs[obj], "--data", pairs)
        cli("eval", "perplexity", "--run", runs[obj], "--input", text, "--samples", 2)
    blimp = json.loads((runs["diffusion"] / "eval" / "blimp-elbo.json").read_text())
    assert blimp["n_pairs"] == 18 and blimp["scorer"] == "elbo"
    cli("report", runs["causal"], runs["diffusion"], runs["masked"], "--out", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    for png in ("loss.png", "blimp_fields.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md
    assert "| causal | causal |" in md and "elbo (upper bound (NELBO))" in md and "Samples:" in md
    # a hybrid scored both ways keeps both results, and the report shows both
    for scorer in ("causal", "mntp"):
        cli("eval", "blimp", "--run", runs["hybrid"], "--data", pairs, "--scorer", scorer)
    cli("report", runs["hybrid"], "--out", tmp_path / "h", "--format", "html", "--no-samples")
    page = (tmp_path / "h" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "<td>hybrid</td><td>causal</td>" in page and "<td>hybrid</td><td>mntp</td>" in page


# one result of each kind as hlm writes it (kind and schema aside), and the table row the report makes of it
MEASURE = {"measure": "exact", "tokens": 300, "nll_per_token": 2.5, "perplexity": 12.18, "bits_per_byte": 1.25}
TASK = {"metric": "accuracy", "value": 0.625, "n": 8, "ties": 1, "subsets": {}}
RESULTS = {
    "perplexity": (
        {"file": "valid.txt", "bytes": 900, "words": 150, "causal": MEASURE},
        "| r | causal (exact) | 300 | 2.5000 | 12.18 | 1.2500 |",
    ),
    "blimp": (
        {"scorer": "causal", "macro_accuracy": 0.75, "macro_stderr": 0.05, "n_pairs": 40, "ties": 2,
         "paradigms": {"a": {"accuracy": 0.75, "n": 40}}, "fields": {"syntax": {"accuracy": 0.75, "n": 40}}},
        "| r | causal | 75.0% ± 5.0 | 40 | 1 | 2 |",
    ),
    "babylm": (
        {"scorer": "causal", "convention": "hlm", "tasks": {"ewok": TASK}},
        "| r | causal | hlm | ewok | accuracy | 62.5% | 8 | 1 |",
    ),
    "checkpoint": (
        {"scorer": "causal", "convention": "hlm", "checkpoint": "words_1000", "words_seen": 1000,
         "tasks": {"ewok": TASK}},
        "| r | causal | ewok | 1000: 62.5% |",
    ),
    "aoa": (
        {"task": "aoa", "scorer": "causal", "value": 0.25, "n_words": 12, "words": {}, "note": "rebuilt"},
        "| r | causal | 0.250 | 12 | rebuilt |",
    ),
    "finetune": (
        {"task": "boolq", "metric": "accuracy", "value": 0.6, "stdev": 0.1, "seeds": [{}, {}],
         "majority_baseline": 0.55},
        "| r | boolq | accuracy | 0.600 ± 0.100 | 2 | 0.550 |",
    ),
    "generation": (
        {"sampler": "first-hitting", "num_samples": 4, "steps": None, "nfe": 16.0, "entropy": 3.5, "degenerate": 0.25},
        "| r | first-hitting | — | 16.0 | — | 3.50 | 25% | — | — | — |",
    ),
    "harness": (
        {"scorer": "causal", "num_fewshot": 3, "results": {"rte_icl": {"acc,none": 0.5, "acc_stderr,none": 0.05}},
         "majority": {"rte_icl": 0.52}},
        "| r | causal | rte\\_icl | 3 | 0.500 ± 0.050 | 0.520 |",
    ),
    "multilingual": (
        {"scorer": "causal", "convention": "official", "languages": {"nld": {"score": 62.5, "tasks": {
            "blimp_nl": {"acc": 62.5, "n": 8, "ties": 1}}}}},
        "| r | causal | official | nld | blimp\\_nl | 62.50 | 8 | 1 |",
    ),
    "finetune-multilingual": (
        {"convention": "official", "languages": {"zho": {"score": 21.5, "tasks": {
            "sib200": {"acc": 21.5, "n_scored": 200, "majority": 21.0}}}}},
        "| r | official | zho | sib200 | 21.50 | 200 | 21.00 |",
    ),
}  # fmt: skip


def _run_with(runs, tmp_path, kind: str, data: dict):
    from hybridlm.results import stamp

    run = tmp_path / "r"
    if not run.exists():
        shutil.copytree(runs["causal"], run, ignore=shutil.ignore_patterns("eval"))
    where = run / "eval" / ("checkpoints/words_1000/babylm-causal.json" if kind == "checkpoint" else f"{kind}.json")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(json.dumps(stamp(kind, data) if "kind" not in data else data))
    return run


@pytest.mark.parametrize("kind", sorted(RESULTS))
def test_each_kind_of_result_has_its_section(cli, runs, tmp_path, kind):
    from hybridlm.results import KINDS

    assert set(RESULTS) == set(KINDS)  # a new kind comes with its section and this test's example
    data, row = RESULTS[kind]
    run = _run_with(runs, tmp_path, kind, data)
    cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    assert row in (tmp_path / "rep" / "report.md").read_text()


# generation, harness and the multilingual results said their kind from the start
@pytest.mark.parametrize(
    "kind", sorted(set(RESULTS) - {"generation", "harness", "multilingual", "finetune-multilingual"})
)
def test_results_from_before_kinds_are_still_read(cli, runs, tmp_path, kind):
    data, row = RESULTS[kind]
    run = _run_with(runs, tmp_path, kind, data)
    (run / "eval" / "old.json").write_text(json.dumps(data))  # as hlm 0.1.0 wrote it: no kind, no schema
    for f in run.glob("eval/**/*.json"):
        if f.name != "old.json" and kind != "checkpoint":
            f.unlink()
    if kind == "checkpoint":
        (run / "eval" / "old.json").unlink()
        (run / "eval" / "checkpoints/words_1000/babylm-causal.json").write_text(json.dumps(data))
    cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    assert row in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("kind", sorted(RESULTS))
def test_a_result_that_does_not_fit_its_kind_is_skipped_with_a_warning(cli, runs, tmp_path, kind):
    data, row = RESULTS[kind]
    broken = {k: ("?" if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in data.items()}
    if kind == "perplexity":
        broken["causal"] = {**MEASURE, "tokens": "many"}
    if kind in ("babylm", "checkpoint"):
        broken["tasks"] = {"ewok": {**TASK, "metric": 3}}
    if kind == "harness":
        broken["results"] = []
    if kind == "multilingual":
        broken["languages"] = {"nld": {"score": 62.5, "tasks": {"blimp_nl": {"acc": "high", "n": 8, "ties": 1}}}}
    if kind == "finetune-multilingual":
        broken["languages"] = {"zho": {"score": 21.5, "tasks": {"sib200": {"acc": 21.5, "n_scored": "all"}}}}
    run = _run_with(runs, tmp_path, kind, broken)
    out = cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    assert row not in (tmp_path / "rep" / "report.md").read_text()
    assert "skipped" in out.stderr and f"not a {kind} result" in out.stderr, out.stderr


def test_unknown_kinds_and_newer_schemas_are_skipped_with_a_warning(cli, runs, tmp_path):
    data, row = RESULTS["blimp"]
    run = _run_with(runs, tmp_path, "blimp", data)
    (run / "eval" / "blimp.json").write_text(json.dumps({**data, "kind": "blimp", "schema": 99}))
    (run / "eval" / "other.json").write_text(json.dumps({"kind": "speedrun", "seconds": 3}))
    out = cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    assert row not in (tmp_path / "rep" / "report.md").read_text()
    assert "schema 99" in out.stderr and "upgrade hybridlm" in out.stderr
    assert "'speedrun' unknown to this hlm" in out.stderr


def test_every_result_hlm_writes_says_its_kind(runs, corpus, tmp_path):
    from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.evaluate.perplexity import evaluate_file
    from hybridlm.grammar import write_minimal_pairs
    from hybridlm.results import SCHEMA

    lm = RunLM(runs["causal"])
    text = tmp_path / "valid.txt"
    text.write_text(corpus.read_text()[:400])
    pairs = load_pairs([write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=1)], None)
    for kind, result in (("perplexity", evaluate_file(lm, text)), ("blimp", evaluate_pairs(lm, pairs))):
        assert list(result)[:2] == ["kind", "schema"] and (result["kind"], result["schema"]) == (kind, SCHEMA)


def test_groups_compare_the_weights_hlm_eval_reads(cli, runs, tmp_path):
    """A run that keeps a moving average of its weights enters the seed groups with its val_*_ema."""
    for seed, (raw, ema) in enumerate([(3.0, 2.5), (3.2, 2.7)], 1):
        run = tmp_path / "group" / f"seed_{seed}"
        shutil.copytree(runs["causal"], run, ignore=shutil.ignore_patterns("eval"))
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 31, "tokens": 10_000, "val_loss": raw, "val_loss_ema": ema}) + "\n")
    cli("report", *sorted((tmp_path / "group").iterdir()), "--out", tmp_path / "rep", "--no-samples",
        "--group-by", "folder")  # fmt: skip
    assert "| group | 2 | 2.6 ± 0.14 |" in (tmp_path / "rep" / "report.md").read_text()
