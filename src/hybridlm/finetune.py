"""`hlm finetune`: sequence classification (the BabyLM (Super)GLUE tasks) for a run or a local HF model.

The official BabyLM 2025 hyperparameters are the defaults: lr 3e-5, batch 32 (16 for BoolQ and
MultiRC), 10 epochs (30 for WSC), max length 512, AdamW with weight decay 0.01, 6% linear warmup,
cosine decay to 0.1x, dropout 0.1, seed 42, and the best epoch chosen on the validation file by
accuracy (F1 for MRPC and QQP); that epoch's labels for the validation file are the predictions a
submission holds (`predictions`, the first seed's; `hlm finetune --predictions DIR`). Small-data
fine-tuning is noisy, so `seeds` > 1 reports mean ± s.d.
Like training, it runs under bf16 autocast where the hardware has it (precision "fp32" to turn it
off), with the loss in fp32, and batches grouped by length.

Pooling follows the attention the objective trained with: a model whose attention is causal reads
the last real token (the only position that has seen the whole input, as GPT-style classifiers
do); a bidirectional or mixed one (masked, diffusion, the hybrid) takes the mean over the real
tokens, which every position contributes to and which does not depend on <s> having been trained
as a summary. Segments of a pair are joined by </s>; dropout is applied to the pooled vector.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from hybridlm.errors import UserError
from hybridlm.files import read_jsonl
from hybridlm.hf import load_hf_model, load_hf_tokenizer
from hybridlm.model import AttentionSpec
from hybridlm.objectives import Attention
from hybridlm.results import stamp
from hybridlm.runtime import autocast_for, warmup_cosine

# task -> (text fields, number of labels, selection metric)
TASKS = {
    "rte": (("sentence1", "sentence2"), 2, "accuracy"),
    "mrpc": (("sentence1", "sentence2"), 2, "f1"),
    "qqp": (("question1", "question2"), 2, "f1"),
    "mnli": (("premise", "hypothesis"), 3, "accuracy"),
    "wsc": (("text", "span2_text", "span1_text"), 2, "accuracy"),
    "boolq": (("question", "passage"), 2, "accuracy"),
    "multirc": (("paragraph", "question", "answer"), 2, "accuracy"),
    "grammar": (("sentence",), 2, "accuracy"),  # the demo's grammaticality task
}


@dataclass
class FinetuneConfig:
    """The BabyLM 2025 fine-tuning recipe; every field is an `hlm finetune` flag (its help: `say`)."""

    lr: float = field(default=3e-5, metadata={"say": "3e-5"})
    batch_size: int = field(default=0, metadata={"say": "32; 16 for boolq, multirc"})  # 0: the official one
    epochs: int = field(default=0, metadata={"say": "10; 30 for wsc"})  # 0: the official number
    max_length: int = field(default=512, metadata={"say": "512"})
    weight_decay: float = field(default=0.01, metadata={"say": "0.01"})
    warmup_fraction: float = field(default=0.06, metadata={"say": "0.06"})
    min_lr_ratio: float = field(default=0.1, metadata={"say": "0.1 (cosine decay to it)"})
    dropout: float = field(default=0.1, metadata={"say": "0.1"})
    seed: int = field(default=42, metadata={"say": "42"})
    seeds: int = field(default=1, metadata={"say": "1: mean ± s.d. over this many seeds"})
    # auto: bf16 autocast where the hardware has it (as training), else fp32
    precision: str = field(default="auto", metadata={"say": "auto (bf16 autocast where supported) | bf16 | fp32"})

    def resolved(self, task: str) -> FinetuneConfig:
        c = FinetuneConfig(**asdict(self))
        c.batch_size = c.batch_size or (16 if task in ("boolq", "multirc") else 32)
        c.epochs = c.epochs or (30 if task == "wsc" else 10)
        for name in ("lr", "batch_size", "epochs", "max_length", "seeds"):
            if not getattr(c, name) > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive (got {getattr(c, name)})")
        if c.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"unknown precision {c.precision!r} (choose auto, bf16 or fp32)")
        if not (0 <= c.dropout < 1 and 0 <= c.warmup_fraction < 1 and 0 <= c.min_lr_ratio <= 1 and c.weight_decay >= 0):
            raise UserError(
                "--dropout and --warmup-fraction must lie in [0, 1), --min-lr-ratio in [0, 1], --weight-decay >= 0"
            )
        return c


# ---------------------------------------------------------------- data
def load_split(path: Path, task: str) -> list[tuple[list[str], int]]:
    fields, n_labels, _ = TASKS[task]
    if not path.is_file():
        raise UserError(f"fine-tuning file not found: {path}")
    out = []
    for where, row in read_jsonl(path):
        missing = [k for k in fields if not isinstance(row.get(k), str)]
        if missing:
            raise UserError(f"{where}: missing text field {missing[0]!r} for task {task}")
        label = row.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_labels:
            raise UserError(f"{where}: label {label!r} is not an integer in 0..{n_labels - 1}")
        out.append(([row[k] for k in fields], label))
    if not out:
        raise UserError(f"{path}: no examples")
    return out


def find_files(data_dir, task: str) -> tuple[Path, Path]:
    root = Path(data_dir)
    for folder in (root, root / "glue_filtered", root / "full_eval" / "glue_filtered"):
        train, valid = folder / f"{task}.train.jsonl", folder / f"{task}.valid.jsonl"
        if train.is_file() and valid.is_file():
            return train, valid
    raise UserError(
        f"no {task}.train.jsonl and {task}.valid.jsonl under {root} (e.g. "
        "../shared/data/babylm-2025/full_eval/glue_filtered)"
    )


# ---------------------------------------------------------------- models
class RunClassifier(nn.Module):
    """An hlm transformer with a classification head on a pooled representation."""

    def __init__(self, run, n_labels: int, dropout: float):
        super().__init__()
        self.body, self.tok = run.model, run.tokenizer
        self.causal = run.objective.capabilities.attention is Attention.CAUSAL
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.body.cfg.d_model, n_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.bos, self.sep = self.tok.token_to_id("<s>"), self.tok.token_to_id("</s>")
        self.max_len = self.body.cfg.max_seq_len

    def encode(self, texts: list[str], max_length: int) -> list[int]:
        ids = [self.bos]
        for k, t in enumerate(texts):
            ids += ([self.sep] if k else []) + self.tok.encode(t, add_special_tokens=False).ids
        return ids[: min(max_length, self.max_len)]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        real = pos[None] < lengths[:, None]
        h = self.body(ids, AttentionSpec(self.causal, None if self.causal else (~real).int()))
        if self.causal:
            pooled = h[torch.arange(len(ids), device=ids.device), lengths - 1]
        else:
            pooled = (h * real[..., None]).sum(1) / lengths[:, None]
        return self.head(self.dropout(pooled.float()))


# a language model's head that a sequence classifier replaces with its own (new, or left unused)
CLASSIFIER_HEADS = ("score.", "classifier.", "pre_classifier.", "lm_head.", "cls.", "head.", "pooler.")


class HFClassifier(nn.Module):
    def __init__(self, path, n_labels: int, dropout: float, trust_remote_code: bool = False):
        super().__init__()
        _, self.model = load_hf_model(
            path, "AutoModelForSequenceClassification", "a sequence classifier", trust_remote_code, num_labels=n_labels,
            new_head=CLASSIFIER_HEADS,
        )  # fmt: skip
        self.tok = load_hf_tokenizer(path, trust_remote_code)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = (
                self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
            )
        self.max_len = getattr(self.model.config, "max_position_embeddings", 512)

    def encode(self, texts, max_length):
        sep = self.tok.sep_token or self.tok.eos_token or " "
        return self.tok(f" {sep} ".join(texts), truncation=True, max_length=min(max_length, self.max_len))["input_ids"]

    def forward(self, ids, lengths):
        attn = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
        return self.model(input_ids=ids, attention_mask=attn).logits


# ---------------------------------------------------------------- training
def majority_baseline(
    train_labels: list[int], valid_labels: list[int], n_classes: int, metric: str
) -> tuple[int, float]:
    """(class, score): the baseline a classifier must beat — always the training set's most frequent
    class, scored on the validation labels with the task's metric (for MRPC and QQP, the F1 of
    always answering "paraphrase" / "duplicate" when that is the more frequent class)."""
    majority_class = max(range(n_classes), key=train_labels.count)
    return majority_class, _metric([majority_class] * len(valid_labels), valid_labels, metric)


def _metric(pred: list[int], gold: list[int], name: str) -> float:
    if name == "f1":
        tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
        fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
        fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
        return 2 * tp / max(1, 2 * tp + fp + fn)
    return sum(p == g for p, g in zip(pred, gold)) / len(gold)


def _batches(examples, size, generator=None):
    """Padded batches. Training (a generator given): shuffled, then grouped by length within windows of
    50 batches and the batches shuffled again (as Hugging Face's group_by_length), so a batch is not
    padded to one long outlier; evaluation: in order."""
    order = list(range(len(examples)))
    if generator is not None:
        order = torch.randperm(len(examples), generator=generator).tolist()
        window = 50 * size
        order = [
            j
            for w in range(0, len(order), window)
            for j in sorted(order[w : w + window], key=lambda j: len(examples[j][0]))
        ]
        chunks = [order[i : i + size] for i in range(0, len(order), size)]
        order = [j for k in torch.randperm(len(chunks), generator=generator).tolist() for j in chunks[k]]
    for i in range(0, len(order), size):
        chunk = [examples[j] for j in order[i : i + size]]
        lengths = torch.tensor([len(ids) for ids, _ in chunk])
        ids = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for r, (x, _) in enumerate(chunk):
            ids[r, : len(x)] = torch.tensor(x)
        yield ids, lengths, torch.tensor([y for _, y in chunk])


@torch.no_grad()
def _predict(model, examples, device, amp, size=64) -> list[int]:
    model.eval()
    out = []
    for ids, lengths, _ in _batches(examples, size):
        with amp:
            out += model(ids.to(device), lengths.to(device)).float().argmax(-1).tolist()
    model.train()
    return out


def finetune_once(
    make_model, task: str, train, valid, cfg: FinetuneConfig, seed: int, device="cpu", progress=True
) -> dict:
    _, n_labels, metric = TASKS[task]
    torch.manual_seed(seed)
    model = make_model(n_labels).to(device)
    train_x = [(model.encode(t, cfg.max_length), y) for t, y in train]
    valid_x = [(model.encode(t, cfg.max_length), y) for t, y in valid]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(train_x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, steps, 1.0, cfg.warmup_fraction, cfg.min_lr_ratio)
    )
    amp, _ = autocast_for(cfg.precision, torch.device(device))
    g = torch.Generator().manual_seed(seed)
    history, best = [], None
    bar = tqdm(total=steps, desc=f"{task} seed {seed}", disable=not progress or None, dynamic_ncols=True)
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for ids, lengths, labels in _batches(train_x, cfg.batch_size, g):
            with amp:
                logits = model(ids.to(device), lengths.to(device))
            loss = nn.functional.cross_entropy(logits.float(), labels.to(device))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
        predictions = _predict(model, valid_x, device, amp)
        value = _metric(predictions, [y for _, y in valid_x], metric)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), metric: value})
        if best is None or value > best[metric]:
            best, best_predictions = history[-1], predictions
        bar.set_postfix(epoch=epoch, loss=f"{history[-1]['train_loss']:.3f}", **{metric: f"{value:.3f}"})
    bar.close()
    return {
        "seed": seed,
        "best_epoch": best["epoch"],
        "value": best[metric],
        "history": history,
        "predictions": best_predictions,
    }


def finetune(make_model, task: str, data_dir, cfg: FinetuneConfig, device="cpu", progress=True, name: str = "") -> dict:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} (choose from: {', '.join(TASKS)})")
    cfg = cfg.resolved(task)
    train_file, valid_file = find_files(data_dir, task)
    train, valid = load_split(train_file, task), load_split(valid_file, task)
    runs = [
        finetune_once(make_model, task, train, valid, cfg, cfg.seed + k, device, progress) for k in range(cfg.seeds)
    ]
    values = [r["value"] for r in runs]
    # the best epoch's labels for the validation file, as the pipeline predicts with its kept best model (first seed)
    predictions = [r.pop("predictions") for r in runs][0]
    _, _, metric = TASKS[task]
    majority_class, majority = majority_baseline([y for _, y in train], [y for _, y in valid], TASKS[task][1], metric)
    return stamp(
        "finetune",
        {
            "model": name,
            "task": task,
            "metric": metric,
            "value": statistics.mean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n_train": len(train),
            "n_valid": len(valid),
            "majority_baseline": majority,
            "majority_class": majority_class,
            "config": asdict(cfg),
            "seeds": runs,
            "predictions": predictions,
        },
    )
