"""Corpus preparation (text -> token shards as numpy memmaps) and the packed, seeded data order.

Layout of a prepared directory:
    manifest.json        token counts, dtype, shards, documents, bytes/words, tokenizer hash
    tokenizer.json       the tokenizer the shards were made with
    train_000.bin ...    token ids, every document starting with <s> (which marks document boundaries)
    train_000.words ...  uint8 per token: how many whitespace-separated words (BabyLM's count) begin in
                         it, so the words of any window, document or split are an exact sum
    val_000.bin          held-out split (from --valid files, or the corpus tail)
    unigram.npy          token counts of the train split (frequency-informed masking uses it)
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hybridlm.errors import UserError
from hybridlm.files import DATA_LOCK, atomic_write_bytes, atomic_write_json, data_lock, refuse_links_in
from hybridlm.tokenizer import (
    BOS,
    MAX_LINE_BYTES,
    TOKENIZER_FILE,
    check_text_files,
    line_too_long,
    load_tokenizer,
    tokenizer_hash,
)

MANIFEST = "manifest.json"
_LINES_PER_BATCH = 8192


def _iter_documents(files, progress: tqdm | None):
    """Yield documents as lists of paragraph strings; a blank line ends a document."""
    for path in files:
        doc: list[str] = []
        with open(path, "rb") as f:
            for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES:  # the tokenizers library aborts the process on such a line
                    raise line_too_long(path, lineno)
                if progress is not None:
                    progress.update(len(raw))
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise UserError(f"{path}:{lineno}: not UTF-8 (byte {e.start}); re-encode the file") from None
                if line:
                    doc.append(line)
                elif doc:
                    yield doc
                    doc = []
        if doc:
            yield doc


@dataclass
class _Split:
    tokens: list[np.ndarray]
    n_tokens: int = 0
    n_docs: int = 0
    n_bytes: int = 0
    n_words: int = 0
    doc_starts: list[int] | None = None
    per_token: list[np.ndarray] | None = None  # per document: the array encode_batch gave beside the ids


def tokenize_files(files, encode_batch, bos: int, dtype, desc: str, bos_value=True) -> _Split:
    """Documents of `files` as token arrays, each starting with `bos`.

    encode_batch(lines) -> per line a list of ids, or (ids, per-token values) to keep an array
    beside the tokens (word starts for scoring, word counts for prepare); <s> gets `bos_value`."""
    total = sum(os.path.getsize(f) for f in files)
    split = _Split(tokens=[], doc_starts=[], per_token=[])
    pending_lines: list[str] = []
    pending_doc_sizes: list[int] = []

    def flush():
        encs = encode_batch(pending_lines)
        i = 0
        for n_lines in pending_doc_sizes:
            lines = encs[i : i + n_lines]
            i += n_lines
            with_starts = bool(lines) and isinstance(lines[0], tuple)
            parts = [np.array([bos], dtype=dtype)] + [
                np.asarray(e[0] if with_starts else e, dtype=dtype) for e in lines
            ]
            doc = np.concatenate(parts)
            if with_starts:
                first = np.asarray([bos_value])
                split.per_token.append(np.concatenate([first] + [np.asarray(e[1], dtype=first.dtype) for e in lines]))
            split.doc_starts.append(split.n_tokens)
            split.tokens.append(doc)
            split.n_tokens += len(doc)
            split.n_docs += 1
        pending_lines.clear()
        pending_doc_sizes.clear()

    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None) as bar:
        for doc in _iter_documents(files, bar):
            split.n_bytes += sum(len(p.encode("utf-8")) for p in doc) + len(doc) - 1
            split.n_words += sum(len(p.split()) for p in doc)
            pending_lines.extend(doc)
            pending_doc_sizes.append(len(doc))
            if len(pending_lines) >= _LINES_PER_BATCH:
                flush()
        if pending_lines:
            flush()
    return split


_WORD = re.compile(r"\S+")  # BabyLM counts whitespace-separated words (str.split)


def words_per_token(text: str, offsets) -> np.ndarray:
    """uint8 per token: the words of `text` that begin in it. Each word is given to the first token
    whose character span ends after the word's first character, so every word is counted exactly
    once even where byte-level tokens share a character's span."""
    starts = np.fromiter((m.start() for m in _WORD.finditer(text)), dtype=np.int64)
    counts = np.zeros(len(offsets), dtype=np.uint8)
    if len(offsets) and len(starts):
        ends = np.maximum.accumulate(np.fromiter((e for _, e in offsets), dtype=np.int64, count=len(offsets)))
        owner = np.minimum(np.searchsorted(ends, starts, side="right"), len(offsets) - 1)
        np.add.at(counts, owner, 1)
    return counts


