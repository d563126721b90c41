"""Corpus preparation (text -> token shards as numpy memmaps) and the packed, seeded data order.

Layout of a prepared directory:
    manifest.json        token counts, dtype, shards, documents, bytes/words, tokenizer hash
    tokenizer.json       the tokenizer the shards were made with
    train_000.bin ...    token ids, every document starting with <s> (which marks document boundaries)
    train_000.words ...  uint8 per token: how many whitespace-separated words (BabyLM's count) begin in
                         it, so the words of any window, document or split are an exact sum
    train_nld_000.bin    with languages (--lang, or the rows' language field): a shard sequence per language,
    train_nld_000.words  so a window is one language, and uint16 per token: the UTF-8 bytes of the text it
                         covers; English-equivalent words are bytes x the shard's words_per_unit
                         (1 / (5.43 x byte premium), BabyLM 2026's multilingual count; languages.py)
    val_000.bin          held-out split (from --valid files, or the corpus tail)
    unigram.npy          token counts of the train split (frequency-informed masking uses it)
"""

from __future__ import annotations

import functools
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
from hybridlm.languages import Language, language
from hybridlm.tokenizer import (
    BOS,
    MAX_LINE_BYTES,
    TOKENIZER_FILE,
    UNK,
    check_text_files,
    line_too_long,
    load_tokenizer,
    tokenizer_file,
    tokenizer_from_json,
    tokenizer_hash,
)

MANIFEST = "manifest.json"
MAX_UNKNOWN = 0.1  # a language whose tokens are more <unk> than this is refused: the tokenizer does not know it
_LINES_PER_BATCH = 8192


TABLE_SUFFIXES = (".jsonl", ".parquet")  # a document a row; anything else is text


def _iter_documents(files, progress: tqdm | None):
    """Yield documents as lists of paragraph strings; a blank line ends a document."""
    for path in files:
        if Path(path).suffix.lower() in TABLE_SUFFIXES:
            raise UserError(f"{path}: a table of documents where plain text is read; give a .txt file")
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


def _paragraphs(text, where: str) -> list[str]:
    """A row's text as hlm's paragraphs: its lines, stripped, blank ones dropped."""
    if not isinstance(text, str):
        raise UserError(f"{where}: the text field holds {type(text).__name__}, not text; check --text-field")
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        if len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise line_too_long(where, 0)
    return [line for line in lines if line]


def _iter_rows(path: Path, text_field: str, progress: tqdm | None):
    """Yield (paragraphs, language, script) of each row of a JSONL or Parquet file (BabyBabelLM's format: a
    document a row, `language` and `script` beside the text where present)."""
    if path.suffix.lower() == ".jsonl":
        with open(path, "rb") as f:
            for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if progress is not None:
                    progress.update(len(raw))
                if len(raw) > MAX_LINE_BYTES:
                    raise line_too_long(path, lineno)
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise UserError(f"{path}:{lineno}: not a JSON object; give JSON Lines, a document a line") from None
                if not isinstance(row, dict) or text_field not in row:
                    raise UserError(f"{path}:{lineno}: no {text_field!r} field; name the text field with --text-field")
                yield _paragraphs(row[text_field], f"{path}:{lineno}"), row.get("language"), row.get("script")
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow: pip install 'hybridlm[multilingual]'") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's errors for a file that is not Parquet have no common base
        raise UserError(f"{path}: not a Parquet file ({str(e).splitlines()[0][:80]})") from None
    names = table.schema_arrow.names
    if text_field not in names:
        raise UserError(f"{path}: no {text_field!r} column (it has {', '.join(names[:8])}); name it with --text-field")
    columns = [c for c in (text_field, "language", "script") if c in names]
    row_index = 0
    for batch in table.iter_batches(columns=columns, batch_size=4096):
        data = batch.to_pydict()
        langs, scripts = data.get("language"), data.get("script")
        for i, text in enumerate(data[text_field]):
            row_index += 1
            if progress is not None and isinstance(text, str):
                progress.update(len(text))
            yield (
                _paragraphs(text, f"{path}: row {row_index}"),
                langs[i] if langs else None,
                scripts[i] if scripts else None,
            )


