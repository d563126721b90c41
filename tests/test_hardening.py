"""Bad input, faults and crafted files: every CLI path ends in one line naming the fix, never a
traceback, and never loses or writes outside a user's run (the findings of a 120-case probe)."""

import json
import os
import shutil

import pytest
import torch
from helpers import assert_one_line_error, hlm, run_cli, tiny_flags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridlm.runs import RunDir

TRAIN = tiny_flags(max_steps=2, eval_interval=0)


@pytest.fixture
def run_copy(runs, tmp_path):
    """A copy of a trained causal run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(runs["causal"], dst)
    return dst


# ---------------------------------------------------------------- the table (finding 8)
def _cases(tmp, data, tok, run, pairs, corpus):
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "blank.txt").write_text("\n\n\n")
    (tmp / "latin1.jsonl").write_bytes('{"sentence_good": "caf\xe9", "sentence_bad": "x"}\n'.encode("latin-1"))
    (tmp / "array.jsonl").write_text('["a", "b"]\n')
    (tmp / "folder").mkdir(exist_ok=True)
    (tmp / "afile").write_text("x")
    train = ["train", "--data", data, "--out", tmp / "new"] + TRAIN
    return {
        "negative lr": (train + ["--lr", "-0.01"], "lr"),
        "beta1 above 1": (train + ["--beta1", "1.5"], "beta1"),
        "checkpoint interval 0": (train + ["--checkpoint-interval", "0"], "checkpoint_interval"),
        "log interval 0": (train + ["--log-interval", "0"], "log_interval"),
        "max span 0": (train + ["--objective", "masked", "--max-span", "0"], "max_span"),
        "device tpu": (train + ["--device", "tpu"], "device"),
        "model value not a number": (train + ["--model", '{"n_layer": "two"}'], "n_layer"),
        "n_layer 0": (train + ["--model", '{"n_layer": 0}'], "n_layer"),
        "config that is a list": (train + ["--config", tmp / "list.json"], "list"),
        "eval batches 0": (train + ["--eval-batches", "0"], "eval_batches"),
        "negative warmup": (train + ["--warmup-fraction", "-0.1"], "warmup_fraction"),
        "negative weight decay": (train + ["--weight-decay", "-1"], "weight_decay"),
        "wordpiece vocab -1": (
            [
                "tokenizer",
                "train",
                "--input",
                tmp / "blank.txt",
                "--vocab-size",
                "-1",
                "--kind",
                "wordpiece",
                "--out",
                tmp / "tk",
            ],
            "vocab-size",
        ),
        "min frequency -1": (
            [
                "tokenizer",
                "train",
                "--input",
                corpus,
                "--vocab-size",
                "300",
                "--min-frequency",
                "-1",
                "--out",
                tmp / "tk",
            ],
            "min-frequency",
        ),
        "corpus of blank lines": (
            ["tokenizer", "train", "--input", tmp / "blank.txt", "--vocab-size", "300", "--out", tmp / "tk"],
            "blank",
        ),
        "prepare into the tokenizer folder": (
            ["prepare", "--input", tmp / "afile", "--tokenizer", tok, "--out", tok],
            "tokenizer",
        ),
        "blimp limit 0": (["eval", "blimp", "--run", run, "--data", pairs, "--limit", "0"], "--limit"),
        "blimp line not UTF-8": (["eval", "blimp", "--run", run, "--data", tmp / "latin1.jsonl"], "UTF-8"),
        "blimp line not an object": (["eval", "blimp", "--run", run, "--data", tmp / "array.jsonl"], "object"),
        "perplexity seq-len 1": (
            ["eval", "perplexity", "--run", run, "--input", tmp / "afile", "--seq-len", "1"],
            "seq-len",
        ),
        "--json a folder": (["eval", "blimp", "--run", run, "--data", pairs, "--json", tmp / "folder"], "folder"),
        "top-p -1": (["generate", "--run", run, "--top-p", "-1"], "--top-p"),
        "top-k -1": (["generate", "--run", run, "--top-k", "-1"], "--top-k"),
        "min-p 2": (["generate", "--run", run, "--min-p", "2"], "--min-p"),
        "generate steps -1": (["generate", "--run", run, "--steps", "-1"], "--steps"),  # 0: one round per token
        "infill top-p -1": (["infill", "--run", run, "--text", "a <mask>", "--top-p", "-1"], "--top-p"),
        "infill span 0": (["infill", "--run", run, "--text", "a <mask>", "--span", "0"], "--span"),
        "export onto a file": (["export", "--run", run, "--out", tmp / "afile"], "not a folder"),
        "demo steps 0": (["demo", "--steps", "0"], "--steps"),
        "unknown objective": (train + ["--objective", "gpt"], "unknown objective"),
        # issue 26: every numeric flag finite and in range, resources bounded before anything is allocated
        "seed -1": (train + ["--seed=-1"], "seed"),
        "frequency masking nan": (
            train + ["--objective", "diffusion", "--frequency-masking", "nan"],
            "frequency_masking",
        ),
        "frequency masking inf": (
            train + ["--objective", "diffusion", "--frequency-masking", "inf"],
            "frequency_masking",
        ),
        "frequency masking 1e30": (
            train + ["--objective", "diffusion", "--frequency-masking", "1e30"],
            "frequency_masking",
        ),
        "z-loss 1e30": (train + ["--z-loss", "1e30"], "z_loss"),
        "batch of a million rows": (train + ["--batch-size", "1000000"], "--batch-size"),
        "generate temperature inf": (["generate", "--run", run, "--temperature=inf"], "--temperature"),
        "generate a billion steps": (["generate", "--run", run, "--steps", "1000000000"], "--steps"),
        "a billion samples": (["generate", "--run", run, "--num-samples", "1000000000"], "--num-samples"),
        "blimp a billion mc samples": (
            ["eval", "blimp", "--run", run, "--data", pairs, "--samples", "1000000000"],
            "--samples",
        ),
    }


CASES = [
    "negative lr",
    "beta1 above 1",
    "checkpoint interval 0",
    "log interval 0",
    "max span 0",
    "device tpu",
    "model value not a number",
    "n_layer 0",
    "config that is a list",
    "eval batches 0",
    "negative warmup",
    "negative weight decay",
    "wordpiece vocab -1",
    "min frequency -1",
    "corpus of blank lines",
    "prepare into the tokenizer folder",
    "blimp limit 0",
    "blimp line not UTF-8",
    "blimp line not an object",
    "perplexity seq-len 1",
    "--json a folder",
    "top-p -1",
    "top-k -1",
    "min-p 2",
    "generate steps -1",
    "infill top-p -1",
    "infill span 0",
    "export onto a file",
    "demo steps 0",
    "unknown objective",
    "seed -1",
    "frequency masking nan",
    "frequency masking inf",
    "frequency masking 1e30",
    "z-loss 1e30",
    "batch of a million rows",
    "generate temperature inf",
    "generate a billion steps",
    "a billion samples",
    "blimp a billion mc samples",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_leaves_nothing(case, capsys, tmp_path, data_dir, tokenizer_dir, runs, corpus):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    args, needle = _cases(tmp_path, data_dir, tokenizer_dir, runs["causal"], pairs, corpus)[case]
    assert_one_line_error(run_cli(capsys, *args), needle)
    assert not (tmp_path / "new").exists()  # a config error never leaves a stub run folder


def test_argument_errors_are_one_line_too(capsys, tmp_path, data_dir):
    assert_one_line_error(
        run_cli(capsys, "train", "--data", data_dir, "--out", tmp_path / "x", "--lr", "-1e+16"), "--lr=-1e-3"
    )
    assert_one_line_error(run_cli(capsys, "train", "--max-steps", "ten"), "invalid int value")
    assert_one_line_error(run_cli(capsys, "frobnicate"), "invalid choice")


def test_cuda_on_a_cpu_build_is_one_line(capsys, tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("this build has CUDA")
    assert_one_line_error(
        run_cli(capsys, "train", "--data", data_dir, "--out", tmp_path / "x", *TRAIN, "--device", "cuda"), "cuda"
    )
    assert not (tmp_path / "x").exists()


def test_damaged_run_files_are_one_line(capsys, run_copy, tmp_path):
    ckpt = run_copy / "checkpoints" / "step_0000030"
    (ckpt / "state.json").write_text("{}")
    assert_one_line_error(run_cli(capsys, "train", "--out", run_copy, "--resume", "--max-steps", "31"), "corrupt")
    cfg = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**cfg, "colour": "red"}))
    assert_one_line_error(run_cli(capsys, "generate", "--run", run_copy), "unknown key 'colour'")
    (run_copy / "config.json").write_text(json.dumps(cfg))
    (run_copy / "eval").mkdir(exist_ok=True)
    (run_copy / "eval" / "blimp-causal.json").write_text("{not json")
    assert_one_line_error(run_cli(capsys, "report", run_copy, "--out", tmp_path / "rep", "--no-samples"), "corrupt")
    (run_copy / "eval" / "blimp-causal.json").unlink()
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    (run_copy / "metrics.jsonl").write_text("\n".join([lines[0], "{cut", *lines[1:]]) + "\n")
    assert_one_line_error(
        run_cli(capsys, "report", run_copy, "--out", tmp_path / "rep", "--no-samples"), "metrics.jsonl:2"
    )


# ---------------------------------------------------------------- finding 3: relative paths, other working directory
@pytest.mark.slow
def test_resume_from_another_working_directory(tmp_path, data_dir):
    hlm("train", "--data", data_dir.name, "--out", tmp_path / "r", *TRAIN, cwd=data_dir.parent)
    hlm("train", "--out", tmp_path / "r", "--resume", "--max-steps", 3, cwd=tmp_path)
    assert (tmp_path / "r" / "checkpoints" / "step_0000003").is_dir()


# ---------------------------------------------------------------- finding 4: metrics history on a kill
def test_a_kill_during_the_metrics_rewrite_keeps_the_history(cli, tmp_path, data_dir, monkeypatch):
    from hybridlm import files
    from hybridlm.train import train

    run = tmp_path / "r"
    cli(
        "train",
        "--data",
        data_dir,
        "--out",
        run,
        *TRAIN,
        "--log-interval",
        1,
        "--max-steps",
        4,
        "--checkpoint-interval",
        2,
    )
    (run / "checkpoints" / "latest").write_text("step_0000002\n")  # as if killed after step 4's log, before its save
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    history = (run / "metrics.jsonl").read_bytes()
    real_replace = os.replace

    def killed(src, dst):
        if str(dst).endswith("metrics.jsonl"):
            raise KeyboardInterrupt  # the process dies between writing the new file and the rename
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train({"out": str(run), "max_steps": 4}, resume=True, quiet=True)
    assert (run / "metrics.jsonl").read_bytes() == history  # old history intact, never empty or cut
    monkeypatch.setattr(files.os, "replace", real_replace)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # and a line cut mid-write by a kill is dropped, not fatal
    train({"out": str(run), "max_steps": 4}, resume=True, quiet=True)
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# ---------------------------------------------------------------- finding 5: symlinks
def test_never_writes_through_a_symlink(capsys, run_copy, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    (run_copy / "eval").mkdir(exist_ok=True)
    (run_copy / "eval" / "blimp-causal.json").unlink(missing_ok=True)
    (run_copy / "eval" / "blimp-causal.json").symlink_to(outside)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    assert_one_line_error(run_cli(capsys, "eval", "blimp", "--run", run_copy, "--data", pairs), "symbolic link")
    assert outside.read_text() == "precious"
    (run_copy / "metrics.jsonl").unlink()
    (run_copy / "metrics.jsonl").symlink_to(tmp_path / "dangling.jsonl")
    assert_one_line_error(run_cli(capsys, "train", "--out", run_copy, "--resume", "--max-steps", "31"), "symbolic link")
    assert not (tmp_path / "dangling.jsonl").exists()


# ---------------------------------------------------------------- finding 6: a user's folder
def test_a_folder_that_is_not_a_run_is_never_written(capsys, tmp_path, data_dir, corpus, tokenizer_dir):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tokenizer.json").write_text("my notes")
    assert_one_line_error(run_cli(capsys, "train", "--data", data_dir, "--out", mine, *TRAIN), "not a run")
    assert (
        sorted(p.name for p in mine.iterdir()) == ["tokenizer.json"]
        and (mine / "tokenizer.json").read_text() == "my notes"
    )
    assert_one_line_error(
        run_cli(capsys, "tokenizer", "train", "--input", corpus, "--vocab-size", 300, "--out", mine), "--force"
    )
    assert (mine / "tokenizer.json").read_text() == "my notes"
    assert_one_line_error(
        run_cli(capsys, "prepare", "--input", corpus, "--tokenizer", tokenizer_dir, "--out", data_dir), "--force"
    )
    assert (
        run_cli(
            capsys, "tokenizer", "train", "--input", corpus, "--vocab-size", 300, "--out", mine, "--force"
        ).returncode
        == 0
    )


# ---------------------------------------------------------------- finding 9: one trainer per run
def test_a_run_is_locked_while_training(cli, run_copy):
    with RunDir(run_copy).lock():
        proc = cli("train", "--out", run_copy, "--resume", "--max-steps", 31, check=False)
    assert_one_line_error(proc, "another process")
    cli("train", "--out", run_copy, "--resume", "--max-steps", 31)  # the lock died with its holder


# ---------------------------------------------------------------- finding 10: leftovers
def test_leftover_and_renamed_checkpoint_folders(capsys, run_copy, tmp_path):
    ckpts = run_copy / "checkpoints"
    (ckpts / ".tmp-step_0000031-999").mkdir()
    (ckpts / ".tmp-step_0000031-999" / "model.safetensors").write_text("half")
    shutil.copytree(ckpts / "step_0000030", ckpts / "step_0000030.bak")
    (ckpts / "latest").unlink()
    assert RunDir(run_copy).latest_checkpoint().name == "step_0000030"  # only step_N names are checkpoints
    assert run_cli(capsys, "train", "--out", run_copy, "--resume", "--max-steps", "32").returncode == 0
    assert not (ckpts / ".tmp-step_0000031-999").exists()
    assert (ckpts / "step_0000030.bak").is_dir()  # not ours to remove
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "grammar.txt").write_text("x")
    assert_one_line_error(run_cli(capsys, "demo", "--out", tmp_path / "demo", "--steps", "2"), "not empty")


# ---------------------------------------------------------------- random values for every numeric option
NUMERIC = {
    "lr": st.floats(allow_nan=True, allow_infinity=True),
    "beta1": st.floats(-2, 2),
    "beta2": st.floats(-2, 2),
    "warmup-fraction": st.floats(-1, 2),
    "cooldown-fraction": st.floats(-1, 2),
    "min-lr-ratio": st.floats(-1, 2),
    "weight-decay": st.floats(-1, 1),
    "grad-clip": st.floats(-1, 10),
    "z-loss": st.floats(-1, 1),
    "seq-len": st.integers(-2, 80),
    "batch-size": st.integers(-2, 12),
    "max-steps": st.integers(-2, 3),
    "micro-batch-size": st.integers(-2, 9),
    "eval-interval": st.integers(-2, 3),
    "eval-batches": st.integers(-2, 3),
    "checkpoint-interval": st.integers(-2, 3),
    "keep-checkpoints": st.integers(-2, 3),
    "log-interval": st.integers(-2, 3),
    "max-span": st.integers(-2, 70),
    "mask-ratio-start": st.floats(-1, 2),
    "mask-ratio-end": st.floats(-1, 2),
    "causal-fraction": st.floats(-1, 2),
    "diffusion-eps": st.floats(-1, 2),
    "frequency-masking": st.floats(-1, 3),
    "max-seconds": st.floats(-1, 1),
    "max-epochs": st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None),
    "mtp-heads": st.integers(-2, 20),
    "prefix-min": st.floats(-1, 2),
    "prefix-max": st.floats(-1, 2),
    "distill-alpha": st.floats(-1, 2),
    "distill-temperature": st.floats(allow_nan=True, allow_infinity=True),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(sorted(NUMERIC)),
    data=st.data(),
    objective=st.sampled_from(["causal", "masked", "hybrid", "diffusion", "mntp", "prefix"]),
)
def test_any_numeric_option_runs_or_fails_in_one_line(capsys, tmp_path_factory, data_dir, option, data, objective):
    value = data.draw(NUMERIC[option])
    out = tmp_path_factory.mktemp("prop") / "run"
    args = [
        "train",
        "--data",
        data_dir,
        "--out",
        out,
        "--objective",
        objective,
        *tiny_flags(seq_len=16, batch_size=4, max_steps=2, eval_interval=2, eval_batches=1),
        f"--{option}={value!r}",
    ]
    result = run_cli(capsys, *args)
    if result.returncode != 0:
        assert_one_line_error(result)
        assert not out.exists() or (out / "config.json").exists()  # nothing half-made


# ---------------------------------------------------------------- issue 26: never lose a run, never write on an input
TR = [
    *tiny_flags(batch_size=4, checkpoint_interval=10, eval_interval=10, eval_batches=2, log_interval=5),
]


def _snapshot(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_divergence_keeps_a_finite_checkpoint_to_resume_from(cli, tmp_path, data_dir, precision):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    cli("train", "--data", data_dir, "--out", run, "--max-steps", "20", "--precision", precision, *TR)
    proc = cli(
        "train",
        "--data",
        data_dir,
        "--out",
        run,
        "--resume",
        "--lr",
        "1e30",
        "--checkpoint-interval",
        "1",
        "--max-steps",
        "40",
        "--precision",
        precision,
        *TR,
        check=False,
    )
    assert_one_line_error(proc, "diverged", "is kept")
    assert ("--precision fp32" in proc.stderr) == (precision != "fp32")  # the advice is true for the precision used
    checkpoints = [p for p in (run / "checkpoints").iterdir() if p.is_dir() and not p.name.startswith("diverged-")]
    assert checkpoints
    for path in checkpoints:  # nothing non-finite was ever saved
        assert all(torch.isfinite(v).all() for v in load_file(str(path / "model.safetensors")).values()), path
        assert all(torch.isfinite(v).all() for v in load_file(str(path / "optimizer.safetensors")).values()), path
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest in proc.stderr
    cli(
        "train",
        "--data",
        data_dir,
        "--out",
        run,
        "--resume",
        "--lr",
        "1e-3",
        "--max-steps",
        "30",
        "--precision",
        precision,
        *TR,
    )


def test_non_finite_weights_are_refused_by_eval_generate_and_export(cli, run_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    latest = run_copy / "checkpoints" / (run_copy / "checkpoints" / "latest").read_text().strip()
    weights = load_file(str(latest / "model.safetensors"))
    weights["embed.weight"][3, 0] = float("nan")
    save_file(weights, str(latest / "model.safetensors"))
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    for args in (
        ["eval", "blimp", "--run", run_copy, "--data", pairs],
        ["generate", "--run", run_copy, "--prompt", "the"],
        ["export", "--run", run_copy, "--out", tmp_path / "hf"],
    ):
        assert_one_line_error(cli(*args, check=False), "non-finite")
    assert not (tmp_path / "hf").exists()


def test_outputs_never_land_on_inputs(cli, run_copy, data_dir, corpus, tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    before_run, before_data = _snapshot(run_copy), _snapshot(data)
    cases = [
        (["eval", "blimp", "--run", run_copy, "--data", pairs, "--json", run_copy / "config.json"], "inside the run"),
        (
            ["eval", "blimp", "--run", run_copy, "--data", pairs, "--json", data / "manifest.json"],
            "inside the prepared data",
        ),
        (
            ["tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", run_copy, "--force"],
            "inside the run",
        ),
        (["tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", data, "--force"], "prepared data"),
        (
            [
                "export",
                "--run",
                run_copy,
                "--out",
                tmp_path / "hf",
                "--checkpoint",
                "../../other/checkpoints/step_0000030",
            ],
            "own checkpoints",
        ),
    ]
    for args, needle in cases:
        assert_one_line_error(cli(*args, check=False), needle)
    assert _snapshot(run_copy) == before_run and _snapshot(data) == before_data
    tok = tmp_path / "tok"  # a tokenizer folder: an output never takes the name of its files
    shutil.copytree(data_dir, tok, ignore=lambda d, names: [n for n in names if n != "tokenizer.json"])
    assert_one_line_error(
        cli("eval", "blimp", "--run", run_copy, "--data", pairs, "--json", tok / "tokenizer.json", check=False),
        "would replace",
    )


def test_no_write_follows_a_link_planted_in_data_report_or_run(
    cli, run_copy, data_dir, tokenizer_dir, corpus, tmp_path
):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep me")
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    (data / "train_000.bin").unlink()
    (data / "train_000.bin").symlink_to(victim)
    assert_one_line_error(
        cli("prepare", "--input", corpus, "--tokenizer", tokenizer_dir, "--out", data, "--force", check=False),
        "symbolic link",
    )
    report = tmp_path / "report"
    report.mkdir()
    (report / "loss.png").symlink_to(victim)
    assert_one_line_error(cli("report", run_copy, "--out", report, "--no-samples", check=False), "symbolic link")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_copy / "checkpoints", elsewhere)
    (run_copy / "checkpoints").symlink_to(elsewhere)
    before = _snapshot(elsewhere)
    proc = cli("train", "--out", run_copy, "--resume", "--max-steps", "40", check=False)
    assert_one_line_error(proc, "symbolic link")
    assert victim.read_bytes() == b"keep me" and _snapshot(elsewhere) == before


def test_atomic_writes_use_unpredictable_exclusive_temp_files(tmp_path):
    from hybridlm.files import atomic_write_text

    target = tmp_path / "result.json"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for name in (f".result.json.tmp-{os.getpid()}", ".result.json.tmp"):  # the names older versions used
        (tmp_path / name).symlink_to(victim)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == ["result.json", "victim"]  # no temp left


def test_a_file_size_limit_is_one_line_and_loses_nothing(run_copy, tmp_path):
    import resource
    import subprocess
    import sys

    before = _snapshot(run_copy / "checkpoints")
    limit = 20_000  # bytes: smaller than a checkpoint's weights

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm.cli", "train", "--out", run_copy, "--resume", "--max-steps", "40"],
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        timeout=300,
    )
    assert_one_line_error(proc, "file-size limit")
    after = _snapshot(run_copy / "checkpoints")
    assert {k: v for k, v in after.items() if k in before} == before  # every earlier checkpoint intact
    leftovers = [p.name for p in (run_copy / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


HOSTILE = "<script>alert(1)</script> | **bold** [link](http://x) `code`\nnext"


def test_report_skips_bad_result_rows_and_escapes_what_it_quotes(run_copy, tmp_path, capsys):
    good = {
        "scorer": "causal",
        "macro_accuracy": 0.5,
        "n_pairs": 2,
        "ties": 0,
        "paradigms": {"a": {}},
        "fields": {"f": {"accuracy": 0.5}},
    }
    bad_rows = {  # the shapes a crafted or damaged result file takes
        "blimp-missing.json": {k: v for k, v in good.items() if k != "macro_accuracy"},
        "blimp-string.json": {**good, "macro_accuracy": "high"},
        "blimp-field.json": {**good, "fields": {"f": "x"}},
        "blimp-stderr.json": {**good, "macro_stderr": "x"},
        "blimp-bool.json": {**good, "n_pairs": True},
        "babylm-task.json": {
            "scorer": "causal",
            "convention": "hlm",
            "tasks": {"blimp": {"metric": "accuracy", "value": "x", "n": 1, "ties": 0}},
        },
        "babylm-tasks.json": {"scorer": "causal", "convention": "hlm", "tasks": []},
        "finetune-x.json": {"task": "rte", "seeds": [1], "metric": "accuracy", "value": None, "stdev": 0},
        "perplexity.json": {"file": "x", "bytes": 1, "causal": {"perplexity": 2.0, "measure": 3}},
    }
    (run_copy / "eval").mkdir(exist_ok=True)
    for name, row in bad_rows.items():
        (run_copy / "eval" / name).write_text(json.dumps(row))
    (run_copy / "eval" / "blimp-hostile.json").write_text(json.dumps({**good, "scorer": HOSTILE}))
    result = run_cli(capsys, "report", run_copy, "--out", tmp_path / "md", "--no-samples")
    assert result.returncode == 0
    for name in bad_rows:
        assert name in result.stderr and "skipped" in result.stderr
    md = (tmp_path / "md" / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\| \\*\\*bold\\*\\*" in md
    assert (
        sum(
            line.startswith("| run_copy |") or line.startswith("| run |")
            for line in md.splitlines()
            if "macro" not in line
        )
        >= 1
    )
    result = run_cli(capsys, "report", run_copy, "--out", tmp_path / "html", "--format", "html")
    page = (tmp_path / "html" / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; | **bold**" in page
    assert "- **" not in page and "<p><b>run</b>: " in page  # the sample is HTML, not Markdown source


def test_prepare_force_never_rewrites_data_a_run_is_reading(cli, data_dir, tokenizer_dir, corpus, tmp_path):
    from hybridlm.files import data_lock

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    before = _snapshot(data)
    with data_lock(data, exclusive=False):  # what every training process holds while it reads DATA
        proc = cli("prepare", "--input", corpus, "--tokenizer", tokenizer_dir, "--out", data, "--force", check=False)
    assert_one_line_error(proc, "being read by a training run")
    assert _snapshot(data) == before
    cli("prepare", "--input", corpus, "--tokenizer", tokenizer_dir, "--out", data, "--force")  # once the run has ended


def test_folders_being_written_are_complete_or_absent(run_copy, corpus, tmp_path, monkeypatch):
    from hybridlm import export, files, tokenizer
    from hybridlm.errors import UserError

    def die(*a, **k):  # the process dies while writing (a kill leaves only a hidden .NAME.*.incomplete folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer, "write_hf_files", die)
    with pytest.raises(KeyboardInterrupt):
        tokenizer.train_tokenizer([corpus], 300, tmp_path / "tok")
    monkeypatch.setattr(export, "_write_tokenizer", die)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(run_copy, tmp_path / "hf")
    assert not (tmp_path / "tok").exists() and not (tmp_path / "hf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(UserError, match="filled by another process"):  # two writers of one new folder: the second fails
        with files.building(tmp_path / "out") as tmp:
            (tmp / "mine").write_text("x")
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "theirs").write_text("y")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["theirs"]


def _edit_json(path, change):
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


CRAFTED_DATA = {
    "manifest []": lambda d: (d / "manifest.json").write_text("[]"),
    "vocab_size 0": lambda d: _edit_json(d / "manifest.json", lambda m: {**m, "vocab_size": 0}),
    "split without shards": lambda d: _edit_json(
        d / "manifest.json",
        lambda m: {
            **m,
            "splits": {**m["splits"], "train": {k: v for k, v in m["splits"]["train"].items() if k != "shards"}},
        },
    ),
    "shards null": lambda d: _edit_json(
        d / "manifest.json",
        lambda m: {**m, "splits": {**m["splits"], "val": {**m["splits"]["val"], "shards": None}}},
    ),
    "shard outside the folder": lambda d: _edit_json(
        d / "manifest.json",
        lambda m: {
            **m,
            "splits": {
                **m["splits"],
                "train": {
                    **m["splits"]["train"],
                    "shards": [{**m["splits"]["train"]["shards"][0], "file": "../../etc/passwd"}],
                },
            },
        },
    ),
    "token ids past the vocabulary": lambda d: (d / "train_000.bin").write_bytes(
        b"\xff\xff" * ((d / "train_000.bin").stat().st_size // 2)
    ),
    "short unigram.npy": lambda d: __import__("numpy").save(
        d / "unigram.npy", __import__("numpy").ones(3, dtype="int64")
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED_DATA))
def test_crafted_prepared_data_is_one_line(case, data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    CRAFTED_DATA[case](data)
    objective = ["--objective", "diffusion", "--frequency-masking", "1"] if "unigram" in case else []
    assert_one_line_error(
        run_cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *TRAIN, *objective), "re-run hlm prepare"
    )
    assert not (tmp_path / "run").exists()


CRAFTED_RUN = {
    "seq_len 10^12": ("config.json", lambda c: {**c, "seq_len": 10**12}, "tokens a step"),
    "tokens_seen a": ("state.json", lambda s: {**s, "tokens_seen": "a"}, "corrupt"),
    "wrong-shaped RNG state": ("rng.json", lambda r: {**r, "torch": r["torch"][:10]}, "corrupt"),
}


@pytest.mark.parametrize("case", list(CRAFTED_RUN))
def test_crafted_run_files_are_one_line(case, run_copy, capsys):
    name, change, needle = CRAFTED_RUN[case]
    latest = run_copy / "checkpoints" / (run_copy / "checkpoints" / "latest").read_text().strip()
    _edit_json(run_copy / name if name == "config.json" else latest / name, change)
    assert_one_line_error(run_cli(capsys, "train", "--out", run_copy, "--resume", "--max-steps", "40"), needle)


def test_a_damaged_optimizer_state_is_named_not_blamed_on_the_learning_rate(run_copy, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    latest = run_copy / "checkpoints" / (run_copy / "checkpoints" / "latest").read_text().strip()
    with safe_open(str(latest / "optimizer.safetensors"), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in tensors if k.endswith("exp_avg") and tensors[k].dim() == 2)
    tensors[key] = tensors[key][:, :3].contiguous()
    save_file(tensors, str(latest / "optimizer.safetensors"), metadata=meta)
    assert_one_line_error(
        run_cli(capsys, "train", "--out", run_copy, "--resume", "--max-steps", "40"), "optimizer state"
    )
    meta["param_groups"] = json.dumps({"not": "a list"})
    tensors[key] = tensors[key]
    save_file(tensors, str(latest / "optimizer.safetensors"), metadata=meta)
    assert_one_line_error(run_cli(capsys, "train", "--out", run_copy, "--resume", "--max-steps", "40"), "param_groups")


@pytest.mark.parametrize("command", ["export", "eval", "prepare", "tokenizer", "report"])
def test_a_file_size_limit_in_every_command_is_one_line_with_nothing_left(
    command, run_copy, data_dir, tokenizer_dir, corpus, tmp_path
):
    import resource
    import subprocess
    import sys

    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n' * 20)
    out = tmp_path / "out"
    out.mkdir()
    args = {
        "export": ["export", "--run", run_copy, "--out", out / "hf"],
        "eval": ["eval", "blimp", "--run", run_copy, "--data", pairs, "--json", out / "r.json", "--keep-pairs"],
        "prepare": ["prepare", "--input", corpus, "--tokenizer", tokenizer_dir, "--out", out / "data"],
        "tokenizer": ["tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", out / "tok"],
        "report": ["report", run_copy, "--out", out / "rep", "--no-samples"],
    }[command]
    before = _snapshot(run_copy)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))  # bytes: less than any output, more than a lock file

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm.cli", *map(str, args)],
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        env=env,
        timeout=300,
    )
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if "seq/s]" not in ln)  # eval's progress bars
    assert_one_line_error(proc, "file-size limit")
    left = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != ".hlm-data-lock"]
    assert all(not p.startswith(".") and "/." not in p for p in left), left  # no temporary file left behind
    assert (
        _snapshot(run_copy) == before or command == "eval"
    )  # eval may keep its result in RUN/eval: never a part of one
    if command == "eval":
        for p in (run_copy / "eval").glob("*"):
            json.loads(p.read_text())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(obj, prefix=()):
    """Every key path of a JSON object (where a hostile value can go)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replaced(obj, path, value):
    if not path:
        return value
    copy = list(obj) if isinstance(obj, list) else dict(obj)
    copy[path[0]] = _replaced(obj[path[0]], path[1:], value)
    return copy


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_files_at_the_loaders_are_accepted_or_one_clear_error(tmp_path_factory, data_dir, runs, data):
    """Generated manifests, run configs, checkpoint state and result rows: each loader either accepts the
    file or raises hlm's one-line UserError, never another exception."""
    from hybridlm.data import PackedTokens
    from hybridlm.errors import UserError
    from hybridlm.report import make_report

    kind = data.draw(st.sampled_from(["manifest", "config", "state", "result"]))
    root = tmp_path_factory.mktemp("hostile")
    if kind == "manifest":
        folder = root / "data"
        shutil.copytree(data_dir, folder)
        target = folder / "manifest.json"
    else:
        folder = root / "run"
        shutil.copytree(runs["causal"], folder)
        latest = folder / "checkpoints" / (folder / "checkpoints" / "latest").read_text().strip()
        target = {
            "config": folder / "config.json",
            "state": latest / "state.json",
            "result": folder / "eval" / "blimp-causal.json",
        }[kind]
        if kind == "result":
            target.parent.mkdir(exist_ok=True)
            target.write_text(
                json.dumps(
                    {
                        "scorer": "causal",
                        "macro_accuracy": 0.5,
                        "n_pairs": 2,
                        "ties": 0,
                        "paradigms": {"a": {"accuracy": 0.5, "n": 2}},
                        "fields": {"f": {"accuracy": 0.5, "n": 2}},
                    }
                )
            )
    original = json.loads(target.read_text())
    path = data.draw(st.sampled_from(list(_paths(original))))
    target.write_text(json.dumps(_replaced(original, path, data.draw(JSON))))
    try:
        if kind == "manifest":
            PackedTokens(folder, "train", 16)
        elif kind == "config":
            RunDir(folder).read_config().validate()
        elif kind == "state":
            from hybridlm.checkpoint import load_training_state

            load_training_state(latest, folder)
        else:
            make_report([folder], root / "rep", samples=False)
    except UserError as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------- round two: the newest commands (issue 35)
