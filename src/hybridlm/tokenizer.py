"""Subword tokenizers (the `tokenizers` library) with the special tokens every objective needs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from hybridlm.errors import UserError
from hybridlm.files import atomic_write_json, atomic_write_text, building, inside_hlm_folder

PAD, BOS, EOS, MASK, UNK = "<pad>", "<s>", "</s>", "<mask>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, MASK, UNK]  # ids 0..4 in every hybridlm tokenizer
TOKENIZER_FILE = "tokenizer.json"


MAX_VOCAB = 2**20  # ~1M: far past any LM vocabulary, and what the Rust trainer handles without aborting
MAX_LINE_BYTES = 4 * 2**20  # one paragraph per line: a longer line is a file without line breaks


def line_too_long(path, lineno: int) -> UserError:
    return UserError(
        f"{path}:{lineno}: a line of more than {MAX_LINE_BYTES // 2**20} MiB; hlm reads one paragraph per line: "
        "break the text into lines (e.g. fold -s -w 2000)"
    )


def check_text_files(paths, scan_utf8: bool = True) -> list[Path]:
    """Every input exists, is non-empty and (when scanned) UTF-8 with lines of at most 4 MiB;
    returns them as Paths."""
    checked = []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"input file not found: {p} (check the path)")
        if p.stat().st_size == 0:
            raise UserError(f"input file is empty: {p} (give a corpus with text in it)")
        if not scan_utf8:
            checked.append(p)
            continue
        with open(p, "rb") as f:
            for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES:
                    raise line_too_long(p, lineno)
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{p}:{lineno}: not UTF-8 (byte {e.start}); re-encode the file, e.g. iconv -f latin1 -t utf-8"
                    ) from None
        checked.append(p)
    return checked


HAN_LANGUAGES = ("zho", "cmn", "yue", "lzh", "wuu", "jpn")  # written (partly) in Han characters


def train_tokenizer(
    inputs,
    vocab_size: int,
    out_dir,
    kind: str = "bpe",
    min_frequency: int = 2,
    force: bool = False,
    languages=None,
    sample_languages: str = "",
    text_field: str = "text",
    seed: int = 0,
) -> Tokenizer:
    """Train a byte-level BPE (default) or WordPiece tokenizer and write OUT/tokenizer.json.

    With languages (--lang, or .jsonl / .parquet rows that carry one), sample_languages ("eng:1,nld:1,zho:1" or
    "uniform") samples documents so each language has its share of the training text in English-equivalent
    words, and a Han-script language isolates each Han character before the byte-level split (BERT's Chinese
    rule, the `tokenizers` library's Split): merges then form within a character, never across two."""
    if kind not in ("bpe", "wordpiece"):
        raise UserError(f"unknown tokenizer kind {kind!r} (choose bpe or wordpiece)")
    if vocab_size < len(SPECIAL_TOKENS) + 256 and kind == "bpe":
        raise UserError(f"--vocab-size {vocab_size} is too small for byte-level BPE (use at least 261)")
    if not len(SPECIAL_TOKENS) < vocab_size <= MAX_VOCAB:
        raise UserError(f"--vocab-size must lie in {len(SPECIAL_TOKENS) + 1} ... {MAX_VOCAB:,} (got {vocab_size})")
    if min_frequency < 1:
        raise UserError(f"--min-frequency must be at least 1 (got {min_frequency})")
    out = Path(out_dir)
    if found := inside_hlm_folder(out):  # its tokenizer is what its files were made with: never replaced
        raise UserError(
            f"--out {out} is inside the {found[1]} folder {found[0]}, whose tokenizer its files depend on "
            f"(--force or not); write the tokenizer to a new folder"
        )
    if (out / TOKENIZER_FILE).exists() and not force:
        raise UserError(f"{out / TOKENIZER_FILE} already exists; pass --force to replace it, or choose a new --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    # decided now, not after training: a new OUT that another training fills meanwhile is never replaced
    new = not out.exists() or not any(out.iterdir())
    from hybridlm.data import TABLE_SUFFIXES

    tables = any(Path(p).suffix.lower() in TABLE_SUFFIXES for p in inputs)
    files = check_text_files(inputs, scan_utf8=not tables)
    lines, found = None, []
    if languages or sample_languages or tables:
        lines, found = _sampled_lines(files, languages, sample_languages, text_field, seed)
    elif not any(line.strip() for f in files for line in open(f, encoding="utf-8")):
        raise UserError(f"no text in {', '.join(map(str, files))} (only blank lines); give a corpus with text in it")
    han = any(lang.lang in HAN_LANGUAGES or lang.script in ("hani", "hans", "hant") for lang in found if lang)
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        if han:  # the prefix space as a normaliser, so that it is added once, not before each isolated character
            tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Prepend(" ")])
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r"\p{Han}"), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
            )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
        )
    if lines is None:
        tok.train([str(f) for f in files], trainer)
    else:
        tok.train_from_iterator(lines, trainer)
    # Adding BOS is explicit in hybridlm (data packing and scorers add it), so no post-processor
    # template; byte-level offsets are still trimmed for readable offsets.
    if kind == "bpe":
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    _write_tokenizer_folder(tok, out, new)
    return tok


