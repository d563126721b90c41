"""`hlm sft`: supervised fine-tuning on prompt/response pairs, for every objective that generates, through `hlm train`.

A pair becomes one row of seq_len + 1 tokens: <s>, the prompt, the response, </s>, then the rest of the canvas by
the end-of-text policy (`--eos`):
  pad   the rest is </s> too, each one a target (LLaDA's rule: a diffusion model learns where the answer ends
        by predicting the </s> that fill the canvas; a causal one learns to repeat </s>);
  stop  one </s>, then <pad>, which no objective scores or masks (the answer ends at its first </s>).
The rows are prepared into NEW_RUN/sft-data (a data folder like `hlm prepare`'s, of kind "sft"), and `hlm train`
runs on them from the source run's weights, its objective and shape: resume, checkpoints, DDP, the batch a pure
function of (seed, step) all come from there. Prompt tokens are stored as -(id + 1), so that no objective's
corruption touches them (every objective masks only ids >= 5); `Supervised` turns them back into ids after the
objective has corrupted the row and takes their targets out of the loss:
  causal     the loss on the response's tokens only (a mean over them);
  prefix     the prompt is the prefix (read bidirectionally, as generation reads it), the loss on the response;
  diffusion  the prompt is never masked, the response masked with its own t, the bound over the response tokens
             (LLaDA's SFT); block diffusion the same, block by block;
  masked     (and MNTP) the response's tokens are masked at the objective's rate, the prompt never;
  hybrid     its causal rows as causal, its MNTP rows as MNTP, each part keeping its share of the loss.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hybridlm.data import MANIFEST, PackedTokens
from hybridlm.errors import UserError
from hybridlm.files import atomic_write_json, building, read_jsonl
from hybridlm.tokenizer import BOS, EOS, PAD, TOKENIZER_FILE, load_tokenizer, tokenizer_hash

SFT_DATA = "sft-data"  # NEW_RUN/sft-data: the prepared pairs
EOS_POLICIES = ("pad", "stop")
GENERATING = ("causal", "prefix", "hybrid", "diffusion", "block_diffusion", "masked", "mntp")


# ---------------------------------------------------------------- the rows
def read_pairs(path) -> list[tuple[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--data {path} is not a file of prompt/response pairs (JSONL)")
    pairs = []
    for where, row in read_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str) or not row["response"]:
            raise UserError(f'{where}: each line needs a "prompt" and a non-empty "response" (strings)')
        pairs.append((row["prompt"], row["response"]))
    if not pairs:
        raise UserError(f"{path}: no pairs")
    return pairs


def encode_pairs(pairs, tokenizer, seq_len: int, eos: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows [N, seq_len + 1] int32, prompt ids stored as -(id + 1); words per row). The prompt and the response
    are tokenized apart (write the space before the response in it, as the harness's target delimiter)."""
    bos, end, pad = (tokenizer.token_to_id(t) for t in (BOS, EOS, PAD))
    rows = np.empty((len(pairs), seq_len + 1), dtype=np.int32)
    words = np.empty(len(pairs), dtype=np.int64)
    for i, (prompt, response) in enumerate(pairs):
        p = [bos] + tokenizer.encode(prompt, add_special_tokens=False).ids
        r = tokenizer.encode(response, add_special_tokens=False).ids + [end]
        if len(p) + len(r) > seq_len + 1:
            raise UserError(
                f"pair {i + 1} takes {len(p) + len(r)} tokens with <s> and </s>, more than --seq-len {seq_len} + 1; "
                "raise --seq-len or shorten it"
            )
        fill = [end if eos == "pad" else pad] * (seq_len + 1 - len(p) - len(r))
        rows[i] = [-(t + 1) for t in p] + r + fill
        words[i] = len(prompt.split()) + len(response.split())
    return rows, words