def iter_sources(files, languages, text_field: str, progress: tqdm | None):
    """Yield (language or None, paragraphs) of every document of `files`: a row's own language where it has
    one, else its file's (`languages`: one per file, or None)."""
    for k, path in enumerate(files):
        given = languages[k] if languages else None
        if Path(path).suffix.lower() in TABLE_SUFFIXES:
            for doc, lang, script in _iter_rows(Path(path), text_field, progress):
                if doc:
                    tag = lang if isinstance(lang, str) and lang.strip() else None
                    yield (language(tag, script if isinstance(script, str) else None) if tag else given), doc
        else:
            for doc in _iter_documents([path], progress):
                yield given, doc


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
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None) as bar:
        docs = ((None, doc) for doc in _iter_documents(files, bar))
        return tokenize_documents(docs, lambda key, lines: encode_batch(lines), bos, dtype, bos_value).get(
            None, _Split(tokens=[], doc_starts=[], per_token=[])
        )


def tokenize_documents(docs, encode_batch, bos: int, dtype, bos_value=True) -> dict:
    """Documents (key, paragraphs) as a _Split per key (a language, or None), each document's tokens starting
    with `bos`; encode_batch(key, lines) as for tokenize_files."""
    splits: dict = {}
    pending: dict = {}  # key -> (lines, lines per document)

    def flush(key):
        split = splits.setdefault(key, _Split(tokens=[], doc_starts=[], per_token=[]))
        pending_lines, pending_doc_sizes = pending.pop(key)
        encs = encode_batch(key, pending_lines)
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

    counted: dict = {}  # key -> [bytes, words] of documents read, kept until their split exists
    for key, doc in docs:
        sizes = counted.setdefault(key, [0, 0])
        sizes[0] += sum(len(p.encode("utf-8")) for p in doc) + len(doc) - 1
        sizes[1] += sum(len(p.split()) for p in doc)
        lines, doc_sizes = pending.setdefault(key, ([], []))
        lines.extend(doc)
        doc_sizes.append(len(doc))
        if len(lines) >= _LINES_PER_BATCH:
            flush(key)
    for key in list(pending):
        flush(key)
    for key, (n_bytes, n_words) in counted.items():
        splits[key].n_bytes, splits[key].n_words = n_bytes, n_words
    return splits


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


def units_dtype(by_bytes: bool):
    """The dtype of a words file: whitespace words per token (uint8), or with a language bytes per token (uint16)."""
    return np.uint16 if by_bytes else np.uint8


def bytes_per_token(text: str, offsets) -> np.ndarray:
    """uint16 per token: the UTF-8 bytes of `text` it covers. Token i covers the characters from the previous
    tokens' furthest end to its own (the first from the start, the last to the end), so the bytes of every
    character are counted exactly once even where byte-level tokens share a character's span."""
    counts = np.zeros(len(offsets), dtype=np.int64)
    if len(offsets):
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        char_starts = np.append(np.flatnonzero((raw & 0xC0) != 0x80), len(raw))  # byte offset of each character
        ends = np.maximum.accumulate(np.fromiter((e for _, e in offsets), dtype=np.int64, count=len(offsets)))
        ends[-1] = len(char_starts) - 1
        edges = char_starts[np.minimum(ends, len(char_starts) - 1)]
        counts = np.diff(edges, prepend=0)
    if counts.size and counts.max() > np.iinfo(np.uint16).max:
        raise UserError("a token covers more than 65,535 bytes of text; train a tokenizer on this corpus")
    return counts.astype(np.uint16)


def _write_split(
    out: Path, name: str, arr: np.ndarray, shard_tokens: int, words: np.ndarray | None = None, lang=None
) -> list[dict]:
    """Shards of a split (of one language, with `lang`: its words files then hold bytes per token)."""
    shards = []
    stem = f"{name}_{lang.tag}" if lang is not None else name
    for k, start in enumerate(range(0, len(arr), shard_tokens)):
        fname = f"{stem}_{k:03d}.bin"
        atomic_write_bytes(out / fname, arr[start : start + shard_tokens].tobytes())
        shard = {"file": fname, "tokens": int(min(shard_tokens, len(arr) - start))}
        if words is not None:
            shard["words_file"] = f"{stem}_{k:03d}.words"
            units = words[start : start + shard_tokens].astype(units_dtype(lang is not None))
            atomic_write_bytes(out / shard["words_file"], units.tobytes())
        if lang is not None:
            shard.update(lang=lang.tag, words_unit="bytes", words_per_unit=lang.words_per_byte)
        shards.append(shard)
    return shards


