import json
import shutil

import numpy as np
import pytest
from helpers import assert_one_line_error

from hybridlm.data import PackedTokens, load_manifest, prepare
from hybridlm.errors import UserError
from hybridlm.tokenizer import load_tokenizer, train_tokenizer


def test_manifest_and_documents(data_dir, corpus):
    m = load_manifest(data_dir)
    assert m["dtype"] == "uint16" and m["vocab_size"] == 320
    train = np.fromfile(data_dir / m["splits"]["train"]["shards"][0]["file"], dtype=np.uint16)
    val = np.fromfile(data_dir / m["splits"]["val"]["shards"][0]["file"], dtype=np.uint16)
    assert len(train) == m["splits"]["train"]["tokens"] and len(val) == m["splits"]["val"]["tokens"]
    assert train[0] == 1 and val[0] == 1  # every document (and split) starts with <s>
    n_docs = corpus.read_text().count("\n\n")
    assert (train == 1).sum() + (val == 1).sum() in (n_docs, n_docs + 1)  # a split cut may add one <s>
    # the token stream decodes back to the corpus text
    tok = load_tokenizer(data_dir)
    first_doc = train[1 : np.flatnonzero(train == 1)[1]]
    assert tok.decode(first_doc.tolist()).split() == corpus.read_text().split("\n\n")[0].split()
    assert np.load(data_dir / "unigram.npy").sum() == len(train)
    assert sorted(p.name for p in data_dir.glob("*.npy")) == ["unigram.npy"]  # nothing written that is never read


def test_batches_are_a_pure_function_of_seed_and_step(data_dir):
    a, b = PackedTokens(data_dir, "train", 32), PackedTokens(data_dir, "train", 32)
    assert (a.batch(7, 8, seed=1) == b.batch(7, 8, seed=1)).all()
    assert not (a.batch(7, 8, seed=1) == a.batch(7, 8, seed=2)).all()
    assert a.batch(0, 4, 0).shape == (4, 33)


def test_epoch_visits_every_window_once(data_dir):
    d = PackedTokens(data_dir, "train", 64)
    n = d.n_windows
    seen = [tuple(row.tolist()) for s in range(n // 4) for row in d.batch(s, 4, seed=5)]
    windows = {tuple(d.window(k).astype(np.int64).tolist()) for k in range(n)}
    assert len(set(seen)) == len(seen) == (n // 4) * 4
    assert set(seen) <= windows


def test_prepare_rejects_bad_corpora(cli, tmp_path, tokenizer_dir):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n\n")
    with pytest.raises(UserError, match="no text"):
        prepare([blank], tokenizer_dir, tmp_path / "d")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    assert_one_line_error(
        cli("prepare", "--input", bad, "--tokenizer", tokenizer_dir, "--out", tmp_path / "d", check=False),
        "bad.txt:2",
        "UTF-8",
    )
    assert_one_line_error(
        cli(
            "prepare",
            "--input",
            tmp_path / "missing.txt",
            "--tokenizer",
            tokenizer_dir,
            "--out",
            tmp_path / "d",
            check=False,
        ),
        "not found",
    )
    assert_one_line_error(
        cli("prepare", "--input", blank, "--tokenizer", tmp_path, "--out", tmp_path / "d", check=False), "no tokenizer"
    )


def test_tokenizer_mismatch_is_detected(cli, tmp_path, data_dir, corpus):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    train_tokenizer([corpus], vocab_size=300, out_dir=tmp_path / "other")
    shutil.copyfile(tmp_path / "other" / "tokenizer.json", copy / "tokenizer.json")
    with pytest.raises(UserError, match="does not match"):
        load_manifest(copy)
    proc = cli("train", "--data", copy, "--out", tmp_path / "run", "--max-steps", 1, check=False)
    assert_one_line_error(proc, "does not match")


def test_truncated_shard_is_detected(tmp_path, data_dir):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shard = copy / json.loads((copy / "manifest.json").read_text())["splits"]["train"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(UserError, match="truncated"):
        PackedTokens(copy, "train", 32)