def _write_split(
    out: Path, name: str, arr: np.ndarray, shard_tokens: int, words: np.ndarray | None = None
) -> list[dict]:
    shards = []
    for k, start in enumerate(range(0, len(arr), shard_tokens)):
        fname = f"{name}_{k:03d}.bin"
        atomic_write_bytes(out / fname, arr[start : start + shard_tokens].tobytes())
        shard = {"file": fname, "tokens": int(min(shard_tokens, len(arr) - start))}
        if words is not None:
            shard["words_file"] = f"{name}_{k:03d}.words"
            atomic_write_bytes(
                out / shard["words_file"], words[start : start + shard_tokens].astype(np.uint8).tobytes()
            )
        shards.append(shard)
    return shards


def prepare(
    inputs,
    tokenizer_dir,
    out_dir,
    valid_inputs=None,
    val_fraction: float = 0.005,
    shard_tokens: int = 100_000_000,
    force: bool = False,
) -> dict:
    """Tokenize text files into shards; returns the manifest."""
    files = check_text_files(inputs, scan_utf8=False)  # UTF-8 is checked while streaming
    valid_files = check_text_files(valid_inputs, scan_utf8=False) if valid_inputs else None
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must lie in (0, 1) (got {val_fraction})")
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    out = Path(out_dir)
    tok_dir = Path(tokenizer_dir) if Path(tokenizer_dir).is_dir() else Path(tokenizer_dir).parent
    if out.exists() and out.resolve() == tok_dir.resolve():
        raise UserError(f"--out {out} is the tokenizer's folder; give prepared data its own folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(p.name != DATA_LOCK for p in out.iterdir()) and not force:
        what = "prepared data" if (out / MANIFEST).exists() else "files"
        raise UserError(f"--out {out} already holds {what}; pass --force to replace it, or choose a new --out")
    refuse_links_in(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with data_lock(out, exclusive=True):  # never rewritten under a training run that reads it
            (out / MANIFEST).unlink(
                missing_ok=True
            )  # a folder being rewritten is not prepared data until its new manifest lands

            # the tokenizers library encodes a batch on all cores (Rust threads); the character offsets
            # give each token the words that begin in it (words seen during training are then exact)
            def encode_batch(lines):
                return [
                    (e.ids, words_per_token(line, e.offsets))
                    for line, e in zip(lines, tokenizer.encode_batch(lines, add_special_tokens=False))
                ]

            bos = tokenizer.token_to_id(BOS)
            train = tokenize_files(files, encode_batch, bos, dtype, "tokenize train", bos_value=np.uint8(0))
            if train.n_tokens == 0:
                raise UserError(f"no text found in {', '.join(map(str, files))} (the corpus has only blank lines)")
            train_arr, train_words = np.concatenate(train.tokens), np.concatenate(train.per_token)
            if valid_files:
                val = tokenize_files(valid_files, encode_batch, bos, dtype, "tokenize valid", bos_value=np.uint8(0))
                if val.n_tokens == 0:
                    raise UserError("the --valid files hold no text")
                val_arr, val_words = np.concatenate(val.tokens), np.concatenate(val.per_token)
                val_meta = {
                    "documents": val.n_docs,
                    "bytes": val.n_bytes,
                    "words": val.n_words,
                    "source": "valid files",
                }
                train_meta = {"documents": train.n_docs, "bytes": train.n_bytes, "words": train.n_words}
            else:
                # Hold out the corpus tail, cut at a document start when one lies near the cut.
                want = max(int(len(train_arr) * val_fraction), min(2048, len(train_arr) // 10))
                cut = len(train_arr) - want
                starts = np.asarray(train.doc_starts)
                near = starts[(starts >= cut - want) & (starts <= cut + want // 2)]
                if len(near):
                    cut = int(near[np.argmin(np.abs(near - cut))])
                val_arr, val_words = train_arr[cut:], train_words[cut:]
                if val_arr[0] != bos:
                    val_arr = np.concatenate([np.array([bos], dtype=dtype), val_arr])
                    val_words = np.concatenate([np.zeros(1, dtype=val_words.dtype), val_words])
                train_arr, train_words = train_arr[:cut], train_words[:cut]
                frac = len(val_arr) / (len(train_arr) + len(val_arr))
                # Bytes are apportioned by token share (bits per byte needs only the ratio); words are exact.
                val_meta = {
                    "documents": int((starts >= cut).sum()) or 1,
                    "bytes": int(round(train.n_bytes * frac)),
                    "words": int(val_words.sum()),
                    "source": f"tail of the corpus ({frac:.2%} of tokens)",
                }
                train_meta = {
                    "documents": int((starts < cut).sum()),
                    "bytes": train.n_bytes - val_meta["bytes"],
                    "words": int(train_words.sum()),
                }
            if len(train_arr) < 2 or len(val_arr) < 2:
                raise UserError(
                    "the corpus is too small to split into train and validation; give more text or --valid FILE"
                )

            buf = io.BytesIO()
            np.save(buf, np.bincount(train_arr, minlength=vocab).astype(np.int64))
            atomic_write_bytes(out / "unigram.npy", buf.getvalue())
            atomic_write_bytes(
                out / TOKENIZER_FILE,
                (
                    Path(tokenizer_dir) / TOKENIZER_FILE if Path(tokenizer_dir).is_dir() else Path(tokenizer_dir)
                ).read_bytes(),
            )
            manifest = {
                "format": "hybridlm-tokens-v1",
                "dtype": np.dtype(dtype).name,
                "vocab_size": vocab,
                "tokenizer_hash": tokenizer_hash(out / TOKENIZER_FILE),
                "bos_id": bos,
                "splits": {
                    "train": {
                        "tokens": int(len(train_arr)),
                        **train_meta,
                        "shards": _write_split(out, "train", train_arr, shard_tokens, train_words),
                    },
                    "val": {
                        "tokens": int(len(val_arr)),
                        **val_meta,
                        "shards": _write_split(out, "val", val_arr, shard_tokens, val_words),
                    },
                },
                "inputs": [str(f) for f in files],
            }
            atomic_write_json(out / MANIFEST, manifest)  # last: the folder is prepared data once it lands
            return manifest
    except BaseException:
        if created:  # a folder this command made and could not fill: gone, as if never asked for
            shutil.rmtree(out, ignore_errors=True)
        raise


def load_manifest(data_dir) -> dict:
    d = Path(data_dir)
    f = d / MANIFEST
    if not f.is_file():
        raise UserError(
            f"{d} is not a prepared data directory (no {MANIFEST}); run: hlm prepare --input FILE --tokenizer "
            f"DIR --out {d}"
        )
    try:
        manifest = json.loads(f.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{f} is corrupt; re-run hlm prepare") from None
    _check_manifest(manifest, f)
    if not (d / TOKENIZER_FILE).is_file() or tokenizer_hash(d / TOKENIZER_FILE) != manifest.get("tokenizer_hash"):
        raise UserError(f"the tokenizer in {d} does not match the one its shards were made with; re-run hlm prepare")
    return manifest


def _check_manifest(m, f: Path) -> None:
    """Every field hlm reads, of the type it needs (a crafted or damaged manifest is one line)."""

    def bad(what):
        raise UserError(f"{f}: {what}; re-run hlm prepare")

    if not isinstance(m, dict):
        bad("not a JSON object")
    if m.get("dtype") not in ("uint16", "uint32"):
        bad("dtype must be uint16 or uint32")
    vocab = m.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or not 5 < vocab <= np.iinfo(m["dtype"]).max + 1:
        bad(f"vocab_size {vocab!r} is not a vocabulary size for {m['dtype']} tokens")
    if not isinstance(m.get("bos_id"), int) or not 0 <= m["bos_id"] < vocab:
        bad("bos_id is not a token id")
    splits = m.get("splits")
    if not isinstance(splits, dict) or not all(k in splits for k in ("train", "val")):
        bad("splits must hold train and val")
    for name, split in splits.items():
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("tokens"), int)
            or not isinstance(split.get("shards"), list)
        ):
            bad(f"split {name!r} needs tokens and a list of shards")
        for sh in split["shards"]:
            names = (
                [sh.get("file")] + ([sh["words_file"]] if "words_file" in sh else [])
                if isinstance(sh, dict)
                else [None]
            )
            if (
                not isinstance(sh, dict)
                or not isinstance(sh.get("tokens"), int)
                or sh["tokens"] < 0
                or not all(isinstance(n, str) and n and Path(n).name == n and not n.startswith(".") for n in names)
            ):
                bad(f"a shard of split {name!r} is not a file name in the folder with its token count")


class PackedTokens:
    """A split as non-overlapping windows of seq_len+1 tokens, read from memmapped shards.

    Window k covers tokens [k*L, k*L+L] of its shard (the +1 is the shifted target), so the data
    order is a permutation of windows per epoch, seeded by (seed, epoch): sample s of the run is
    window perm[epoch(s)][s mod n_windows]. A batch is then a pure function of (seed, step), which
    makes resume exact and keeps batches identical whatever the number of processes.

    Words: window k counts the words that begin in its tokens k*L .. k*L+L-1 (the target-only last
    token is the next window's first), so one pass over the windows sees each word at most once.
    """

    def __init__(self, data_dir, split: str, seq_len: int):
        self.manifest = load_manifest(data_dir)
        if split not in self.manifest["splits"]:
            raise UserError(f"split {split!r} not in {data_dir}")
        meta = self.manifest["splits"][split]
        dtype = np.dtype(self.manifest["dtype"])
        self.seq_len = seq_len
        self.shards, self.word_files, counts = [], [], []
        # shim (until 0.2): data prepared before per-token word counts has none (no words_N checkpoints)
        self.has_words = all("words_file" in sh for sh in meta["shards"])
        for sh in meta["shards"]:
            path = Path(data_dir) / sh["file"]
            if not path.is_file() or path.stat().st_size != sh["tokens"] * dtype.itemsize:
                raise UserError(f"shard {path} is missing or truncated; re-run hlm prepare")
            mm = np.memmap(path, dtype=dtype, mode="r")
            if len(mm) and int(mm.max()) >= self.manifest["vocab_size"]:  # a crafted shard: the embedding would fault
                raise UserError(
                    f"shard {path} holds token ids beyond the vocabulary ({self.manifest['vocab_size']}); "
                    "re-run hlm prepare"
                )
            self.shards.append(mm)
            counts.append(max(0, (len(mm) - 1) // seq_len))
            if self.has_words:
                wpath = Path(data_dir) / sh["words_file"]
                if not wpath.is_file() or wpath.stat().st_size != sh["tokens"]:
                    raise UserError(f"word counts {wpath} are missing or truncated; re-run hlm prepare")
                self.word_files.append(wpath)
        self.cum = np.cumsum([0] + counts)
        self.n_windows = int(self.cum[-1])
        if self.n_windows == 0:
            raise UserError(
                f"the {split} split of {data_dir} has {meta['tokens']} tokens, fewer than one sequence of "
                f"{seq_len + 1}; use a shorter --seq-len or more text"
            )
        self.meta = meta
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._window_words: np.ndarray | None = None

    @property
    def window_words(self) -> np.ndarray:
        """Words per window, summed from the word files on first use (not by every reader of the split)."""
        if self._window_words is None:
            sums = []
            for f, n in zip(self.word_files, np.diff(self.cum)):
                words = np.memmap(f, dtype=np.uint8, mode="r")
                sums.append(words[: n * self.seq_len].reshape(n, self.seq_len).sum(1, dtype=np.int64))
            self._window_words = np.concatenate(sums)
        return self._window_words

    def window(self, k: int) -> np.ndarray:
        s = int(np.searchsorted(self.cum, k, side="right") - 1)
        off = (k - self.cum[s]) * self.seq_len
        return self.shards[s][off : off + self.seq_len + 1]

    def windows(self, ks) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.window(int(k)).astype(np.int64) for k in ks]))

    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._perm_cache:
            self._perm_cache = {key: np.random.default_rng([seed, epoch]).permutation(self.n_windows)}
        return self._perm_cache[key]

    def batch_windows(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """The window indices of the global batch of `step`."""
        return self.windows_from(step * batch_size, batch_size, seed)

    def windows_from(self, start: int, count: int, seed: int) -> np.ndarray:
        """`count` window indices from position `start` of the seeded order (a new permutation each epoch)."""
        samples = np.arange(start, start + count)
        return np.array([self._perm(seed, int(s // self.n_windows))[s % self.n_windows] for s in samples])

    def batch(self, step: int, batch_size: int, seed: int) -> torch.Tensor:
        """The global batch of `step`: LongTensor [batch_size, seq_len + 1]."""
        return self.windows(self.batch_windows(step, batch_size, seed))

    def words(self, ks) -> int:
        """Words in windows `ks` (0 when the data has no per-token word counts)."""
        return int(self.window_words[np.asarray(ks)].sum()) if self.has_words else 0

    def eval_batches(self, batch_size: int, max_batches: int):
        """Validation windows in file order (no shuffling), at most max_batches batches."""
        n = min(self.n_windows, batch_size * max_batches)
        for start in range(0, n, batch_size):
            yield self.windows(range(start, min(n, start + batch_size)))


def load_unigram(data_dir) -> np.ndarray:
    """Token counts of the train split (written by prepare), loaded without pickle."""
    f = Path(data_dir) / "unigram.npy"
    try:
        counts = np.load(f, allow_pickle=False, mmap_mode="r")  # a header claiming too much is refused, not allocated
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{f} is missing or corrupt ({str(e).splitlines()[0][:60]}); re-run hlm prepare") from None
    vocab = load_manifest(data_dir)["vocab_size"]
    if counts.shape != (vocab,) or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise UserError(f"{f} holds {counts.shape} {counts.dtype} values, not {vocab} token counts; re-run hlm prepare")
    return np.array(counts)
