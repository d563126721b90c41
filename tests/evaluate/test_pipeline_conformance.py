"""The official BabyLM 2025 pipeline (`../shared/reference/evaluation-pipeline-2025`), run as its users
run it (its own entry points, on hlm's exports), against `hlm eval babylm` on the runs themselves:
every backend it has, every zero-shot task whose data is here (COMPS and WUG past tense on small
files written in their exact format), task by task and subset by subset, to the printed precision.
`hlm eval babylm --convention official` must print the pipeline's numbers; hlm's own convention may
differ from them only by the ties it reports. Age of acquisition: the pipeline's surprisal code and
its `AoAEvaluator` on hlm's surprisals give hlm's numbers.

The pipeline's Python dependencies come with the test extras (`pip install -e '.[test]'`)."""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import SHARED, assert_one_line_error, hlm
from test_scoring import SHAPE, _tiny_hf_model

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.evaluate.babylm import evaluate_babylm
from hybridlm.evaluate.lm import HFLM, RunLM
from hybridlm.export import export_run
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train

transformers = pytest.importorskip("transformers")
PIPELINE = SHARED.parent / "reference" / "evaluation-pipeline-2025"
BABYLM = SHARED / "babylm-2025"
GUTENBERG = SHARED / "gutenberg-10m"
pytestmark = pytest.mark.skipif(
    not (PIPELINE / "evaluation_pipeline").is_dir() or not BABYLM.is_dir() or not GUTENBERG.is_dir(),
    reason="needs ../shared/ (the official pipeline and the BabyLM data): present in CI",
)
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
TINY = dict(preset="tiny", seq_len=128, batch_size=16, lr=3e-3, eval_interval=0)  # a few seconds a run


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
    (root / "reading" / "reading_data.csv").write_text("\n".join(lines[:601]) + "\n", encoding="utf-8")  # 600 words
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
    ours = evaluate_babylm(RunLM(run), data, tasks=names, scorer=scorer, convention="official")
    assert ours["backend"] == backend
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
        **{**SHAPE, "vocab_size": 1024, "max_position_embeddings": 512},
        num_key_value_heads=4,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = _tiny_hf_model(tmp_path / "llama", transformers.LlamaForCausalLM, cfg, tok_dir)
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


def test_age_of_acquisition_equals_the_pipelines(models, tmp_path):
    from hybridlm.evaluate.aoa import read_aoa

    root = models["causal"][0].parent.parent
    run = tmp_path / "run"
    train(
        TrainConfig(
            data=str(root / "data"),
            out=str(run),
            objective="causal",
            max_steps=120,
            log_interval=40,
            checkpoint_words=["5K", "10K", "20K", "40K", "80K"],
            **TINY,
        ),
        quiet=True,
    )
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
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(PIPELINE), "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", AOA_PIPELINE, str(tmp_path / "job.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
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
