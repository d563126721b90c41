"""BabyLM 2025's training rules: words seen, checkpoints at word counts, the epoch cap, branches
per checkpoint and learning curves."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import SHARED, assert_one_line_error, hlm, metric_rows, tiny_flags, torchrun
from safetensors.torch import load_file

from hybridlm.config import TrainConfig, parse_word_count, word_label
from hybridlm.data import PackedTokens, prepare, words_per_token
from hybridlm.grammar import write_corpus
from hybridlm.tokenizer import load_tokenizer, train_tokenizer
from hybridlm.train import train

ARGS = [
    *tiny_flags(
        seq_len=64,
        batch_size=64,
        log_interval=1,
        eval_interval=0,
        checkpoint_interval=20,
        precision="fp32",
        seed=3,
        checkpoint_words="50k,100K",
    ),
]


@pytest.fixture(scope="module")
def words_data(tmp_path_factory):
    """A few hundred thousand words of grammar text, prepared."""
    root = tmp_path_factory.mktemp("words")
    corpus = write_corpus(root / "corpus.txt", n_words=200_000, seed=11)
    train_tokenizer([corpus], vocab_size=320, out_dir=root / "tok")
    prepare([corpus], root / "tok", root / "data", val_fraction=0.05)
    return corpus, root / "data"


@pytest.fixture(scope="module")
def words_run(tmp_path_factory, words_data):
    out = tmp_path_factory.mktemp("words_run") / "run"
    hlm("train", "--data", words_data[1], "--out", out, "--max-steps", 72, *ARGS)
    return out


def _records(run):
    return metric_rows(run)


def _words_checkpoints(run):
    return {p.name: json.loads((p / "state.json").read_text()) for p in sorted((run / "checkpoints").glob("words_*"))}


def test_prepare_counts_every_word_once(words_data):
    corpus, data = words_data
    manifest = json.loads((data / "manifest.json").read_text())
    want = sum(len(line.split()) for line in corpus.read_text(encoding="utf-8").splitlines())
    splits = manifest["splits"]
    assert splits["train"]["words"] + splits["val"]["words"] == want
    counts = np.fromfile(data / splits["train"]["shards"][0]["words_file"], dtype=np.uint8)
    assert counts.sum() == splits["train"]["words"] and len(counts) == splits["train"]["tokens"]
    windows = PackedTokens(data, "train", 64)
    assert windows.words(range(windows.n_windows)) == counts[: windows.n_windows * 64].sum()


def test_words_per_token_gives_each_word_to_one_token(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    for text in ("the dogs near the cat sleep .", "naïve café — 東京  ok", "a", "  spaced   out  "):
        enc = tok.encode(text, add_special_tokens=False)
        counts = words_per_token(text, enc.offsets)
        assert counts.sum() == len(text.split()), text
        assert all(c <= 1 for c in counts)  # a word-level pre-tokenizer never puts two words in a token


def test_word_counts_parse_and_name_as_babylm_branches():
    assert [parse_word_count(v) for v in ("1M", "50k", "1.5M", 20000, " 2B ")] == [
        10**6,
        50_000,
        1_500_000,
        20_000,
        2 * 10**9,
    ]
    assert [word_label(n) for n in (10**6, 20 * 10**6, 50_000, 1_500_000, 123)] == ["1M", "20M", "50K", "1500K", "123"]
    cfg = TrainConfig(checkpoint_schedule="babylm-strict-small")
    assert [word_label(n) for n in cfg.word_thresholds()] == [f"{n}M" for n in range(1, 11)] + [
        f"{n}M" for n in range(20, 101, 10)
    ]
    assert len(TrainConfig(checkpoint_schedule="babylm-strict").word_thresholds()) == 28


def test_checkpoints_at_the_first_step_past_each_word_count(words_run):
    records = {r["step"]: r for r in _records(words_run) if "loss" in r}
    assert all(records[s]["words"] > records[s - 1]["words"] for s in range(2, 73))  # logged every step, exact
    saved = _words_checkpoints(words_run)
    assert set(saved) == {"words_50K", "words_100K"}
    for name, threshold in (("words_50K", 50_000), ("words_100K", 100_000)):
        first = min(s for s, r in records.items() if r["words"] >= threshold)
        assert saved[name]["step"] == first and saved[name]["words_seen"] == records[first]["words"]
    # kept whatever keep_checkpoints prunes: only two step_N folders remain
    assert sorted(p.name for p in (words_run / "checkpoints").glob("step_*")) == ["step_0000060", "step_0000072"]


def test_the_same_checkpoints_after_a_kill_and_resume(cli, words_run, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(words_run, killed)
    # as if killed soon after the first words checkpoint: what was written later is gone, and
    # `latest` names that checkpoint (a words_N checkpoint is a full one: the run resumes from it)
    ckpts = killed / "checkpoints"
    first = _words_checkpoints(killed)["words_50K"]["step"]
    for p in ckpts.iterdir():
        if p.is_dir() and json.loads((p / "state.json").read_text())["step"] > first:
            shutil.rmtree(p)
    (ckpts / "latest").write_text("words_50K\n")
    assert "words_100K" not in _words_checkpoints(killed)
    cli("train", "--out", killed, "--resume")

    def position(run):
        return {k: (v["step"], v["words_seen"], v["tokens_seen"]) for k, v in _words_checkpoints(run).items()}

    assert position(killed) == position(words_run)
    for name in _words_checkpoints(words_run):
        a, b = (load_file(str(r / "checkpoints" / name / "model.safetensors")) for r in (killed, words_run))
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_the_same_checkpoints_under_two_processes(words_data, words_run, tmp_path):
    torchrun(2, "--data", words_data[1], "--out", tmp_path / "two", "--max-steps", 72, *ARGS)
    two, one = _words_checkpoints(tmp_path / "two"), _words_checkpoints(words_run)
    assert {k: (v["step"], v["words_seen"]) for k, v in two.items()} == {
        k: (v["step"], v["words_seen"]) for k, v in one.items()
    }


@pytest.mark.slow
def test_max_epochs_stops_after_one_pass(cli, data_dir, tmp_path):
    windows = PackedTokens(data_dir, "train", 64)
    summary = train(
        {
            "data": str(data_dir),
            "out": str(tmp_path / "one"),
            "preset": "tiny",
            "seq_len": 64,
            "batch_size": 32,
            "max_epochs": 1.0,
            "eval_interval": 0,
            "log_interval": 50,
        },
        quiet=True,
    )
    epoch_tokens = windows.n_windows * 64
    assert summary["steps"] == windows.n_windows // 32  # --max-epochs alone sets the run's length
    assert epoch_tokens - 32 * 64 < summary["tokens_seen"] <= epoch_tokens
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert (
        manifest["splits"]["train"]["words"] - 32 * 64 < summary["words_seen"] <= manifest["splits"]["train"]["words"]
    )
    # a longer --max-steps stops at the cap with one line saying so
    proc = cli(
        "train",
        "--data",
        data_dir,
        "--out",
        tmp_path / "capped",
        *tiny_flags(seq_len=64, batch_size=32, max_epochs=0.5, max_steps=1000, eval_interval=0),
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["steps"] == int(0.5 * windows.n_windows) // 32
    assert "--max-epochs 0.5 reached" in proc.stderr


def test_schedule_without_cap_warns_and_old_data_is_refused(cli, words_data, tmp_path):
    proc = cli(
        "train",
        "--data",
        words_data[1],
        "--out",
        tmp_path / "r",
        *tiny_flags(seq_len=64, max_steps=1, eval_interval=0, checkpoint_schedule="babylm-strict-small"),
    )
    assert "warning" in proc.stderr and "--max-epochs 10" in proc.stderr
    old = tmp_path / "old"
    shutil.copytree(words_data[1], old)
    manifest = json.loads((old / "manifest.json").read_text())
    for sh in manifest["splits"]["train"]["shards"]:
        del sh["words_file"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(
        cli("train", "--data", old, "--out", tmp_path / "o", "--checkpoint-words", "1M", check=False),
        "re-run hlm prepare",
    )
    assert_one_line_error(
        cli("train", "--data", old, "--out", tmp_path / "o", "--checkpoint-words", "lots", check=False),
        "not a count of words",
    )


def test_export_has_a_branch_per_checkpoint_that_transformers_loads(words_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    from hybridlm.runs import load_run

    out = tmp_path / "hf"
    hlm("export", "--run", words_run, "--out", out, "--all-checkpoints", "--repo-id", "me/words")
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    for label in ("50K", "100K"):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            "me/words", revision=f"chck_{label}", cache_dir=out / ".hub-cache", local_files_only=True
        )
        ours = load_run(words_run, checkpoint=f"words_{label}").model
        with torch.no_grad():
            assert torch.allclose(model(ids).logits, ours(ids, logits=True), atol=1e-4), label
    main = transformers.AutoModelForCausalLM.from_pretrained(out)  # the checked-out main: the final weights
    with torch.no_grad():
        assert torch.allclose(main(ids).logits, load_run(words_run).model(ids, logits=True), atol=1e-4)
    import subprocess

    branches = subprocess.run(
        ["git", "-C", str(out), "branch", "--format=%(refname:short)"], capture_output=True, text=True
    ).stdout.split()
    assert sorted(branches) == ["chck_100K", "chck_50K", "main"]


def test_eval_all_checkpoints_is_resumable_and_reported(cli, words_run, tmp_path):
    FAST = SHARED / "babylm-2025" / "fast_eval"
    if not FAST.is_dir():
        pytest.skip(f"{FAST} not found (BabyLM 2025 data lives in ../shared)")
    data = tmp_path / "fast"
    for folder in ("blimp_fast", "supplement_fast"):
        (data / folder).mkdir(parents=True)
        for f in sorted((FAST / folder).glob("*.jsonl"))[:3]:
            (data / folder / f.name).write_text(
                "\n".join(f.read_text(encoding="utf-8").splitlines()[:5]) + "\n", encoding="utf-8"
            )
    run = tmp_path / "run"
    shutil.copytree(words_run, run)
    cli("eval", "babylm", "--run", run, "--all-checkpoints", "--data", data)
    files = {p.parent.name: p for p in (run / "eval" / "checkpoints").glob("*/babylm-causal.json")}
    assert set(files) == {"words_50K", "words_100K"}
    first = {k: json.loads(p.read_text()) for k, p in files.items()}
    assert all(set(r["tasks"]) == {"blimp", "supplement"} and r["words_seen"] > 0 for r in first.values())
    # as if killed after the first task of the second checkpoint: only the missing task is scored again
    partial = dict(first["words_100K"], tasks={"blimp": first["words_100K"]["tasks"]["blimp"]})
    files["words_100K"].write_text(json.dumps(partial))
    kept = files["words_50K"].stat().st_mtime_ns
    proc = cli("eval", "babylm", "--run", run, "--all-checkpoints", "--data", data)
    assert "(kept)" in proc.stdout and files["words_50K"].stat().st_mtime_ns == kept
    again = json.loads(files["words_100K"].read_text())
    assert again["tasks"]["supplement"]["value"] == first["words_100K"]["tasks"]["supplement"]["value"]
    cli("report", run, "--out", tmp_path / "rep", "--no-samples")
    assert (tmp_path / "rep" / "learning_curves.png").is_file()
    assert "| run | causal | blimp | 50K: " in (tmp_path / "rep" / "report.md").read_text()


def test_eval_all_checkpoints_reads_surprisals_once_per_checkpoint(words_run, tmp_path, monkeypatch):
    """Eye tracking and self-paced reading are two regressions on one pass of surprisals."""
    from hybridlm.evaluate import babylm

    source = SHARED / "babylm-2025" / "fast_eval" / "reading" / "reading_data.csv"
    if not source.is_file():
        pytest.skip(f"{source} not found (BabyLM 2025 data lives in ../shared)")
    (tmp_path / "fast" / "reading").mkdir(parents=True)
    lines = source.read_text(encoding="utf-8").splitlines()
    (tmp_path / "fast" / "reading" / "reading_data.csv").write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    calls = []
    real = babylm._reading_surprisals
    monkeypatch.setattr(babylm, "_reading_surprisals", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = tmp_path / "run"
    shutil.copytree(words_run, run)
    results = babylm.evaluate_checkpoints(run, tmp_path / "fast", log=lambda *_: None)
    assert len(results) == 2 and len(calls) == 2  # one pass per checkpoint, not one per reading task
    assert all(set(r["tasks"]) == {"reading_eye_tracking", "reading_self_paced"} for r in results)