MARKER = "planted-code-ran"
HARNESS_NUMBERS = [
    ("--steps", "1000000000"),
    ("--samples", "1000000000"),
    ("--samples", "-1"),
    ("--samples", "0"),
    ("--limit", "0"),
    ("--limit", "-1"),
    ("--seed", str(2**64)),
    ("--num-fewshot", "-1"),
]
GLUE_ROWS = {
    "not JSON": b"{not json\n",
    "no label": b'{"sentence1": "a", "sentence2": "b"}\n',
    "string label": b'{"sentence1": "a", "sentence2": "b", "label": "yes"}\n',
    "label out of range": b'{"sentence1": "a", "sentence2": "b", "label": 7}\n',
    "empty": b"",
    "not UTF-8": b'{"sentence1": "caf\xe9", "sentence2": "b", "label": 0}\n',
    "not an object": b'["a", "b", 0]\n',
}
ROUND_TWO = [
    "!function in a task file",
    "!function one include away",
    "billion laughs",
    "task file of 2 MiB",
    "--json on --samples",
    "--json in --glue-data",
    "--json on a task file",
    "--json in an HF model",
    *[f"harness {flag} {value}" for flag, value in HARNESS_NUMBERS],
    "generation --batch-size 10^9",
    "generation --seed 2^64",
    "HF weights that do not fit the config",
    "score-windows on another tokenizer",
    "beta mask ratio of 1e308",
    "n-grams longer than the window",
    "warm start from NaN weights",
    *[f"in-context GLUE file: {name}" for name in GLUE_ROWS],
    "empty .npy curriculum",
    ".npy claiming 10^12 values",
    "warm start without state.json",
    "warm start with a damaged state",
    "warm start without a tokenizer",
    "--samples not UTF-8",
    "--samples all blank",
    "WUG ratio as text",
    "--pacing 1..2",
    "config.json with seq_len 10^12",
    "prepare a one-line 5 MiB corpus",
]


