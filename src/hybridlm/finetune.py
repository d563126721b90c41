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

`--recipe babylm-2026` is the 2026 multilingual track's (babylm-eval `multilingual/finetune/`, commit
45fe2c1): per language, arc, belebele, bmlama, include, mnli, sib200, truthfulqa and xnli; lr 5e-5,
batch 64, at most 10 epochs with a linear decay to 0 and no warm-up, AdamW without weight decay,
gradients clipped at 1.0 (Hugging Face Trainer's defaults), max length 128, seed 12, labels the
sorted set of the training file's labels, early stopping after 3 epochs whose validation accuracy
(F1 for two labels) does not beat the best by more than 0.001, and the *last* model's score. Under
`--convention official` the script's data loader is kept: every epoch drops its last partial
training batch and the score is taken on the first floor(n/8)*8 validation items; a local HF model
is then tokenised as the script does (the tokenizer's pair template, padded to 128, the model's pad
id set to EOS).
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

RECIPES = ("babylm-2025", "babylm-2026")

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
    schedule: str = field(default="cosine", metadata={"say": "cosine | linear (decay to --min-lr-ratio)"})
    max_grad_norm: float = field(default=0.0, metadata={"say": "0: no clipping"})
    patience: int = field(default=0, metadata={"say": "0: every epoch runs; N: stop after N epochs without gain"})
    keep: str = field(default="best", metadata={"say": "best (epoch on validation) | last"})

    @classmethod
    def for_recipe(cls, recipe: str, **overrides) -> FinetuneConfig:
        """The recipe's numbers, with `overrides` (the flags given) on top."""
        if recipe not in RECIPES:
            raise UserError(f"unknown recipe {recipe!r} (choose {' or '.join(RECIPES)})")
        return cls(**{**(RECIPE_2026 if recipe == "babylm-2026" else {}), **overrides})

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
        if c.schedule not in ("cosine", "linear") or c.keep not in ("best", "last"):
            raise UserError("--schedule is cosine or linear, --keep is best or last")
        if c.patience < 0 or c.max_grad_norm < 0:
            raise UserError("--patience and --max-grad-norm must be >= 0 (0 turns each off)")
        return c

    def lr_factor(self, step: int, total: int) -> float:
        if self.schedule == "linear":  # as transformers' get_linear_schedule_with_warmup, floored at min_lr_ratio
            warmup = round(self.warmup_fraction * total)
            if step < warmup:
                return step / max(1, warmup)
            return max(self.min_lr_ratio, (total - step) / max(1, total - warmup))
        return warmup_cosine(step, total, 1.0, self.warmup_fraction, self.min_lr_ratio)


# the 2026 multilingual track's script: its own numbers and the Trainer's defaults it leaves in place
RECIPE_2026 = dict(
    lr=5e-5, batch_size=64, epochs=10, max_length=128, weight_decay=0.0, warmup_fraction=0.0, min_lr_ratio=0.0,
    schedule="linear", max_grad_norm=1.0, seed=12, patience=3, keep="last",
)  # fmt: skip
EARLY_STOPPING_THRESHOLD = 0.001  # the script's EarlyStoppingCallback(early_stopping_threshold=0.001)
OFFICIAL_EVAL_BATCH = 8  # Trainer's per-device eval batch; dataloader_drop_last cuts validation to whole batches


def epochs_without_gain(values: list[float], threshold: float = EARLY_STOPPING_THRESHOLD) -> int:
    """Consecutive evaluations, up to the last, that did not beat the best before them by more than
    `threshold` (transformers' EarlyStoppingCallback, whose best is updated by any strict gain)."""
    count, best = 0, None
    for v in values:
        count = 0 if best is None or (v > best and v - best > threshold) else count + 1
        best = v if best is None else max(best, v)
    return count


# ---------------------------------------------------------------- data
def load_split(path: Path, task: str) -> list[tuple[list[str], int]]:
    fields, n_labels, _ = TASKS[task]
    if not path.is_file():
        raise UserError(f"fine-tuning file not found: {path}")
    in_range = lambda y: isinstance(y, int) and not isinstance(y, bool) and 0 <= y < n_labels  # noqa: E731
    return load_labelled(path, fields, in_range, f"an integer in 0..{n_labels - 1}", f" for task {task}")


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
    """A local HF model's own sequence-classification head. `official_2026`: tokenised as the 2026 track's
    script does — the tokenizer's pair template, padded to max length with its pad token, and the
    model's pad id set to EOS (so a causal model pools the last token that is not EOS, as there)."""

    def __init__(self, path, n_labels: int, dropout: float, trust_remote_code: bool = False, official_2026=False):
        super().__init__()
        _, self.model = load_hf_model(
            path, "AutoModelForSequenceClassification", "a sequence classifier", trust_remote_code, num_labels=n_labels,
            new_head=CLASSIFIER_HEADS,
        )  # fmt: skip
        self.tok = load_hf_tokenizer(path, trust_remote_code)
        self.official = official_2026
        config = self.model.config
        tok_pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        if official_2026:
            config.pad_token_id, self.pad_id = self.tok.eos_token_id, tok_pad
        else:
            if config.pad_token_id is None:
                config.pad_token_id = tok_pad
            self.pad_id = config.pad_token_id  # a causal head pools the last token that is not this id
        self.max_len = getattr(config, "max_position_embeddings", 512)

    def encode(self, texts, max_length):
        length = min(max_length, self.max_len)
        if self.official:
            self.pad_to = length
            return self.tok(*texts, truncation=True, max_length=length)["input_ids"]
        sep = self.tok.sep_token or self.tok.eos_token or " "
        return self.tok(f" {sep} ".join(texts), truncation=True, max_length=length)["input_ids"]

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


def _batches(examples, size, generator=None, pad_id=0, pad_to=None, drop_last=False):
    """Padded batches (with `pad_id`, to `pad_to` where given). Training (a generator given): shuffled,
    then grouped by length within windows of 50 batches and the batches shuffled again (as Hugging
    Face's group_by_length), so a batch is not padded to one long outlier; evaluation: in order.
    `drop_last`: a last batch smaller than `size` is left out (Trainer's dataloader_drop_last)."""
    order = list(range(len(examples)))
    if generator is not None:
        order = torch.randperm(len(examples), generator=generator).tolist()
        if drop_last:  # the shuffled order's last partial batch, as a random sampler's
            order = order[: len(order) // size * size]
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
        ids = torch.full((len(chunk), max(int(lengths.max()), pad_to or 0)), pad_id, dtype=torch.long)
        for r, (x, _) in enumerate(chunk):
            ids[r, : len(x)] = torch.tensor(x)
        yield ids, lengths, torch.tensor([y for _, y in chunk])


def _padding(model) -> dict:
    return {"pad_id": getattr(model, "pad_id", 0), "pad_to": getattr(model, "pad_to", None)}


@torch.no_grad()
def _predict(model, examples, device, amp, size=64) -> list[int]:
    model.eval()
    out = []
    for ids, lengths, _ in _batches(examples, size, **_padding(model)):
        with amp:
            out += model(ids.to(device), lengths.to(device)).float().argmax(-1).tolist()
    model.train()
    return out


def finetune_once(
    make_model,
    name: str,
    n_labels: int,
    metric: str,
    train,
    valid,
    cfg: FinetuneConfig,
    seed: int,
    device="cpu",
    progress=True,
    official_loader=False,
) -> dict:
    """One fine-tuning: every epoch scored on validation with `metric` (and accuracy); the kept epoch is
    the best or the last (`cfg.keep`), after early stopping when `cfg.patience` is set.
    `official_loader`: the Trainer's dataloader_drop_last (see the module's doc)."""
    torch.manual_seed(seed)
    model = make_model(n_labels).to(device)
    train_x = [(model.encode(t, cfg.max_length), y) for t, y in train]
    valid_x = [(model.encode(t, cfg.max_length), y) for t, y in valid]
    if official_loader:
        valid_x = valid_x[: len(valid_x) // OFFICIAL_EVAL_BATCH * OFFICIAL_EVAL_BATCH]
    per_epoch = len(train_x) // cfg.batch_size if official_loader else math.ceil(len(train_x) / cfg.batch_size)
    if not per_epoch or not valid_x:
        raise UserError(
            f"{name}: {len(train)} training and {len(valid)} validation examples are too few for whole batches "
            f"({cfg.batch_size} to train, {OFFICIAL_EVAL_BATCH} to score); lower --batch-size or add examples"
        )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cfg.lr_factor(step, steps))
    amp, _ = autocast_for(cfg.precision, torch.device(device))
    g = torch.Generator().manual_seed(seed)
    gold = [y for _, y in valid_x]
    history, best, taken = [], None, 0
    bar = tqdm(total=steps, desc=f"{name} seed {seed}", disable=not progress or None, dynamic_ncols=True)
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for ids, lengths, labels in _batches(train_x, cfg.batch_size, g, drop_last=official_loader, **_padding(model)):
            with amp:
                logits = model(ids.to(device), lengths.to(device))
            loss = nn.functional.cross_entropy(logits.float(), labels.to(device))
            loss.backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            taken += 1
            bar.update(1)
        predictions = _predict(model, valid_x, device, amp)
        value = _metric(predictions, gold, metric)
        entry = {"epoch": epoch, "train_loss": sum(losses) / len(losses), metric: value}
        history.append({**entry, "accuracy": _metric(predictions, gold, "accuracy")})
        if best is None or value > best[metric]:
            best, best_predictions = history[-1], predictions
        bar.set_postfix(epoch=epoch, loss=f"{history[-1]['train_loss']:.3f}", **{metric: f"{value:.3f}"})
        if cfg.patience and epochs_without_gain([h[metric] for h in history]) >= cfg.patience:
            break
    bar.close()
    kept, kept_predictions = (history[-1], predictions) if cfg.keep == "last" else (best, best_predictions)
    return {
        "seed": seed,
        "best_epoch": best["epoch"],
        "kept_epoch": kept["epoch"],
        "epochs_run": len(history),
        "steps": taken,
        "value": kept[metric],
        "accuracy": kept["accuracy"],
        "n_scored": len(valid_x),
        "history": history,
        "predictions": kept_predictions,
    }


def finetune(make_model, task: str, data_dir, cfg: FinetuneConfig, device="cpu", progress=True, name: str = "") -> dict:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} (choose from: {', '.join(TASKS)})")
    cfg = cfg.resolved(task)
    train_file, valid_file = find_files(data_dir, task)
    train, valid = load_split(train_file, task), load_split(valid_file, task)
    _, n_labels, metric = TASKS[task]
    runs = [
        finetune_once(make_model, task, n_labels, metric, train, valid, cfg, cfg.seed + k, device, progress)
        for k in range(cfg.seeds)
    ]
    values = [r["value"] for r in runs]
    # the best epoch's labels for the validation file, as the pipeline predicts with its kept best model (first seed)
    predictions = [r.pop("predictions") for r in runs][0]
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


# ---------------------------------------------------------------- the BabyLM 2026 multilingual recipe
TASKS_2026 = ("arc", "belebele", "bmlama", "include", "mnli", "sib200", "truthfulqa", "xnli")
LANGUAGE_FOLDERS = {"eng": "en", "nld": "nl", "zho": "zh"}  # the track's languages -> the data's folder names


def multilingual_root(data_dir) -> Path:
    """The folder holding en/, nl/, zh/: DIR itself, or inside a babylm-eval checkout or its multilingual/."""
    root = Path(data_dir)
    for folder in (root, root / "finetune" / "data" / "multilingual", root / "multilingual/finetune/data/multilingual"):
        if any((folder / code).is_dir() for code in LANGUAGE_FOLDERS.values()):
            return folder
    raise UserError(
        f"no en/, nl/ or zh/ task folders under {root} (babylm-eval's multilingual/finetune/data/multilingual)"
    )


def task_files_2026(root: Path, language: str, task: str) -> tuple[Path, Path] | None:
    """TASK_xx.train.jsonl and TASK_xx.valid.jsonl of one language, None where the track has no such task."""
    code = LANGUAGE_FOLDERS[language]
    train, valid = (root / code / task / f"{task}_{code}.{split}.jsonl" for split in ("train", "valid"))
    if train.is_file() and valid.is_file():
        return train, valid
    if train.exists() or valid.exists():
        raise UserError(f"{train if not train.is_file() else valid} is missing (its other split is there)")
    return None


def load_labelled(path: Path, fields: tuple[str, ...], label_ok=None, want="a string or an integer",
                  task="") -> list[tuple[list[str], object]]:  # fmt: skip
    """(texts, label) per row, the label as the file has it; `label_ok` says which labels a task takes (`want`)."""
    label_ok = label_ok or (lambda y: isinstance(y, (str, int)) and not isinstance(y, bool))
    out = []
    for where, row in read_jsonl(path):
        missing = [k for k in fields if not isinstance(row.get(k), str)]
        if missing:
            raise UserError(f"{where}: missing text field {missing[0]!r}{task}")
        label = row.get("label")
        if not label_ok(label):
            raise UserError(f"{where}: label {label!r} is not {want}")
        out.append(([row[k] for k in fields], label))
    if not out:
        raise UserError(f"{path}: no examples")
    return out


def read_task_2026(train_file: Path, valid_file: Path) -> tuple[list, list, list]:
    """(train, valid, labels) with labels as class indices: the sorted set of the training file's labels,
    as the script's label_list; the text fields are premise and hypothesis where the rows have them, else
    sentence (its column inference for these files)."""
    first = next((row for _, row in read_jsonl(train_file)), {})
    fields = ("premise", "hypothesis") if "premise" in first and "hypothesis" in first else ("sentence",)
    train, valid = load_labelled(train_file, fields), load_labelled(valid_file, fields)
    kinds = {type(y) for _, y in train + valid}
    if len(kinds) > 1:
        raise UserError(f"{train_file}: labels mix strings and integers; use one kind")
    labels = sorted({y for _, y in train})
    unseen = sorted({y for _, y in valid} - set(labels), key=str)
    if unseen:
        raise UserError(f"{valid_file}: label {unseen[0]!r} never occurs in {train_file.name}")
    index = {y: k for k, y in enumerate(labels)}
    return [(t, index[y]) for t, y in train], [(t, index[y]) for t, y in valid], labels


def plan_2026(data_dir, languages=None, tasks=None) -> dict[str, dict[str, tuple[Path, Path]]]:
    """{language: {task: files}} for the tasks the data holds; every file read and checked up front."""
    root = multilingual_root(data_dir)
    languages = list(languages or [lang for lang, code in LANGUAGE_FOLDERS.items() if (root / code).is_dir()])
    tasks = list(tasks or TASKS_2026)
    for name, given, known in (("language", languages, LANGUAGE_FOLDERS), ("task", tasks, TASKS_2026)):
        bad = [x for x in given if x not in known]
        if bad:
            raise UserError(f"unknown {name} {bad[0]!r} for --recipe babylm-2026 (choose from: {', '.join(known)})")
    plan = {}
    for lang in languages:
        found = {t: files for t in tasks if (files := task_files_2026(root, lang, t))}
        for files in found.values():
            read_task_2026(*files)
        if not found:
            raise UserError(f"no fine-tuning task of {', '.join(tasks)} for {lang} under {root}")
        plan[lang] = found
    return plan


def finetune_2026(make_model, plan: dict, cfg: FinetuneConfig, convention="official", device="cpu", progress=True,
                  name="") -> dict:  # fmt: skip
    """The track's fine-tuning table: per language and task, the kept model's validation accuracy x 100
    (mean over cfg.seeds), a language's score the unweighted mean over its tasks."""
    if convention not in ("official", "hlm"):
        raise UserError(f"unknown convention {convention!r} (choose official or hlm)")
    table = {}
    for lang, tasks in plan.items():
        rows = {}
        for task, files in tasks.items():
            train, valid, labels = read_task_2026(*files)
            c = cfg.resolved(task)
            metric = "f1" if len(labels) == 2 else "accuracy"  # the script's metric_for_best_model
            runs = [
                finetune_once(
                    make_model,
                    f"{lang}/{task}",
                    len(labels),
                    metric,
                    train,
                    valid,
                    c,
                    c.seed + k,
                    device,
                    progress,
                    official_loader=convention == "official",
                )  # fmt: skip
                for k in range(c.seeds)
            ]
            for r in runs:
                r.pop("predictions")
            scored = [y for _, y in valid][: runs[0]["n_scored"]]
            _, majority = majority_baseline([y for _, y in train], scored, len(labels), "accuracy")
            acc = [100 * r["accuracy"] for r in runs]
            rows[task] = {
                "acc": statistics.mean(acc),
                "stdev": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "n_train": len(train),
                "n_valid": len(valid),
                "n_scored": runs[0]["n_scored"],
                "labels": labels,
                "majority": 100 * majority,
                "seeds": runs,
            }
        table[lang] = {"tasks": rows, "score": statistics.mean(r["acc"] for r in rows.values())}
    return stamp(
        "finetune-multilingual",
        {"model": name, "recipe": "babylm-2026", "convention": convention, "config": asdict(cfg), "languages": table},
    )


def format_2026(result: dict) -> str:
    lines = [f"BabyLM 2026 multilingual, fine-tuned (convention {result['convention']}; accuracy x 100, last model):"]
    for lang, entry in result["languages"].items():
        lines.append(f"  {lang}: {entry['score']:.2f}")
        for task, row in entry["tasks"].items():
            epochs = ", ".join(str(r["epochs_run"]) for r in row["seeds"])
            lines.append(f"    {task}: {row['acc']:.2f} (majority {row['majority']:.2f}; {row['n_scored']} of "
                         f"{row['n_valid']} scored; epochs run {epochs})")  # fmt: skip
    return "\n".join(lines)
