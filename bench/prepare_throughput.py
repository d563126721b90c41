"""Corpus preparation tokens/s: `hlm prepare` vs `datasets.map` with the same tokenizer.

Both tokenize the same text file; the token counts must agree (hybridlm adds one <s> per
document) before the timings count.

    python bench/prepare_throughput.py [--input ../shared/data/gutenberg-10m/train.txt] [--num-proc 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, append_results  # noqa: E402

from hybridlm.data import prepare  # noqa: E402
from hybridlm.tokenizer import train_tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(SHARED / "gutenberg-10m" / "train.txt"))
    ap.add_argument("--vocab-size", type=int, default=16384)
    ap.add_argument("--num-proc", type=int, default=2)
    a = ap.parse_args()
    try:
        import datasets
        import transformers
    except ImportError:
        sys.exit("this benchmark compares against datasets.map: pip install datasets transformers")
    src = Path(a.input)
    if not src.is_file():
        sys.exit(f"{src} not found (the Gutenberg corpus lives in ../shared/data)")
    tmp = Path(tempfile.mkdtemp(prefix="hlm-prep-"))
    train_tokenizer([src], a.vocab_size, tmp / "tok")

    t = time.perf_counter()
    manifest = prepare([src], tmp / "tok", tmp / "data", val_fraction=0.0001)
    t_ours = time.perf_counter() - t
    ours_tokens = manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"]
    docs = manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"]

    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp / "tok"))
    datasets.disable_caching()
    t = time.perf_counter()
    ds = datasets.load_dataset("text", data_files=str(src), split="train", cache_dir=str(tmp / "hf-cache"))
    ds = ds.filter(lambda b: [bool(x.strip()) for x in b["text"]], batched=True, num_proc=a.num_proc)
    ds = ds.map(
        lambda b: {"input_ids": hf_tok([x.strip() for x in b["text"]], add_special_tokens=False)["input_ids"]},
        batched=True,
        num_proc=a.num_proc,
        remove_columns=["text"],
    )
    hf_tokens = sum(len(x) for x in ds["input_ids"])
    t_hf = time.perf_counter() - t
    # hybridlm: + one <s> per document (and at most one more at the validation cut)
    assert 0 <= ours_tokens - docs - hf_tokens <= 1, (ours_tokens, docs, hf_tokens)
    rows = [
        "| tool | tokens | seconds | tokens/s | speed-up |",
        "|---|---|---|---|---|",
        f"| hlm prepare (uint16 memmap shards + manifest) | {ours_tokens:,} | {t_ours:.1f} | "
        f"{ours_tokens / t_ours:,.0f} | {t_hf / t_ours:.1f}x |",
        f"| datasets.load_dataset + filter + map(num_proc={a.num_proc}) | {hf_tokens:,} | {t_hf:.1f} | "
        f"{hf_tokens / t_hf:,.0f} | 1.0x |",
    ]
    notes = [
        f"input: {src.name} ({src.stat().st_size / 1e6:.1f} MB), byte-level BPE {a.vocab_size:,}; token counts "
        "checked equal",
        "datasets' side stops at tokenized Arrow columns; hlm prepare also writes the shards",
    ]
    append_results("Preparation throughput (bench/prepare_throughput.py)", rows, notes)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