def _world(tmp, runs, data_dir, tokenizer_dir, corpus):
    """Every hostile state of the second round, made once: {case: (argv, needles)}. Nothing here may change but
    what a case's command writes on purpose, and no planted code may run."""
    import io

    import numpy as np

    run = tmp / "run"
    shutil.copytree(runs["causal"], run)
    (tmp / "out").mkdir()
    pairs = tmp / "pairs.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    # task folders for lm-evaluation-harness: code, a billion laughs, a file too large to be a task
    planted = tmp / "tasks_code"
    planted.mkdir()
    (planted / "utils.py").write_text(f"open({str(tmp / MARKER)!r}, 'w').write('ran')\ndef docs(d): return d\n")
    (planted / "t.yaml").write_text("task: t\ndataset_path: json\nprocess_docs: !function utils.docs\n")
    laughs = tmp / "tasks_laughs"
    laughs.mkdir()
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    (laughs / "t.yaml").write_text("task: t\n" + "\n".join(levels) + "\n")
    huge = tmp / "tasks_huge"
    huge.mkdir()
    (huge / "t.yaml").write_text("task: t\ndescription: " + "x" * (1 << 21) + "\n")
    included = tmp / "tasks_include"  # the code is one `include` away, outside the folder
    included.mkdir()
    (included / "t.yaml").write_text(f"include: {planted / 't.yaml'}\ntask: u\n")
    # in-context GLUE folders, one damaged file each
    good = b'{"sentence1": "a", "sentence2": "b", "label": 0}\n'
    for name, raw in GLUE_ROWS.items():
        folder = tmp / f"glue_{name.replace(' ', '_')}"
        folder.mkdir()
        (folder / "rte.train.jsonl").write_bytes(good * 4)
        (folder / "rte.valid.jsonl").write_bytes(raw)
    # curricula: an empty .npy and one whose header claims 10^12 values
    (tmp / "empty.npy").write_bytes(b"")
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    (tmp / "huge.npy").write_bytes(buf.getvalue().replace(b"(3,)", b"(1000000000000,)"))
    # warm-start sources: NaN weights, no state.json, a damaged one, no tokenizer
    from safetensors.torch import load_file, save_file

    sources = {}
    for name in ("nan", "no_state", "bad_state", "no_tokenizer"):
        src = tmp / f"source_{name}"
        shutil.copytree(runs["causal"], src)
        ck = RunDir(src).latest_checkpoint()
        if name == "nan":
            weights = load_file(ck / "model.safetensors")
            weights[next(iter(weights))][0] = float("nan")
            save_file(weights, ck / "model.safetensors")
        elif name == "no_state":
            (ck / "state.json").unlink()
        elif name == "bad_state":
            (ck / "state.json").write_text('{"step": 30, "tokens_seen": -5}')
        else:
            (src / "tokenizer.json").unlink()
        sources[name] = src
    # samples to measure
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp / "blank.txt").write_text("\n \n\n")
    samples = tmp / "samples.txt"
    samples.write_text("the cat sleeps .\n")
    # a WUG row whose ratio is text
    (tmp / "wug" / "wug_adj_nominalization").mkdir(parents=True)
    (tmp / "wug" / "wug_adj_nominalization" / "w.jsonl").write_text(
        json.dumps({"sentences": "a b.\tc d.", "ratio": "0.5"}) + "\n"
    )
    # a run whose config.json asks for a window of 10^12 tokens
    big = tmp / "big_run"
    shutil.copytree(runs["causal"], big)
    config = json.loads((big / "config.json").read_text())
    (big / "config.json").write_text(json.dumps({**config, "seq_len": 10**12}))
    # a local HF model whose weights do not match its config
    import transformers

    hf = tmp / "hf_mismatch"
    cfg = transformers.LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    transformers.LlamaForCausalLM(cfg).save_pretrained(hf)
    transformers.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir)).save_pretrained(hf)
    (hf / "config.json").write_text(
        json.dumps({**json.loads((hf / "config.json").read_text()), "num_hidden_layers": 3})
    )
    # data on another tokenizer, for score-windows
    other_tok = tmp / "other_tok"
    hlm("tokenizer", "train", "--input", corpus, "--vocab-size", "290", "--out", other_tok)
    hlm("prepare", "--input", corpus, "--tokenizer", other_tok, "--out", tmp / "other_data")
    # a corpus of one 5 MiB line
    (tmp / "one_line.txt").write_text("word " * (1 << 20))
    train = ["train", "--data", data_dir, "--out", tmp / "out" / "new"] + TRAIN
    harness = ["eval", "harness", "--run", run, "--tasks", "t"]
    gen = ["eval", "generation", "--run", run, "--num-samples", "2", "--length", "8"]
    return {
        # code from task files
        "!function in a task file": (harness + ["--include-path", planted], ["!function", "--trust-remote-code"]),
        "!function one include away": (harness + ["--include-path", included], ["!function", "--trust-remote-code"]),
        "billion laughs": (harness + ["--include-path", laughs], ["aliases expand"]),
        "task file of 2 MiB": (harness + ["--include-path", huge], ["too large"]),
        # outputs on inputs
        "--json on --samples": (gen + ["--samples", samples, "--json", samples], ["would land on the input"]),
        "--json in --glue-data": (
            harness + ["--glue-data", tmp / "glue_empty", "--json", tmp / "glue_empty" / "out.json"],
            ["would land on the input"],
        ),
        "--json on a task file": (
            harness + ["--include-path", laughs, "--json", laughs / "t.yaml"],
            ["would land on the input"],
        ),
        "--json in an HF model": (
            ["eval", "blimp", "--hf-model", hf, "--data", pairs, "--json", hf / "notes.json"],
            ["would land on the input"],
        ),
        # the harness's numbers
        **{f"harness {flag} {value}": (harness + [flag, value], [flag]) for flag, value in HARNESS_NUMBERS},
        "generation --batch-size 10^9": (gen + ["--batch-size", "1000000000"], ["--batch-size"]),
        "generation --seed 2^64": (gen + ["--seed", str(2**64)], ["--seed"]),
        # silent wrong answers
        "HF weights that do not fit the config": (
            ["eval", "blimp", "--hf-model", hf, "--data", pairs],
            ["do not match its config.json", "lacks weights"],
        ),
        "score-windows on another tokenizer": (
            ["score-windows", "--run", run, "--data", tmp / "other_data", "--out", tmp / "out" / "s.npy"],
            ["another tokenizer"],
        ),
        "beta mask ratio of 1e308": (train + ["--objective", "masked", "--mask-ratio", "beta:1e308,1e308"], ["beta"]),
        "n-grams longer than the window": (
            train + ["--objective", "masked", "--masking", "ngram", "--max-span", "64"],
            ["nothing masked", "--max-span"],
        ),
        "warm start from NaN weights": (train + ["--init-from", sources["nan"]], ["not finite"]),
        # crafted files
        **{
            f"in-context GLUE file: {name}": (
                harness + ["--glue-data", tmp / f"glue_{name.replace(' ', '_')}"],
                ["rte.valid.jsonl"],
            )
            for name in GLUE_ROWS
        },
        "empty .npy curriculum": (train + ["--curriculum", tmp / "empty.npy"], ["not a readable .npy"]),
        ".npy claiming 10^12 values": (train + ["--curriculum", tmp / "huge.npy"], ["not a readable .npy"]),
        "warm start without state.json": (train + ["--init-from", sources["no_state"]], ["no state.json"]),
        "warm start with a damaged state": (train + ["--init-from", sources["bad_state"]], ["damaged state"]),
        "warm start without a tokenizer": (train + ["--init-from", sources["no_tokenizer"]], ["tokenizer.json"]),
        "--samples not UTF-8": (gen + ["--samples", tmp / "latin1.txt"], ["not UTF-8"]),
        "--samples all blank": (gen + ["--samples", tmp / "blank.txt"], ["no text"]),
        "WUG ratio as text": (
            ["eval", "babylm", "--run", run, "--data", tmp / "wug", "--tasks", "wug_adj"],
            ["'ratio'", "number"],
        ),
        "--pacing 1..2": (train + ["--curriculum", "length", "--pacing", "linear:1..2,0.5"], ["pacing"]),
        # left from the first round
        "config.json with seq_len 10^12": (["generate", "--run", big, "--max-new-tokens", "4"], ["seq_len"]),
        "prepare a one-line 5 MiB corpus": (
            ["prepare", "--input", tmp / "one_line.txt", "--tokenizer", tokenizer_dir, "--out", tmp / "out" / "d"],
            ["a line of more than 4 MiB"],
        ),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, runs, data_dir, tokenizer_dir, corpus):
    tmp = tmp_path_factory.mktemp("hostile2")
    return tmp, _world(tmp, runs, data_dir, tokenizer_dir, corpus)