def prepare_sft(pairs_file, tokenizer_dir, out, seq_len: int, eos: str, valid_file=None, val_fraction=0.05,
                seed: int = 0) -> dict:  # fmt: skip
    """OUT (new) holding the pairs as rows: train.npy / val.npy, their words, the tokenizer and a manifest."""
    if eos not in EOS_POLICIES:
        raise UserError(f"unknown --eos {eos!r} (choose pad or stop)")
    tokenizer = load_tokenizer(tokenizer_dir)
    pairs = read_pairs(pairs_file)
    if valid_file:
        train, valid = pairs, read_pairs(valid_file)
    else:  # a seeded share held out, at least one pair, never all
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs))))
        if n_val < 1:
            raise UserError(f"{pairs_file}: one pair is too few to hold any out for validation; give --valid")
        train, valid = [pairs[i] for i in sorted(order[n_val:])], [pairs[i] for i in sorted(order[:n_val])]
    splits = {}
    with building(Path(out)) as tmp:
        for name, split in (("train", train), ("val", valid)):
            rows, words = encode_pairs(split, tokenizer, seq_len, eos)
            np.save(tmp / f"{name}.npy", rows, allow_pickle=False)
            np.save(tmp / f"{name}_words.npy", words, allow_pickle=False)
            splits[name] = {"rows": len(rows), "tokens": len(rows) * seq_len, "file": f"{name}.npy",
                            "words_file": f"{name}_words.npy", "words": int(words.sum())}  # fmt: skip
        (tmp / TOKENIZER_FILE).write_bytes((Path(tokenizer_dir) / TOKENIZER_FILE).read_bytes())
        manifest = {
            "kind": "sft",
            "vocab_size": tokenizer.get_vocab_size(),
            "bos_id": tokenizer.token_to_id(BOS),
            "tokenizer_hash": tokenizer_hash(tmp / TOKENIZER_FILE),
            "seq_len": seq_len,
            "eos": eos,
            "source": str(Path(pairs_file).resolve()),
            "splits": splits,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


def check_sft_manifest(m: dict, f: Path) -> None:
    def bad(what):
        raise UserError(f"{f}: {what}; prepare the pairs again (hlm sft)")

    vocab = m.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or not 5 < vocab <= 2**31:
        bad(f"vocab_size {vocab!r} is not a vocabulary size")
    if not isinstance(m.get("seq_len"), int) or not 0 < m["seq_len"] <= 2**20 or m.get("eos") not in EOS_POLICIES:
        bad("seq_len and eos are missing")
    if not isinstance(m.get("bos_id"), int) or not 0 <= m["bos_id"] < vocab:
        bad("bos_id is not a token id")
    splits = m.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(splits.get(k), dict) for k in ("train", "val")):
        bad("splits must hold train and val")
    for split in splits.values():
        names = [split.get("file"), split.get("words_file")]
        if not isinstance(split.get("rows"), int) or not all(
            isinstance(n, str) and n and Path(n).name == n and not n.startswith(".") for n in names
        ):
            bad("a split is not its rows' file names in the folder with their count")


