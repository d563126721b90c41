"""The official BabyLM 2025 pipeline (`../shared/reference/evaluation-pipeline-2025`), run as its users
run it (its own entry points, on hlm's exports), against `hlm eval babylm` on the runs themselves:
every backend it has, every zero-shot task whose data is here (COMPS and WUG past tense on small
files written in their exact format), task by task and subset by subset, to the printed precision.
`hlm eval babylm --convention official` must print the pipeline's numbers; hlm's own convention may
differ from them only by the ties it reports. Age of acquisition: the pipeline's surprisal code and
its `AoAEvaluator` on hlm's surprisals give hlm's numbers.

The pipeline's Python dependencies come with the test extras (`pip install -e '.[test]'`)."""

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap

import helpers
import pytest
from helpers import HF_SHAPE, SHARED, assert_one_line_error, hlm, tiny_hf_model

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.errors import UserError
from hybridlm.evaluate import submission
from hybridlm.evaluate.babylm import evaluate_babylm
from hybridlm.evaluate.lm import HFLM, RunLM
from hybridlm.export import export_run
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train

transformers = pytest.importorskip("transformers")
PIPELINE = SHARED.parent / "reference" / "evaluation-pipeline-2025"
BABYLM = SHARED / "babylm-2025"
GUTENBERG = SHARED / "gutenberg-10m"
pytestmark = [
    pytest.mark.skipif(
        not (PIPELINE / "evaluation_pipeline").is_dir() or not BABYLM.is_dir() or not GUTENBERG.is_dir(),
        reason="needs ../shared/ (the official pipeline and the BabyLM data): present in CI",
    ),
    pytest.mark.slow,  # runs the official pipeline: make test runs it, make test-fast does not
]
SENTENCE_TASKS = {  # hlm task -> (the pipeline's --task, the folder's name)
    "blimp": ("blimp", "blimp_fast"),
    "supplement": ("blimp", "supplement_fast"),
    "ewok": ("ewok", "ewok_filtered"),
    "entity_tracking": ("entity_tracking", "entity_tracking"),
    "wug_adj": ("wug_adj", "wug_adj_nominalization"),
    "wug_past": ("wug_past", "wug_past_tense"),
    "comps": ("comps", "comps"),
}