@pytest.mark.parametrize("case", ROUND_TWO)
def test_round_two_hostile_input_is_one_line_and_changes_nothing(world, case, capsys):
    """Each hostile state: exit 2, one line naming what to do, no planted code run, every byte unchanged."""
    tmp, cases = world
    assert sorted(cases) == sorted(ROUND_TWO)
    args, needles = cases[case]
    before = _snapshot(tmp)
    assert_one_line_error(run_cli(capsys, *args), *needles)
    assert not (tmp / MARKER).exists()
    assert _snapshot(tmp) == before


def test_seeds_are_all_checked_first_and_a_killed_sweep_finishes_with_resume(cli, tmp_path, data_dir):
    out = tmp_path / "sweep"
    train = ["train", "--data", data_dir, "--out", out, "--preset", "tiny", *TRAIN]
    # a bad seed late in the list: refused before the first seed trains
    assert_one_line_error(cli(*train, "--seeds", f"1,2,{2**64}", check=False), "--seeds")
    assert not out.exists()
    # a sweep killed after its first seed: seed 1 done, seed 2 never started
    cli(*train, "--seeds", "1")
    assert_one_line_error(cli(*train, "--seeds", "1,2", check=False), "--resume")
    cli(*train, "--seeds", "1,2", "--resume")  # seed 1 resumes (nothing left to do), seed 2 starts
    for seed in (1, 2):
        assert RunDir(out / f"seed_{seed}").latest_checkpoint().name == "step_0000002"
        assert json.loads((out / f"seed_{seed}" / "config.json").read_text())["seed"] == seed