def _sampled_lines(files, languages, sample_languages: str, text_field: str, seed: int) -> tuple[list, list]:
    """The paragraphs to train on (documents kept at random so each language has its share of English-equivalent
    words: the scarcest language whole, the others subsampled), and the languages found."""
    from hybridlm.data import iter_sources, languages_of
    from hybridlm.mixture import parse_shares

    docs = list(iter_sources(files, languages_of(files, languages, "--lang"), text_field, None))
    if not any(doc for _, doc in docs):
        raise UserError(f"no text in {', '.join(map(str, files))}; give a corpus with text in it")
    found = sorted({lang for lang, _ in docs if lang is not None}, key=lambda lang: lang.tag)
    if not sample_languages:
        return [p for _, doc in docs for p in doc], found
    if any(lang is None for lang, _ in docs):
        raise UserError("--sample-languages needs every document's language: give --lang for every input")
    shares = parse_shares(sample_languages, [lang.tag for lang in found])
    words = {lang.tag: 0.0 for lang in found}
    for lang, doc in docs:
        words[lang.tag] += lang.english_words(sum(len(p.encode("utf-8")) for p in doc))
    total = min(words[tag] / share for tag, share in shares.items())  # the most text no language is short of
    keep = {tag: min(1.0, shares.get(tag, 0.0) * total / words[tag]) for tag in words}
    draws = np.random.default_rng(seed).random(len(docs))
    return [p for (lang, doc), u in zip(docs, draws) if u < keep[lang.tag] for p in doc], found


# what transformers needs besides tokenizer.json (tokenizer_config.json) to load an hlm tokenizer
HF_SPECIAL = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "mask_token": MASK, "unk_token": UNK}
HF_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    **HF_SPECIAL,
    "model_max_length": 1_000_000_000,
    "clean_up_tokenization_spaces": False,
}


def _write_tokenizer_folder(tok: Tokenizer, out: Path, new: bool) -> None:
    """OUT/tokenizer.json (and the files transformers reads), tokenizer.json last: a folder with
    it is complete. A new OUT (absent or empty when the command began) is built under a temporary name
    and renamed into place: a kill leaves nothing, and of two trainings into one new OUT the second
    fails instead of replacing the first's files."""

    def write(folder):
        write_hf_files(folder)
        atomic_write_text(folder / TOKENIZER_FILE, tok.to_str())

    if not new:
        write(out)
    else:
        with building(out) as tmp:
            write(tmp)


def write_hf_files(out: Path) -> None:
    """Small JSON files so `transformers.PreTrainedTokenizerFast.from_pretrained(out)` works."""
    atomic_write_json(out / "tokenizer_config.json", HF_CONFIG)
    atomic_write_json(out / "special_tokens_map.json", HF_SPECIAL)


def with_bos(tok: Tokenizer) -> Tokenizer:
    """The tokenizer as exports write it: <s> added before each text (as every training document
    began), so tools that tokenize with special tokens (the BabyLM pipeline, lm-eval) condition on
    it as hlm does."""
    template = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))]
    )
    tok = Tokenizer.from_str(tok.to_str())
    tok.post_processor = (
        processors.Sequence([tok.post_processor, template]) if tok.post_processor is not None else template
    )
    return tok


def hf_tokenizer(path):
    """The `transformers` tokenizer an export of this tokenizer loads as, built in memory: what the
    official BabyLM pipeline tokenizes with (`--convention official` on a run)."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise UserError("this needs transformers: pip install 'hybridlm[hf]'") from None
    config = {k: v for k, v in HF_CONFIG.items() if k != "tokenizer_class"}
    return PreTrainedTokenizerFast(tokenizer_object=with_bos(load_tokenizer(path)), **config)


def tokenizer_file(path) -> Path:
    """The tokenizer.json of a folder that holds one (a tokenizer folder, run or prepared data), or the file itself."""
    p = Path(path)
    return p / TOKENIZER_FILE if p.is_dir() else p


def load_tokenizer(path) -> Tokenizer:
    """Load from a directory holding tokenizer.json, or from the file itself."""
    p, f = Path(path), tokenizer_file(path)
    if not f.is_file():
        raise UserError(
            f"no tokenizer at {p} (train one with: hlm tokenizer train --input FILE --vocab-size N --out DIR)"
        )
    return tokenizer_from_json(f.read_bytes().decode("utf-8", errors="replace"), f)


def tokenizer_from_json(text: str, f) -> Tokenizer:
    """A tokenizer.json's text as a tokenizer holding hlm's special tokens at ids 0-4 (`f` names it in errors)."""
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # the Rust error is long; the cause is almost always a bad file
        raise UserError(f"cannot read tokenizer {f}: {str(e).splitlines()[0]}") from None
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise UserError(
                f"tokenizer {f} lacks special token {s} at id {i}; train one with hlm tokenizer train, or take a "
                "model's with hlm import (its run holds the tokenizer)"
            )
    return tok


def tokenizer_hash(path) -> str:
    return hashlib.sha256(tokenizer_file(path).read_bytes()).hexdigest()[:16]


def token_byte_lengths(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes of text each token stands for (special tokens: 0), for bits per byte measured on
    the tokens actually scored (as nanochat does). Byte-level BPE: one byte per symbol (a leading
    "Ġ" is the space before a word); WordPiece: the piece's bytes, plus the space before a word."""
    vocab = tok.get_vocab()
    out = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    byte_level = json.loads(tok.to_str()).get("pre_tokenizer", {}) or {}
    byte_level = "ByteLevel" in json.dumps(byte_level)
    for token, i in vocab.items():
        if i < len(SPECIAL_TOKENS) or token in SPECIAL_TOKENS:
            continue
        if byte_level:
            out[i] = len(token)
        elif token.startswith("##"):
            out[i] = len(token[2:].encode("utf-8"))
        else:
            out[i] = len(token.encode("utf-8")) + 1
    return out


def special_ids() -> dict[str, int]:
    return {"pad": 0, "bos": 1, "eos": 2, "mask": 3, "unk": 4}
