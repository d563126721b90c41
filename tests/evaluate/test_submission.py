"""hlm submission's checks at the official sizes (a tree written here, item counts as the leaderboard's), the
--predictions folder's rules, and predictions of a scorer the pipeline has no backend for. The tree's equality with
the pipeline's own files and its collate_preds is in test_pipeline_conformance.py."""

import json
import shutil

import pytest
from helpers import SHARED, assert_one_line_error

from hybridlm.errors import UserError
from hybridlm.evaluate import submission


def _official_tree(root, backend="causal", track="strict-small"):
    """A complete tree at the official sizes (predictions that are only placeholders): what hlm submission checks
    before it scores anything."""
    sizes = submission.official_sizes()
    tree = submission.Tree(root, "model", backend)

    def preds(want):
        return {k: {"predictions": [{"id": f"{k}_{i}", "pred": "x"} for i in range(n)]} for k, n in want.items()}

    for revision, tasks, kind in [("main", submission.FULL_TASKS, "full")] + [
        (r, submission.FAST_TASKS, "fast") for r in submission.TRACKS[track]
    ]:
        for task, dataset in tasks:
            tree.write(tree.task_file(revision, task, dataset), preds(submission._expected(kind, task, sizes)))
    for task in submission.GLUE:
        tree.write(tree.finetune_file(task), preds({task: sizes["finetune"][task]}))
    rows = [{"step": r, "surprisal": 1.0} for r in submission.TRACKS[track] for _ in range(sizes["aoa"])]
    tree.write(tree.aoa_file(), {"metadata": {}, "results": rows})
    return tree


@pytest.fixture(scope="module")
def official_tree(tmp_path_factory):
    return _official_tree(tmp_path_factory.mktemp("tree") / "results")


def _damage(tree, how):
    if how == "missing revision":
        for f in sorted((tree.model_dir / "chck_7M").rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (tree.model_dir / "chck_7M").rmdir()
    elif how == "wrong size":
        path = tree.task_file("chck_3M", "blimp", "blimp_fast")
        preds = json.loads(path.read_text())
        preds["wh_island"]["predictions"].pop()
        path.write_text(json.dumps(preds))
    elif how == "aoa revision":
        path = tree.aoa_file()
        aoa = json.loads(path.read_text())
        aoa["results"] = [r for r in aoa["results"] if r["step"] != "chck_30M"]
        path.write_text(json.dumps(aoa))


@pytest.mark.parametrize(
    "how,backend,needles",
    [
        (
            "missing revision",
            "causal",
            ["incomplete", "no chck_7M/zero_shot/causal/", "hlm eval babylm --all-checkpoints"],
        ),
        ("wrong size", "causal", ["chck_3M/zero_shot/causal/blimp/blimp_fast/predictions.json", "wh_island", "199"]),
        ("aoa revision", "causal", ["AoA_word/surprisal.json", "no surprisals for revision chck_30M"]),
        ("another backend", "mlm", ["no predictions of the mlm backend", "--backend causal"]),
        ("strict track", "causal", ["incomplete", "no chck_200M"]),  # strict's revisions go on to 1000M
    ],
)
def test_submission_refuses_an_incomplete_or_mismatched_tree_in_one_line(
    official_tree, tmp_path, cli, how, backend, needles
):
    tree = submission.Tree(shutil.copytree(official_tree.root, tmp_path / "results"), "model", "causal")
    _damage(tree, how)
    out = tmp_path / "submission.json"
    track = "strict" if how == "strict track" else "strict-small"
    flags = ("--track", track, "--backend", backend, "--data", tmp_path / "fast", "--out", out)
    proc = cli("submission", "--predictions", tree.root, *flags, check=False)
    assert_one_line_error(proc, *needles)
    assert not out.exists()


def test_a_complete_tree_passes_every_check_and_reaches_the_fast_scores(official_tree, tmp_path):
    """At the official sizes nothing is refused until the fast scores, which need the fast data."""
    with pytest.raises(UserError, match="--data: no .*blimp_fast/adjunct_island.jsonl"):
        submission.collate(official_tree.model_dir, "causal", "strict-small", tmp_path)


def test_the_official_sizes_are_the_official_datas():
    """The sizes the leaderboard checks (from collate_preds.py) are the counts of the data in ../shared."""
    from collections import Counter

    from hybridlm.evaluate.babylm import read_task

    root = SHARED / "babylm-2025"
    if not root.is_dir():
        pytest.skip("needs ../shared/data/babylm-2025 (present in CI)")
    sizes = submission.official_sizes()
    for kind, tasks in (("full", submission.FULL_TASKS), ("fast", submission.FAST_TASKS)):
        folder = root / f"{kind}_eval"
        for task, dataset in tasks:
            if not (folder / dataset).is_dir():
                continue  # COMPS, WUG past tense and the fast EWoK are not published here
            if task == "reading":
                assert len(read_task("reading_eye_tracking", folder / dataset).rows) == sizes[kind]["reading"]
                continue
            counts = Counter(it.subset.lower() for it in read_task(task, folder / dataset).items)
            assert counts == submission._expected(kind, task, sizes), (kind, task)
    for task, n in sizes["finetune"].items():
        valid = root / "full_eval" / "glue_filtered" / f"{task}.valid.jsonl"
        if valid.is_file():
            assert len(valid.read_text().splitlines()) == n, task


def test_ties_pick_the_right_option_officially_and_never_in_hlms_convention():
    assert submission._choice([-1.0, -1.0, -3.0], official_rule=True) == 0
    assert submission._choice([-1.0, -3.0, -1.0], official_rule=False) == 2
    assert submission._choice([-1.0, -3.0, -2.0], official_rule=False) == 0
    assert submission._choice([-4.0, -3.0, -2.0], official_rule=True) == 2


def test_predictions_folder_rules(tmp_path, runs, cli):
    data = tmp_path / "supplement_fast"
    data.mkdir()
    (data / "hypernym.jsonl").write_text(
        json.dumps({"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}) + "\n"
    )
    base = ("eval", "babylm", "--run", runs["causal"], "--data", data, "--convention", "official", "--predictions")
    cases = [
        (runs["causal"] / "results", ["inside the run folder"]),  # inside a run
        (data / "results", ["overlaps the input"]),  # inside the data
        (tmp_path, ["overlaps the input"]),  # holding the data
    ]
    foreign = tmp_path / "mine"
    (foreign / "notes").mkdir(parents=True)
    (foreign / "notes" / "todo.txt").write_text("keep me")
    cases.append((foreign, ["not part of a BabyLM results tree"]))
    for folder, needles in cases:
        assert_one_line_error(cli(*base, folder, check=False), *needles)
    assert (foreign / "notes" / "todo.txt").read_text() == "keep me" and not (runs["causal"] / "results").exists()
    # the causal scorer in hlm's convention would fill the pipeline's causal folder with other numbers
    proc = cli(*base[:-3], "--predictions", tmp_path / "r", check=False)
    assert_one_line_error(proc, "add --convention official")
    # an hlm scorer the pipeline has no backend for fills a folder of its own name, in hlm's convention
    cli("eval", "babylm", "--run", runs["diffusion"], "--data", data, "--predictions", tmp_path / "r")
    written = tmp_path / "r" / "diffusion" / "main" / "zero_shot" / "elbo" / "blimp" / "supplement_fast"
    preds = json.loads((written / "predictions.json").read_text())
    assert list(preds) == ["hypernym"] and preds["hypernym"]["predictions"][0]["id"] == "hypernym_0"
    assert preds["hypernym"]["predictions"][0]["pred"] in ("the cat sleeps .", "the cat sleep .")