def test_a_warm_started_run_resumes_after_its_source_is_gone(cli, tmp_path, data_dir, runs):
    source = shutil.copytree(runs["causal"], tmp_path / "source")
    run = tmp_path / "warm"
    cli("train", "--data", data_dir, "--out", run, "--init-from", source, *TRAIN)
    shutil.move(source, tmp_path / "moved")  # moved, pruned or deleted: the run's checkpoints hold every weight
    cli("train", "--out", run, "--resume", "--max-steps", "4")
    assert RunDir(run).latest_checkpoint().name == "step_0000004"


def test_report_draws_names_and_rows_that_matplotlib_would_parse(cli, run_copy, tmp_path, capsys):
    named = tmp_path / "$a^b_{c}$"
    shutil.copytree(run_copy, named)
    with open(named / "metrics.jsonl", "a") as f:  # rows the report cannot draw: skipped with a warning
        f.write(json.dumps({"step": 31, "loss": 1.0}) + "\n")
        f.write(json.dumps({"step": 32, "tokens": 99, "val_loss": "low"}) + "\n")
        f.write(json.dumps({"step": 33, "tokens": 100, "loss": 2.5}) + "\n")
    proc = cli("report", named, "--out", tmp_path / "rep", "--no-samples")
    assert "2 row(s) skipped" in proc.stderr
    assert "$a^b_{c}$" in (tmp_path / "rep" / "report.md").read_text().replace("\\", "")  # markdown escapes