def languages_of(files, tags, flag: str) -> list[Language] | None:
    """A Language per input file from --lang (one per file, or one for all), or None without --lang."""
    if not tags:
        return None
    if len(tags) not in (1, len(files)):
        raise UserError(f"{flag} takes one language, or one per input file ({len(files)}); got {len(tags)}")
    langs = [language(t) for t in tags]
    return langs * len(files) if len(langs) == 1 else langs


def _hold_out(train: _Split, valid: _Split | None, bos: int, dtype, val_fraction: float, words_of) -> tuple:
    """(train ids, train units, val ids, val units, train meta, val meta) of one stream: the --valid documents,
    or the stream's tail cut at a document start near the cut. words_of(sum of the per-token units) -> words."""
    train_arr, train_units = np.concatenate(train.tokens), np.concatenate(train.per_token)
    if valid is not None:
        val_arr, val_units = np.concatenate(valid.tokens), np.concatenate(valid.per_token)
        val_meta = {
            "documents": valid.n_docs,
            "bytes": valid.n_bytes,
            "words": words_of(val_units.sum()),
            "source": "valid files",
        }
        train_meta = {
            "documents": train.n_docs,
            "bytes": train.n_bytes,
            "words": words_of(train_units.sum()),
        }
    else:
        want = max(int(len(train_arr) * val_fraction), min(2048, len(train_arr) // 10))
        cut = len(train_arr) - want
        starts = np.asarray(train.doc_starts)
        near = starts[(starts >= cut - want) & (starts <= cut + want // 2)]
        if len(near):
            cut = int(near[np.argmin(np.abs(near - cut))])
        val_arr, val_units = train_arr[cut:], train_units[cut:]
        if val_arr[0] != bos:
            val_arr = np.concatenate([np.array([bos], dtype=dtype), val_arr])
            val_units = np.concatenate([np.zeros(1, dtype=val_units.dtype), val_units])
        train_arr, train_units = train_arr[:cut], train_units[:cut]
        frac = len(val_arr) / (len(train_arr) + len(val_arr))
        # Bytes are apportioned by token share (bits per byte needs only the ratio); words are exact.
        val_meta = {
            "documents": int((starts >= cut).sum()) or 1,
            "bytes": int(round(train.n_bytes * frac)),
            "words": words_of(val_units.sum()),
            "source": f"tail of the corpus ({frac:.2%} of tokens)",
        }
        train_meta = {
            "documents": int((starts < cut).sum()),
            "bytes": train.n_bytes - val_meta["bytes"],
            "words": words_of(train_units.sum()),
        }
    if len(train_arr) < 2 or len(val_arr) < 2:
        raise UserError("the corpus is too small to split into train and validation; give more text or --valid FILE")
    return train_arr, train_units, val_arr, val_units, train_meta, val_meta


def prepare(
    inputs,
    tokenizer_dir,
    out_dir,
    valid_inputs=None,
    val_fraction: float = 0.005,
    shard_tokens: int = 100_000_000,
    force: bool = False,
    languages=None,
    valid_languages=None,
    text_field: str = "text",
) -> dict:
    """Tokenize text (or JSONL / Parquet rows) into shards; returns the manifest.

    Without languages the corpus is English counted by whitespace (BabyLM's Strict tracks). With --lang (or rows
    that carry a `language`), every language gets its own shard sequence and train/validation split, and words
    are English-equivalent words by byte premium (BabyLM 2026's multilingual track; languages.py)."""
    files = check_text_files(inputs, scan_utf8=False)  # UTF-8 is checked while streaming
    valid_files = check_text_files(valid_inputs, scan_utf8=False) if valid_inputs else None
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must lie in (0, 1) (got {val_fraction})")
    file_langs = languages_of(files, languages, "--lang")
    valid_langs = languages_of(valid_files, valid_languages or languages, "--valid-lang") if valid_files else None
    from hybridlm.hf_import import hlm_tokenizer_json, is_hf_model_folder

    if is_hf_model_folder(tokenizer_dir):  # a transformers model: its tokenizer as hlm import maps it
        text = hlm_tokenizer_json(tokenizer_dir)
        tokenizer, tokenizer_json = tokenizer_from_json(text, tokenizer_dir), text.encode("utf-8")
    else:  # the file itself, copied beside the data byte for byte
        tokenizer, tokenizer_json = load_tokenizer(tokenizer_dir), tokenizer_file(tokenizer_dir).read_bytes()
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

            # the tokenizers library encodes a batch on all cores (Rust threads); the character offsets give each
            # token the words that begin in it, or (with a language) the bytes it covers: words seen are exact
            def encode_batch(lang, lines):
                count = words_per_token if lang is None else bytes_per_token
                encs = tokenizer.encode_batch(lines, add_special_tokens=False)
                return [(e.ids, count(line, e.offsets)) for line, e in zip(lines, encs)]

            def tokenize(paths, langs, desc):
                with tqdm(total=sum(os.path.getsize(f) for f in paths), unit="B", unit_scale=True, desc=desc,
                          disable=None) as bar:  # fmt: skip
                    splits = tokenize_documents(iter_sources(paths, langs, text_field, bar), encode_batch, bos, dtype,
                                                bos_value=np.uint8(0))  # fmt: skip
                if None in splits and len(splits) > 1:
                    raise UserError(
                        "some documents have no language (no --lang for their file, no language field in their row) "
                        "and others have one: give --lang for every input"
                    )
                return {k: v for k, v in splits.items() if v.n_tokens}

            bos, unk = tokenizer.token_to_id(BOS), tokenizer.token_to_id(UNK)
            train_splits = tokenize(files, file_langs, "tokenize train")
            if not train_splits:
                raise UserError(f"no text found in {', '.join(map(str, files))} (the corpus has only blank lines)")
            valid_splits = tokenize(valid_files, valid_langs, "tokenize valid") if valid_files else {}
            if valid_files and not valid_splits:
                raise UserError("the --valid files hold no text")
            if set(valid_splits) - set(train_splits):
                raise UserError("the --valid files hold a language the training files do not; check --valid-lang")

            streams = sorted(train_splits, key=lambda lang: "" if lang is None else lang.tag)
            splits_meta: dict = {"train": {"tokens": 0}, "val": {"tokens": 0}}
            shards: dict = {"train": [], "val": []}
            unigram = np.zeros(vocab, dtype=np.int64)
            for lang in streams:

                def words_of(units, lang=lang):
                    return int(units) if lang is None else lang.english_words(int(units))

                parts = _hold_out(train_splits[lang], valid_splits.get(lang), bos, dtype, val_fraction, words_of)
                train_arr, train_units, val_arr, val_units, train_meta, val_meta = parts
                unknown = float(np.mean(train_arr == unk)) if lang is not None and unk is not None else 0.0
                if unknown > MAX_UNKNOWN:  # a WordPiece vocabulary without this language
                    raise UserError(
                        f"{unknown:.0%} of the {lang.tag} tokens are {UNK}: the tokenizer cannot encode this language; "
                        f"train one on it (hlm tokenizer train --input ... --lang ...)"
                    )
                unigram += np.bincount(train_arr, minlength=vocab).astype(np.int64)
                for name, arr, units, meta in (("train", train_arr, train_units, train_meta),
                                               ("val", val_arr, val_units, val_meta)):  # fmt: skip
                    split = splits_meta[name]
                    shards[name] += _write_split(out, name, arr, shard_tokens, units, lang)
                    split["tokens"] += int(len(arr))
                    if lang is None:  # English by whitespace: one stream, as before languages existed
                        split.update(meta)
                        continue
                    for key in ("documents", "bytes", "words"):
                        split[key] = split.get(key, 0) + meta[key]
                    split.setdefault("languages", {})[lang.tag] = {
                        "tokens": int(len(arr)),
                        **meta,
                        "byte_premium": lang.byte_premium,
                    }
                    if name == "val":
                        split["source"] = "valid files" if valid_splits else "tail of each language"

            buf = io.BytesIO()
            np.save(buf, unigram)
            atomic_write_bytes(out / "unigram.npy", buf.getvalue())
            atomic_write_bytes(out / TOKENIZER_FILE, tokenizer_json)
            manifest = {
                "format": "hybridlm-tokens-v1",
                "dtype": np.dtype(dtype).name,
                "vocab_size": vocab,
                "tokenizer_hash": tokenizer_hash(out / TOKENIZER_FILE),
                "bos_id": bos,
                "splits": {name: {**m, "shards": shards[name]} for name, m in splits_meta.items()},
                "inputs": [str(f) for f in files],
            }
            if streams != [None]:
                manifest["words"] = "english-equivalent: UTF-8 bytes / (5.43 x byte premium), BabyLM 2026"
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
    if isinstance(manifest, dict) and manifest.get("kind") == "sft":  # prompt/response rows (hlm sft)
        from hybridlm.sft import check_sft_manifest

        check_sft_manifest(manifest, f)
    else:
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
            if isinstance(sh, dict) and "lang" in sh:  # a language's shard: bytes per token, a words factor
                factor = sh.get("words_per_unit")
                if (
                    not isinstance(sh["lang"], str)
                    or sh.get("words_unit") != "bytes"
                    or not (isinstance(factor, float) and 0 < factor < 1)
                ):
                    bad(f"a shard of split {name!r} has a language but no byte count and words factor")
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
        # with languages: each shard is one language's; its words file holds bytes, words = bytes x its factor
        self.languages = sorted({sh["lang"] for sh in meta["shards"] if "lang" in sh})
        self.shard_language = [self.languages.index(sh["lang"]) if "lang" in sh else -1 for sh in meta["shards"]]
        self.words_per_unit = [sh.get("words_per_unit") for sh in meta["shards"]]
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
                size = sh["tokens"] * np.dtype(units_dtype("lang" in sh)).itemsize
                if not wpath.is_file() or wpath.stat().st_size != size:
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
            for f, n, factor in zip(self.word_files, np.diff(self.cum), self.words_per_unit):
                words = np.memmap(f, dtype=units_dtype(factor is not None), mode="r")
                sums.append(words[: n * self.seq_len].reshape(n, self.seq_len).sum(1, dtype=np.int64))
                sums[-1] = sums[-1] if factor is None else sums[-1] * factor
            self._window_words = np.concatenate(sums)
        return self._window_words

    @functools.cached_property
    def window_language(self) -> np.ndarray:
        """The language (an index into self.languages; -1 without languages) of each window."""
        return np.repeat(np.asarray(self.shard_language, dtype=np.int64), np.diff(self.cum))

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

    def words(self, ks) -> int | float:
        """Words in windows `ks` (0 when the data has no per-token word counts): whitespace words, or with
        languages English-equivalent words (a float: bytes / (5.43 x byte premium))."""
        if not self.has_words:
            return 0
        total = self.window_words[np.asarray(ks, dtype=np.int64)].sum()
        return float(total) if self.languages else int(total)

    def language_words(self, ks) -> dict[str, float]:
        """English-equivalent words of windows `ks` by language ({} without languages)."""
        if not self.languages or not self.has_words:
            return {}
        ks = np.asarray(ks, dtype=np.int64)
        per = np.bincount(self.window_language[ks], weights=self.window_words[ks], minlength=len(self.languages))
        return {lang: float(w) for lang, w in zip(self.languages, per)}

    def eval_batches(self, batch_size: int, max_batches: int):
        """Validation windows in file order (no shuffling), at most max_batches batches; with languages, the
        languages interleaved in proportion to their windows, so that any prefix measures every language."""
        n = min(self.n_windows, batch_size * max_batches)
        order = np.arange(self.n_windows)
        if len(self.languages) > 1:
            lang = self.window_language
            counts = np.bincount(lang, minlength=len(self.languages))
            grouped = np.argsort(lang, kind="stable")
            rank = np.empty_like(order)  # a window's place among its language's windows
            rank[grouped] = order - np.repeat(np.cumsum(counts) - counts, counts)
            order = order[np.argsort((rank + 0.5) / counts[lang], kind="stable")]
        for start in range(0, n, batch_size):
            yield self.windows(order[start : min(n, start + batch_size)])


def open_split(data_dir, split: str, seq_len: int) -> PackedTokens:
    """A prepared split as windows: packed text (hlm prepare), or one prompt/response row per window (hlm sft)."""
    manifest = load_manifest(data_dir)
    if manifest.get("kind") == "sft":
        from hybridlm.sft import SupervisedRows

        return SupervisedRows(data_dir, split, seq_len, manifest)
    return PackedTokens(data_dir, split, seq_len)


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