# ---------------------------------------------------------------- the pipeline, as a user runs it
def run_pipeline(model_dir, backend, data, out, tasks=tuple(SENTENCE_TASKS), reading=True, timeout=900) -> dict:
    """The pipeline's entry points (`python -m evaluation_pipeline.sentence_zero_shot.run`, `...reading.run`)
    on one exported model, in one process (runpy, as `python -m` runs them) so that imports are paid
    once. Returns what its reports print: {task: {"average": x, "subsets": {uid: x}}} and, for
    reading, {"reading_eye_tracking": x, "reading_self_paced": y}."""
    calls = [
        (
            "evaluation_pipeline.sentence_zero_shot.run",
            [
                "--model_path_or_name",
                str(model_dir),
                "--backend",
                backend,
                "--task",
                SENTENCE_TASKS[t][0],
                "--data_path",
                str(data / SENTENCE_TASKS[t][1]),
                "--output_dir",
                str(out),
                "--save_predictions",
            ],
        )
        for t in tasks
    ]
    if reading:
        calls.append(
            (
                "evaluation_pipeline.reading.run",
                [
                    "--model_path_or_name",
                    str(model_dir),
                    "--backend",
                    backend,
                    "--data_path",
                    str(data / "reading" / "reading_data.csv"),
                    "--output_dir",
                    str(out),
                ],
            )
        )
    script = textwrap.dedent(f"""
        import runpy, sys
        for module, argv in {calls!r}:
            sys.argv = [module] + argv
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    """)
    env = {
        **os.environ,
        "PYTHONPATH": str(PIPELINE),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_OFFLINE": "1",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=out.parent, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    base = out / model_dir.name / "main" / "zero_shot" / backend
    results = {}
    for t in tasks:
        report = (base / SENTENCE_TASKS[t][0] / SENTENCE_TASKS[t][1] / "best_temperature_report.txt").read_text()
        sections = dict(re.findall(r"### (.+?)\n(.*?)(?:\n\n|\Z)", report, re.S))
        uid = next(v for k, v in sections.items() if k.startswith("UID"))
        results[t] = {
            "average": float(next(v for k, v in sections.items() if k.startswith("AVERAGE")).strip()),
            "subsets": {k: float(v) for k, v in re.findall(r"^(.+): (-?[\d.]+|nan)$", uid, re.M)},
        }
    if reading:
        text = (base / "reading" / "report.txt").read_text()
        results["reading_eye_tracking"] = float(re.search(r"EYE TRACKING SCORE: (-?[\d.]+)", text)[1])
        results["reading_self_paced"] = float(re.search(r"SELF-PACED READING SCORE: (-?[\d.]+)", text)[1])
    return results


# ---------------------------------------------------------------- data and models
TINY = dict(helpers.TINY, seq_len=128, batch_size=16, lr=3e-3, eval_interval=0)  # a few seconds a run


def _subset(src, dst, every=1, limit=None, files=None):
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.jsonl"))[:files]:
        lines = f.read_text(encoding="utf-8").splitlines()[::every][:limit]
        (dst / f.name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_comps_and_wug_past(root):
    """Small files in the exact format the pipeline's read_files.py reads (their data is not public here)."""
    rng = random.Random(0)
    things = [
        ("A dog", "A table", "can bark."),
        ("A bird", "A spoon", "can fly."),
        ("A fish", "A lamp", "can swim."),
        ("A cow", "A shoe", "gives milk."),
        ("A tree", "A cup", "has leaves."),
        ("A baby", "A rock", "can cry."),
        ("A horse", "A book", "can run fast."),
        ("A bee", "A chair", "makes honey."),
        ("A cat", "A coat", "has whiskers."),
        ("A duck", "A plate", "can quack."),
    ]
    (root / "comps").mkdir()
    for stem in ("comps_base", "comps_wugs", "comps_wugs_dist-before", "comps_wugs_dist-in_between"):
        rows = []
        for good, bad, phrase in things:
            if stem != "comps_base":  # a nonce word defined as the concept, as COMPS-WUGS does
                wug = rng.choice(["A wug", "A dax", "A blicket", "A toma"])
                good, bad = f"{wug} is a {good[2:]}. {wug}", f"{wug} is a {bad[2:]}. {wug}"
            rows.append({"prefix_acceptable": good, "prefix_unacceptable": bad, "property_phrase": phrase})
        (root / "comps" / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    verbs = ["spling", "bize", "gleed", "frink", "rask", "blorn", "nace", "plim", "trave", "shend", "crog", "zeep"]
    past = {
        "spling": "splung",
        "bize": "boze",
        "gleed": "gled",
        "frink": "frank",
        "rask": "rusk",
        "blorn": "blarn",
        "nace": "noce",
        "plim": "plam",
        "trave": "trove",
        "shend": "shent",
        "crog": "crug",
        "zeep": "zept",
    }
    (root / "wug_past_tense").mkdir()
    rows = [
        {
            "sentences": f"Yesterday they {v}ed the ball.\tYesterday they {past[v]} the ball.",
            "ratio": round(rng.random(), 3),
        }
        for v in verbs
    ]
    (root / "wug_past_tense" / "wug_past_tense.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A few files of every task, in the official folders' layout."""
    root = tmp_path_factory.mktemp("babylm")
    fast, full = BABYLM / "fast_eval", BABYLM / "full_eval"
    _subset(fast / "blimp_fast", root / "blimp_fast", every=10, files=6)
    _subset(fast / "supplement_fast", root / "supplement_fast", every=2)  # where the MNTP export went wrong
    _subset(full / "ewok_filtered", root / "ewok_filtered", every=60, files=4)
    _subset(full / "entity_tracking", root / "entity_tracking", every=379)
    _subset(fast / "wug_adj_nominalization", root / "wug_adj_nominalization", every=2)
    (root / "reading").mkdir()
    lines = (fast / "reading" / "reading_data.csv").read_text(encoding="utf-8").splitlines()
    # 600 words, and the one whose previous context is "None" (pandas reads it as missing: the pipeline scores
    # no previous word there)
    none = next(line for line in lines if ",None," in line and line.split(",")[0].isdigit())
    (root / "reading" / "reading_data.csv").write_text("\n".join(lines[:601] + [none]) + "\n", encoding="utf-8")
    _write_comps_and_wug_past(root)
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny runs on a Gutenberg slice (a real-English tokenizer, so the texts fit), each exported."""
    root = tmp_path_factory.mktemp("conformance")
    text = root / "train.txt"
    with open(GUTENBERG / "train.txt", encoding="utf-8") as f:
        text.write_text(f.read(1_500_000), encoding="utf-8")
    train_tokenizer([text], vocab_size=1024, out_dir=root / "tok")
    prepare([text], root / "tok", root / "data", val_fraction=0.02)
    out = {}
    for objective in ("causal", "masked", "hybrid", "mntp"):
        # 512 positions, as `small`: entity tracking's longest items are ~270 tokens with this vocabulary
        cfg = TrainConfig(
            data=str(root / "data"),
            out=str(root / "runs" / objective),
            objective=objective,
            model={"max_seq_len": 512},
            max_steps=40,
            log_interval=20,
            **TINY,
        )
        train(cfg, quiet=True)
        out[objective] = (root / "runs" / objective, export_run(root / "runs" / objective, root / "hf" / objective))
    return out


def _equal_json(ours, theirs, where="", rel=1e-9, abs_=1e-12):
    """JSON values equal, floats to `rel` (NaN equal to NaN)."""
    if isinstance(theirs, float) or isinstance(ours, float):
        assert isinstance(ours, (int, float)) and isinstance(theirs, (int, float)), where
        assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, rel=rel, abs=abs_), (
            where,
            ours,
            theirs,
        )
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), (where, sorted(ours)[:5], sorted(theirs)[:5])
        for k in theirs:
            _equal_json(ours[k], theirs[k], f"{where}/{k}", rel, abs_)
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (where, len(ours), len(theirs))
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _equal_json(a, b, f"{where}[{i}]", rel, abs_)
    else:
        assert ours == theirs, (where, ours, theirs)


def assert_same_predictions(ours, theirs, n_tasks):
    """Every predictions.json the pipeline wrote (--save_predictions) equals hlm's, item by item: the same ids and
    chosen texts; WUG's softmax share and reading's surprisals to float precision (the pipeline sums log-probabilities
    in fp32, hlm in fp64)."""
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("predictions.json"))
    assert len(files) == n_tasks
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("predictions.json"))
    for f in files:
        got, want = (json.loads((root / f).read_text()) for root in (ours, theirs))
        _equal_json(got, want, str(f), rel=1e-4, abs_=1e-4)


def _check(task, got: dict, want: dict, hlm_own: dict | None = None):
    """hlm's numbers (fractions) printed as the pipeline prints them (percent, two decimals)."""
    scale = 1 if task.startswith("wug") else 100
    assert round(scale * got["value"], 2) == pytest.approx(want["average"], abs=0.0051), (task, got["value"], want)
    for uid, value in want["subsets"].items():
        if task.startswith("wug"):
            continue  # one correlation: the average
        assert round(100 * got["subsets"][uid], 2) == pytest.approx(value, abs=0.0051), (task, uid)
    if hlm_own is not None and not task.startswith("wug"):  # hlm's convention: the same, less the ties
        for uid, n in hlm_own["subset_n"].items():
            assert round(hlm_own["subsets"][uid] * n) + hlm_own["subset_ties"][uid] == round(got["subsets"][uid] * n), (
                task,
                uid,
            )


@pytest.mark.parametrize(
    "objective,view,scorer,backend,tasks,reading",
    [
        ("causal", "", "causal", "causal", tuple(SENTENCE_TASKS), True),
        ("masked", "", "pll", "mlm", tuple(SENTENCE_TASKS), True),
        ("hybrid", "masked_lm", "mntp", "mntp", tuple(SENTENCE_TASKS), True),
        # the same backends on another export: a few tasks suffice (reading once per backend, above)
        ("mntp", "", "mntp", "mntp", ("supplement", "comps", "wug_past"), False),
        ("hybrid", "", "causal", "causal", ("supplement", "ewok", "entity_tracking"), False),
    ],
)
def test_official_pipeline_prints_hlms_numbers(
    models, data, tmp_path, objective, view, scorer, backend, tasks, reading
):
    run, export = models[objective]
    export = export / view if view else export
    official = run_pipeline(export, backend, data, tmp_path / "results", tasks=tasks, reading=reading)
    names = list(tasks) + (["reading_eye_tracking", "reading_self_paced"] if reading else [])
    # the numbers, and the predictions tree of a submission (hlm eval babylm --predictions) in the same pass
    tree = submission.Tree(tmp_path / "hlm", export.name, backend)
    ours = submission.predict_model(RunLM(run), data, names, scorer, "official", 1, tree)
    assert ours["backend"] == backend
    assert_same_predictions(tree.model_dir, tmp_path / "results" / export.name, len(tasks) + reading)
    own = evaluate_babylm(RunLM(run), data, tasks=list(tasks), scorer=scorer)
    for task in tasks:
        _check(task, ours["tasks"][task], official[task], own["tasks"][task])
    for task in ("reading_eye_tracking", "reading_self_paced"):
        if task in official:
            assert round(ours["tasks"][task]["value"], 2) == pytest.approx(official[task], abs=0.0101), task
    # the export itself, read by hlm as a local HF model, gives the same official numbers
    checked = [t for t in ("supplement", "comps") if t in tasks]
    hf = evaluate_babylm(
        HFLM(export, trust_remote_code=True), data, tasks=checked, scorer=scorer, convention="official"
    )
    for task in checked:
        _check(task, hf["tasks"][task], official[task])


def test_official_convention_on_an_hf_model_without_bos(tmp_path, data, models):
    """A tokenizer that adds no <s>: the pipeline never scores a text's first token, nor does hlm's official
    convention."""
    tok_dir = models["causal"][0].parent.parent / "tok"
    cfg = transformers.LlamaConfig(
        **{**HF_SHAPE, "vocab_size": 1024, "max_position_embeddings": 512},
        num_key_value_heads=4,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = tiny_hf_model(tmp_path / "llama", transformers.LlamaForCausalLM, cfg, tok_dir)
    assert transformers.AutoTokenizer.from_pretrained(model)("the cat")["input_ids"][0] != 1
    tasks = ("supplement", "entity_tracking")
    official = run_pipeline(model, "causal", data, tmp_path / "results", tasks=tasks, reading=False)
    ours = evaluate_babylm(HFLM(model), data, tasks=list(tasks), convention="official")
    for task in tasks:
        _check(task, ours["tasks"][task], official[task])


def test_an_mntp_export_from_before_the_fix_is_refused_with_what_to_do(cli, models, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(models["hybrid"][1], old)
    config = json.loads((old / "masked_lm" / "config.json").read_text())
    (old / "masked_lm" / "config.json").write_text(json.dumps({**config, "mntp_shift": True}))
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    proc = cli("eval", "blimp", "--hf-model", old / "masked_lm", "--trust-remote-code", "--data", pairs, check=False)
    assert_one_line_error(proc, "export the run again", f"--run {models['hybrid'][0]}")


# ---------------------------------------------------------------- age of acquisition
AOA_PIPELINE = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor
    from evaluation_pipeline.AoA_word.eval_util import StepConfig
    from evaluation_pipeline.AoA_word.evaluation_functions import StepSurprisalExtractor
    from evaluation_pipeline.utils import AoAEvaluator

    job = json.load(open(sys.argv[1]))
    fit = AoAEvaluator(job["cdi_human"]).compute_curve_fitness({"results": job["results"]})
    extractor = StepSurprisalExtractor(StepConfig(track="strict-small"), job["export"], "causal", "cpu")
    model = AutoModelForCausalLM.from_pretrained(job["export"]).eval()
    processor = AutoProcessor.from_pretrained(job["export"], padding_side="right")
    surprisals = [extractor.compute_surprisal(model, processor, processor, c, w, use_bos_only=False)
                  for w, c in job["contexts"]]
    print(json.dumps({"r": fit["curve_fitness"], "n_words": fit["n_words"], "surprisals": surprisals,
                      **{k: fit[k] for k in ("valid_words", "model_aoas", "child_aoas")}}))
""")


@pytest.fixture(scope="module")
def curve_run(models, tmp_path_factory):
    """A causal run with words_N checkpoints (a submission's chck_* revisions, AoA's learning curve)."""
    root = models["causal"][0].parent.parent
    run = tmp_path_factory.mktemp("curve") / "run"
    train(
        TrainConfig(
            data=str(root / "data"),
            out=str(run),
            objective="causal",
            model={"max_seq_len": 512},  # entity tracking's longest items
            max_steps=120,
            log_interval=40,
            checkpoint_words=["5K", "10K", "20K", "40K", "80K"],
            **TINY,
        ),
        quiet=True,
    )
    return run


def test_age_of_acquisition_equals_the_pipelines(curve_run, tmp_path):
    from hybridlm.evaluate.aoa import read_aoa

    run = shutil.copytree(curve_run, tmp_path / "run")
    aoa = tmp_path / "eval" / "aoa"  # every word, its first four contexts
    aoa.mkdir(parents=True)
    full = json.loads((BABYLM / "full_eval" / "aoa" / "cdi_childes.json").read_text())
    (aoa / "cdi_childes.json").write_text(json.dumps({w: entries[:4] for w, entries in full.items()}))
    shutil.copy(BABYLM / "full_eval" / "aoa" / "cdi_human.csv", aoa)
    out = hlm("eval", "babylm", "--run", run, "--all-checkpoints", "--data", aoa.parent, "--tasks", "aoa").stdout
    assert "age of acquisition: Pearson r" in out and "rebuilt from Wordbank" in out
    ours = json.loads((run / "eval" / "aoa-causal.json").read_text())
    assert ours["n_words"] >= 3 and -1 <= ours["value"] <= 1
    # the pipeline's evaluator on hlm's surprisals, its checkpoints named as the submission's branches
    data = read_aoa(aoa)
    results, by_checkpoint = [], {}
    for name in ours["checkpoints"]:
        surprisals = json.loads((run / "eval" / "checkpoints" / name / "babylm-causal.json").read_text())["tasks"][
            "aoa"
        ]["surprisals"]
        by_checkpoint[name] = surprisals
        pairs = [(w, c) for w, cs in zip(data.words, data.contexts) for c in cs]
        results += [
            {"step": "chck_" + name[len("words_") :], "target_word": w, "surprisal": s}
            for (w, _), s in zip(pairs, surprisals)
        ]
    export = export_run(run, tmp_path / "hf", checkpoint=ours["checkpoints"][-1])
    picked = list(range(0, len(pairs), len(pairs) // 12))[:12]
    job = {
        "cdi_human": str(aoa / "cdi_human.csv"),
        "results": results,
        "export": str(export),
        "contexts": [pairs[i] for i in picked],
    }
    theirs = json.loads(run_script(AOA_PIPELINE, job, tmp_path).strip().splitlines()[-1])
    assert theirs["n_words"] == ours["n_words"] and theirs["valid_words"] == list(ours["words"])
    # A tiny model's learning curves are flat, so a word's sigmoid fit can be ill-conditioned: a 1-ulp change of
    # the surprisals moved the pipeline's own r by up to 0.04 on this data, and its r once moved by 3e-5 between
    # two processes on the same surprisals. So every word's AoAs must agree but one, and r exactly when all do.
    words = zip(theirs["valid_words"], theirs["model_aoas"], theirs["child_aoas"])
    off = [w for w, m, c in words if abs(m - ours["words"][w]["model"]) + abs(c - ours["words"][w]["child"]) > 1e-9]
    assert len(off) <= 1, off
    if not off:
        assert theirs["r"] == pytest.approx(ours["value"], abs=1e-9)
    last = by_checkpoint[ours["checkpoints"][-1]]
    assert theirs["surprisals"] == pytest.approx([last[i] for i in picked], abs=1e-4)
    # and the report plots model against child AoA
    hlm("report", run, "--out", tmp_path / "rep", "--no-samples")
    assert (tmp_path / "rep" / "aoa.png").is_file() and "Age of acquisition" in (
        tmp_path / "rep" / "report.md"
    ).read_text()


# ---------------------------------------------------------------- the submission file
COLLATE = textwrap.dedent("""
    import argparse, json, pathlib, sys
    import evaluation_pipeline.collate_preds as c

    job = json.load(open(sys.argv[1]))
    # the revisions a tiny run has and the sizes of the data it scored, in place of the official ones
    c.STRICT_SMALL_FAST_REVISIONS, c.FAST_SIZES, c.FULL_SIZES, c.AOA_SIZE = job["checks"]
    c.collate_preds(argparse.Namespace(
        model_path_or_name=pathlib.Path(job["model"]), backend="causal", results_dir=pathlib.Path(job["results"]),
        revision_name="main", fast=True, fast_eval_dir=pathlib.Path(job["fast_data"]), track="strict-small",
        multimodal=False))
""")
GLUE_FIELDS = {"boolq": 2, "mnli": 3, "mrpc": 2, "multirc": 2, "qqp": 2, "rte": 2, "wsc": 2}


def _submission_data(root):
    """Full and fast folders named as the official ones (a few items each; a fast subset's size is one number, as
    collate_preds checks it), the first context of 30 AoA words, and GLUE files for the seven tasks."""
    full, fast = root / "full", root / "fast"
    official_full, official_fast = BABYLM / "full_eval", BABYLM / "fast_eval"
    _subset(official_full / "blimp_filtered", full / "blimp_filtered", every=100, files=3)
    _subset(official_full / "supplement_filtered", full / "supplement_filtered", every=200)
    _subset(official_full / "ewok_filtered", full / "ewok_filtered", every=300, files=3)
    _subset(official_full / "entity_tracking", full / "entity_tracking", every=600)
    _subset(official_fast / "blimp_fast", fast / "blimp_fast", limit=8, files=3)
    _subset(official_fast / "supplement_fast", fast / "supplement_fast", limit=4)
    _subset(official_full / "ewok_filtered", fast / "ewok_fast", limit=5, files=3)
    _subset(official_fast / "entity_tracking_fast", fast / "entity_tracking_fast", every=150)
    lines = (official_fast / "reading" / "reading_data.csv").read_text(encoding="utf-8").splitlines()
    for folder in (full, fast):
        _subset(official_fast / "wug_adj_nominalization", folder / "wug_adj_nominalization", every=20)
        (folder / "reading").mkdir()
        (folder / "reading" / "reading_data.csv").write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")
        _write_comps_and_wug_past(folder)
    shutil.rmtree(fast / "comps")  # the fast evaluation has none
    write_aoa_and_glue(root, words=30, rows=(8, 6))
    return root


def write_aoa_and_glue(root, words=None, rows=(8, 6)):
    """ROOT/aoa_data/aoa: the first context of each AoA word (the first `words` of them; all by default), and
    ROOT/glue: (train, valid) rows of a made-up sentence for each of the seven GLUE tasks."""
    from hybridlm.finetune import TASKS

    aoa = root / "aoa_data" / "aoa"
    aoa.mkdir(parents=True)
    contexts = json.loads((BABYLM / "full_eval" / "aoa" / "cdi_childes.json").read_text())
    (aoa / "cdi_childes.json").write_text(json.dumps({w: e[:1] for w, e in list(contexts.items())[:words]}))
    shutil.copy(BABYLM / "full_eval" / "aoa" / "cdi_human.csv", aoa)
    (root / "glue").mkdir()
    for task, labels in GLUE_FIELDS.items():
        for split, n in zip(("train", "valid"), rows):
            made = [
                {**{f: f"the cat {i} sat on the mat" for f in TASKS[task][0]}, "label": i % labels} for i in range(n)
            ]
            (root / "glue" / f"{task}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made))


def run_script(script: str, job: dict, folder, timeout=600) -> str:
    """A script run against the pipeline's own modules, given a job file in `folder`; returns what it printed."""
    (folder / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(PIPELINE), "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", script, str(folder / "job.json")]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _sizes(data) -> tuple[dict, list]:
    """The data's sizes as hlm's collate takes them, and as collate_preds' constants (FAST_SIZES, FULL_SIZES,
    AOA_SIZE) under its task names."""
    from collections import Counter

    from hybridlm.evaluate.aoa import read_aoa
    from hybridlm.evaluate.babylm import read_task

    def counts(folder, tasks):
        out = {}
        for task, name in tasks:
            if task == "reading":
                out[task] = {"reading": len(read_task("reading_eye_tracking", folder / name).rows)}
            else:
                out[task] = dict(Counter(it.subset.lower() for it in read_task(task, folder / name).items))
        return out

    ours = {
        "full": counts(data / "full", submission.FULL_TASKS),
        "fast": counts(data / "fast", submission.FAST_TASKS),
        "finetune": {t: len((data / "glue" / f"{t}.valid.jsonl").read_text().splitlines()) for t in GLUE_FIELDS},
        "aoa": len(read_aoa(data / "aoa_data" / "aoa").texts()),  # words of one letter are never scored
    }
    single = lambda d: next(iter(set(d.values()))) if len(set(d.values())) == 1 else d  # noqa: E731
    name = lambda t: submission.COLLATED_KEY.get(t, t)  # noqa: E731
    full = {name(t): (single(d) if t in ("wug_adj", "wug_past", "reading") else d) for t, d in ours["full"].items()}
    fast = {name(t): (d if t == "entity_tracking" else single(d)) for t, d in ours["fast"].items()}
    return ours, [None, fast, {**full, **ours["finetune"]}, ours["aoa"]]


def test_submission_equals_collate_preds(curve_run, tmp_path, cli):
    """hlm's predictions tree of a run with checkpoints (zero-shot on the final model, the fast tasks on every
    chck_*, AoA, GLUE), collated by hlm submission and by the pipeline's collate_preds: the same file."""
    data = _submission_data(tmp_path / "data")
    run, out = shutil.copytree(curve_run, tmp_path / "run"), tmp_path / "results"
    official = ("--convention", "official", "--predictions", out)
    cli("eval", "babylm", "--run", run, "--data", data / "full", *official)
    cli("eval", "babylm", "--run", run, "--data", data / "fast", "--all-checkpoints", *official)
    cli("eval", "babylm", "--run", run, "--data", data / "aoa_data", "--tasks", "aoa", "--all-checkpoints", *official)
    for task in GLUE_FIELDS:
        cli("finetune", "--run", run, "--task", task, "--data", data / "glue", "--epochs", "1", "--predictions", out)
    revisions = [f"chck_{n}K" for n in (5, 10, 20, 40, 80)]
    sizes, checks = _sizes(data)
    ours = submission.collate(out / "run", "causal", "strict-small", data / "fast", revisions, sizes)
    assert len(ours["fast_eval_results"]["blimp"]) == 5 and len(ours["glue"]) == 7
    theirs_root = shutil.copytree(out, tmp_path / "pipeline-results")  # collate_preds writes its file into the tree
    job = {
        "checks": [revisions, *checks[1:]],
        "model": "run",
        "results": str(theirs_root),
        "fast_data": str(data / "fast"),
    }
    run_script(COLLATE, job, tmp_path, timeout=300)
    theirs = json.loads((theirs_root / "run" / "all_full_preds_and_fast_scores_causal.json").read_text())
    # the same file; the reading scores' regressions are statsmodels' there and numpy's here
    _equal_json(json.loads(json.dumps(ours)), theirs, rel=1e-7, abs_=1e-10)
    # the diffusion bound (or any hlm scorer) is collated under its own name, which the file states
    shutil.copytree(out / "run", tmp_path / "elbo" / "run")
    for revision in ["main", *revisions]:
        zero_shot = tmp_path / "elbo" / "run" / revision / "zero_shot"
        (zero_shot / "causal").rename(zero_shot / "elbo")
    relabelled = submission.collate(tmp_path / "elbo" / "run", "elbo", "strict-small", data / "fast", revisions, sizes)
    assert relabelled.pop("hlm")["backend"] == "elbo" and relabelled == ours
    # a task short of its size is refused in one line, naming the file and subset
    short = out / "run" / "chck_10K" / "zero_shot" / "causal" / "ewok" / "ewok_fast" / "predictions.json"
    preds = json.loads(short.read_text())
    preds[next(iter(preds))]["predictions"].pop()
    short.write_text(json.dumps(preds))
    short_by_one = r"chck_10K/.*ewok_fast/predictions.json: subset .* has 4 predictions, the official data 5"
    with pytest.raises(UserError, match=short_by_one):
        submission.collate(out / "run", "causal", "strict-small", data / "fast", revisions, sizes)