class SupervisedRows(PackedTokens):
    """A prepared SFT split: one row per pair (a window of seq_len + 1 tokens), in the seeded order of windows."""

    def __init__(self, data_dir, split: str, seq_len: int, manifest: dict):
        self.manifest, self.seq_len = manifest, seq_len
        if seq_len != manifest["seq_len"]:
            raise UserError(
                f"{data_dir} holds rows of {manifest['seq_len']} tokens (+1): train with --seq-len "
                f"{manifest['seq_len']} and no sequence-length schedule"
            )
        meta = manifest["splits"][split]
        try:
            rows = np.load(Path(data_dir) / meta["file"], allow_pickle=False, mmap_mode="r")
            words = np.load(Path(data_dir) / meta["words_file"], allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            why = str(e).splitlines()[0][:60] if str(e) else type(e).__name__
            raise UserError(
                f"the {split} rows of {data_dir} are missing or damaged ({why}); run hlm sft again"
            ) from None
        vocab = manifest["vocab_size"]
        if rows.shape != (meta["rows"], seq_len + 1) or rows.dtype != np.int32 or words.shape != (meta["rows"],):
            raise UserError(f"the {split} rows of {data_dir} do not match its manifest; run hlm sft again")
        if len(rows) and (int(rows.max()) >= vocab or int(rows.min()) < -vocab):
            raise UserError(
                f"the {split} rows of {data_dir} hold ids beyond the vocabulary ({vocab}); run hlm sft again"
            )
        self.rows, self.has_words, self.languages, self.meta = rows, True, [], meta
        self.n_windows = len(rows)
        if not self.n_windows:
            raise UserError(f"the {split} split of {data_dir} has no pairs")
        self._window_words = np.asarray(words, dtype=np.int64)
        self._perm_cache = {}
        self.cum = np.array([0, self.n_windows])
        self.shard_language = [-1]

    def window(self, k: int) -> np.ndarray:
        return self.rows[k]


# ---------------------------------------------------------------- the objective
def _ids(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else torch.where(x < 0, -x - 1, x)


class Supervised:
    """An objective on prompt/response rows (see the module's doc): the inner objective corrupts the row, whose
    prompt tokens (stored negative) it never masks; their targets then leave the loss and the ids are restored.
    Everything else is the inner objective's."""

    def __init__(self, inner):
        if inner.name not in GENERATING:
            raise UserError(f"hlm sft fine-tunes the objectives that generate ({', '.join(GENERATING)}), "
                            f"not {inner.name}")  # fmt: skip
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> object:
        batch = self.inner.corrupt(ids, generator, fraction_done=fraction_done, train=train)
        prompt_target = batch.targets < 0
        weights = batch.loss_weights.masked_fill(prompt_target, 0.0)
        # the rows that scored prompt tokens (causal, prefix; a hybrid's causal rows) were a mean over their
        # tokens: now over the response's, with the mass those rows had (a hybrid's masked rows keep theirs)
        lost = batch.loss_weights.sum(1) != weights.sum(1)
        total, kept = batch.loss_weights[lost].sum(), weights[lost].sum()
        if kept > 0:
            weights = torch.where(lost.unsqueeze(1), weights * (total / kept), weights)
        attention = batch.attention
        if self.inner.capabilities.prompt_as_prefix:  # the prompt is the prefix, read both ways
            attention = replace(attention, prefix_lengths=(ids[:, :-1] < 0).sum(1))
        extra = {}
        if batch.extra_targets is not None:
            keep = (batch.extra_targets >= 0).float()
            extra = {"extra_targets": _ids(batch.extra_targets), "extra_weights": batch.extra_weights * keep}
        return replace(
            batch,
            input_ids=_ids(batch.input_ids),
            targets=_ids(batch.targets),
            loss_weights=weights,
            token_mask=batch.token_mask & ~prompt_target,
            attention=attention,
            **extra,
        )

    def validation_views(self) -> dict:
        return {name: (Supervised(view), w) for name, (view, w) in self.inner.validation_views().items()}


# ---------------------------------------------------------------- the command
def sft(run, pairs, out, eos: str = "pad", valid=None, seq_len: int = 0, **train_values) -> dict:
    """Fine-tune RUN on PAIRS into OUT (a new run): the pairs prepared into OUT/sft-data, then `hlm train` from RUN's
    weights with its objective, options and shape; `train_values`: any train config keys (max_steps, lr, ...)."""
    from hybridlm.files import check_out_folder
    from hybridlm.runs import RunDir
    from hybridlm.train import train

    source = RunDir(run).require()
    cfg = source.read_config()
    if cfg.objective not in GENERATING:
        raise UserError(f"hlm sft fine-tunes the objectives that generate ({', '.join(GENERATING)}); {run} is "
                        f"{cfg.objective}")  # fmt: skip
    out = Path(out)
    check_out_folder(out, "choose a new --out (hlm sft --resume continues a fine-tuning)")
    seq_len = seq_len or cfg.seq_len
    prepare_sft(pairs, source.tokenizer_path.parent, out / SFT_DATA, seq_len, eos, valid)
    values = {
        "objective": cfg.objective,
        **cfg.options,  # the objective's own options, as the source trained with them
        "preset": cfg.preset,
        "model": cfg.model,
        "document_mask": cfg.document_mask,
        **train_values,
        "data": str(out / SFT_DATA),
        "out": str(out),
        "seq_len": seq_len,
        "init_from": str(source.path),
    }
    return train(values)


def exact_match(run, pairs, max_new_tokens: int = 16, steps: int = 16, seed: int = 0) -> dict:
    """The share of `pairs` whose greedy answer (generated the objective's way, ended at </s>) equals the response,
    spaces at the ends aside; with the first few answers for reading."""
    from hybridlm.generate import generate_samples, sampling_of

    sampling = sampling_of(steps=steps, temperature=0.0)
    answers = [generate_samples(run, prompt, max_new_tokens, sampling, 1, seed).texts[0] for prompt, _ in pairs]
    right = [a.strip() == r.strip() for a, (_, r) in zip(answers, pairs)]
    examples = [{"prompt": p, "want": r, "got": a} for (p, r), a in list(zip(pairs, answers))[:5]]
    return {"exact_match": sum(right) / len(pairs), "n": len(pairs), "examples": examples}


def check_new_run_folder(path: Path) -> tuple:
    """The names a new run's folder may already hold: its own SFT rows."""
    return (SFT_DATA,) if (path / SFT_DATA / MANIFEST).is_file() else ()


def sft_manifest_of(data_dir) -> dict | None:
    f = Path(data_dir) / MANIFEST
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("kind") == "sft" else None