def test_two_tokenizer_trainings_onto_one_new_folder_never_replace_each_other(tmp_path, corpus, monkeypatch):
    from hybridlm import tokenizer
    from hybridlm.errors import UserError

    out = tmp_path / "tok"
    real = tokenizer.check_text_files

    def another_training_finishes_meanwhile(*args, **kw):
        checked = real(*args, **kw)
        out.mkdir()
        (out / "tokenizer.json").write_text("the first training's")
        return checked

    monkeypatch.setattr(tokenizer, "check_text_files", another_training_finishes_meanwhile)
    with pytest.raises(UserError, match="filled by another process"):
        tokenizer.train_tokenizer([corpus], 300, out)
    assert (out / "tokenizer.json").read_text() == "the first training's"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temporary folder left


def test_task_files_run_code_only_when_trusted(tmp_path):
    from hybridlm.errors import UserError
    from hybridlm.evaluate.harness import check_task_files

    (tmp_path / "t.yaml").write_text("task: t\nprocess_docs: !function utils.docs\n")
    with pytest.raises(UserError, match="--trust-remote-code"):
        check_task_files(tmp_path)
    check_task_files(tmp_path, trust_remote_code=True)  # the user read it and allows it
    (tmp_path / "t.yaml").write_text("task: t\na: &a [x]\nb: [*a, *a]\n")  # aliases in moderation are data
    check_task_files(tmp_path)
