"""What a result file is. Every JSON result hlm writes (RUN/eval/*.json, --json) opens with its `kind` and the
`schema` version of that kind's fields, so readers (hlm report, hlm submission, your scripts) dispatch on them
instead of guessing from keys; a reader meets a newer schema with a clear message, not a KeyError."""

from __future__ import annotations

SCHEMA = 1  # bumped when a kind's fields change meaning; readers refuse what is newer than they know

KINDS = {
    "perplexity": "hlm eval perplexity: nats per token, perplexity and bits per byte of a text file, per scorer",
    "blimp": "hlm eval blimp: minimal-pair accuracy by paradigm and field",
    "babylm": "hlm eval babylm: the BabyLM zero-shot tasks",
    "checkpoint": "hlm eval babylm --all-checkpoints: the tasks at one checkpoint (a learning curve's point)",
    "aoa": "hlm eval babylm --all-checkpoints: age of acquisition, model against children",
    "finetune": "hlm finetune: the best epoch's validation score, per seed and averaged",
    "generation": "hlm eval generation: sample quality against network calls",
    "harness": "hlm eval harness: lm-evaluation-harness tasks with the run's scorer",
    "multilingual": "hlm eval babylm --track multilingual: BabyLM 2026's zero-shot groups, per language",
    "finetune-multilingual": "hlm finetune --recipe babylm-2026: the 2026 track's fine-tuning tasks, per language",
}


def stamp(kind: str, result: dict, weights: str | None = None) -> dict:
    """`result` (a new dict) opening with its kind and schema; `weights`: which of a run's weights made it
    ("ema": its moving average, "raw": as trained)."""
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r} (add it to hybridlm.results.KINDS)")
    head = {"kind": kind, "schema": SCHEMA, **({"weights": weights} if weights else {})}
    return {**head, **{k: v for k, v in result.items() if k not in head}}


def kind_of(data: dict) -> str | None:
    """The kind a result says it is; for files written before results carried one, what their keys say.
    None: not a result hlm knows (a newer kind, or another program's file)."""
    if "kind" in data:
        return data["kind"] if data["kind"] in KINDS else None
    # shim (until 0.2): result files from before kinds (hlm 0.1.0 up to 2026-12-04) are recognised by their keys
    if data.get("task") == "aoa" and "words" in data:
        return "aoa"
    if "seeds" in data and "task" in data:
        return "finetune"
    if "paradigms" in data:
        return "blimp"
    if isinstance(data.get("tasks"), dict) and "checkpoint" in data:
        return "checkpoint"
    if "tasks" in data and "convention" in data:
        return "babylm"
    if "file" in data and "bytes" in data:
        return "perplexity"
    return None


def newer_schema(data: dict) -> bool:
    """Written by a newer hlm, with fields this one may read wrongly."""
    schema = data.get("schema", 1)
    return not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA
