"""`hlm report`: loss curves, BLiMP breakdown, perplexity table and samples for one or more runs.

Writes OUT/report.md (or report.html) and PNG plots made with matplotlib. It reads what the runs
already hold: metrics.jsonl, config.json and the JSON files `hlm eval` wrote to RUN/eval/.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hybridlm.errors import UserError
from hybridlm.files import atomic_write_bytes, atomic_write_text, refuse_links_in
from hybridlm.generate import sample_text
from hybridlm.results import KINDS, kind_of, newer_schema
from hybridlm.runs import RunDir, load_run

NUMBER, OPTIONAL_NUMBER = (int, float), (int, float, type(None))


def _misfit(shape: dict, data) -> str | None:
    """Why `data` does not have `shape` (key -> the types its value may have); None when it does."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, types in shape.items():
        value = data.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and types in (NUMBER, OPTIONAL_NUMBER, int)):
            return f"{key!r} is missing or of the wrong type"
    for key in ("macro_stderr", "nll_per_token_stderr", "majority_baseline"):  # optional, but numbers when there
        if key in data and not isinstance(data[key], OPTIONAL_NUMBER):
            return f"{key!r} is not a number"
    return None


def _warn(where: str, kind: str, why: str) -> None:
    print(f"hlm: warning: {where}: skipped, not a {kind} result hlm report can show ({why})", file=sys.stderr)


def _language_misfit(entry, row: dict) -> str | None:
    """What is wrong with one language of a multilingual result: its score, and each task's row (of shape `row`)."""
    if not isinstance(entry, dict):
        return "not a table"
    why = _misfit({"score": OPTIONAL_NUMBER, "tasks": dict}, entry)
    return why or next((f"task {t!r}: {w}" for t, r in entry["tasks"].items() if (w := _misfit(row, r))), None)


def _fit(kind: str, data: dict, where: str) -> dict | None:
    """The part of a result of `kind` the report can show, None when nothing is (with one warning per misfit)."""
    section = SECTIONS[kind]
    if section.parts:  # perplexity: each scorer's measure stands on its own
        kept = {}
        for key, value in data.items():
            if isinstance(value, dict) and section.parts in value:
                why = _misfit(section.part_shape, value)
                if why:
                    _warn(f"{where} ({key})", kind, why)
                    continue
            kept[key] = value
        return kept
    why = _misfit(section.shape, data)
    if why is None and section.part_shape:  # every task of a BabyLM result
        why = next(
            (f"task {t!r}: {w}" for t, v in data["tasks"].items() if (w := _misfit(section.part_shape, v))), None
        )
    if why is None and kind == "blimp":
        why = next(
            (f"field {f!r} has no accuracy" for f, v in data["fields"].items() if _misfit({"accuracy": NUMBER}, v)),
            None,
        )
    if why is None and kind in ("multilingual", "finetune-multilingual"):
        row = {"acc": NUMBER, "n": int, "ties": int} if kind == "multilingual" else {"acc": NUMBER, "n_scored": int}
        why = next((f"language {lang!r}: {w}" for lang, v in data["languages"].items()
                    if (w := _language_misfit(v, row))), None)  # fmt: skip
    if why:
        _warn(where, kind, why)
    return None if why else data


def _read_run(path: Path) -> dict:
    """A run's config, logged metrics and every result it holds, by kind (a hybrid has causal and MNTP scores)."""
    run = RunDir(path).require()
    cfg = run.read_config()
    found: dict[str, list[dict]] = {kind: [] for kind in SECTIONS}
    evals = [(str(run.eval_dir / name), data) for name, data in run.read_evals()]
    evals += [
        (f"{run.eval_dir / 'checkpoints'} ({data.get('checkpoint', '?')})", data)
        for data in run.read_checkpoint_evals()
    ]
    for where, data in evals:
        kind = kind_of(data)
        if kind is None:
            if "kind" in data:  # another program's file, or a kind a newer hlm writes
                print(f"hlm: warning: {where}: skipped, a result of kind {data['kind']!r} unknown to this hlm",
                      file=sys.stderr)  # fmt: skip
        elif newer_schema(data):
            print(f"hlm: warning: {where}: skipped, written by a newer hlm (schema {data.get('schema')!r}); "
                  "upgrade hybridlm to report it", file=sys.stderr)  # fmt: skip
        elif (kept := _fit(kind, data, where)) is not None:
            found[kind].append(kept)
    return {
        "name": run.path.name,
        "path": run.path,
        "config": cfg.to_dict(),
        "metrics": _metric_rows(run.read_metrics(), run.metrics_path),
        **found,
        "curves": _curves(found["checkpoint"]),
    }


def _metric_rows(records: list[dict], where) -> list[dict]:
    """The logged rows the report can draw: `tokens` a count and each of loss, val_loss, val_bpb a number where
    present; the others skipped, with one warning."""

    def fits(m):
        numbers = [m[k] for k in ("loss", "val_loss", "val_bpb") if k in m]
        return (
            isinstance(m.get("tokens"), int)
            and not isinstance(m["tokens"], bool)
            and all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in numbers)
        )

    kept = [m for m in records if fits(m)]
    if len(kept) < len(records):
        print(
            f"hlm: warning: {where}: {len(records) - len(kept)} row(s) skipped (no token count, or a loss that is "
            "not a number)",
            file=sys.stderr,
        )
    return kept


def _curves(checkpoints: list[dict]) -> dict:
    """Learning curves from hlm eval babylm --all-checkpoints: {scorer: {task: [(words seen, value, metric)]}}."""
    curves: dict = {}
    for result in checkpoints:
        for task, t in result["tasks"].items():
            if result.get("words_seen") is not None and t.get("value") is not None:
                curves.setdefault(str(result.get("scorer", "?")), {}).setdefault(task, []).append(
                    (result["words_seen"], t["value"], t["metric"], str(result.get("checkpoint", "")))
                )
    return {s: {task: sorted(points) for task, points in tasks.items()} for s, tasks in curves.items()}


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())  # never through a link planted in the report folder


def _pyplot():
    try:
        import matplotlib  # an optional extra: imported only when a report is drawn

        matplotlib.use("Agg")
        # run names, tasks and samples are drawn as they are: a "$...^...$" in a name is text, never mathtext
        matplotlib.rcParams["text.parse_math"] = False
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("hlm report needs matplotlib: pip install 'hybridlm[report]'") from None
    return plt


def _chance(task: str, metric: str) -> float | None:
    """The task record's chance level, drawn when the plot shows that task's own metric."""
    from hybridlm.evaluate.babylm import TASKS

    record = TASKS.get(task)
    return record.chance if record is not None and record.metric == metric else None


def _plots(runs: list[dict], out: Path) -> list[str]:
    plt = _pyplot()
    made = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        train = [m for m in r["metrics"] if "loss" in m]
        val = [m for m in r["metrics"] if "val_loss" in m]
        if train:
            axes[0].plot([m["tokens"] for m in train], [m["loss"] for m in train], label=r["name"], alpha=0.8)
        if val:
            axes[1].plot([m["tokens"] for m in val], [m["val_loss"] for m in val], marker="o", label=r["name"])
    for ax, title in zip(axes, ("training loss", "validation loss (NELBO for diffusion)")):
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("nats / token")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "loss.png")
    plt.close(fig)
    made.append("loss.png")

    with_blimp = [(r["name"], b) for r in runs for b in r["blimp"]]
    if with_blimp:
        fields = sorted({f for _, b in with_blimp for f in b["fields"]})
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(fields) + 2), 4))
        width = 0.8 / len(with_blimp)
        for i, (name, b) in enumerate(with_blimp):
            xs = [j + i * width for j in range(len(fields))]
            ax.bar(
                xs,
                [100 * b["fields"].get(f, {}).get("accuracy", 0) for f in fields],
                width,
                label=f"{name} ({b['scorer']}, macro {100 * b['macro_accuracy']:.1f}%)",
            )
        ax.axhline(50, color="grey", ls="--", lw=1)
        ax.set_xticks([j + width * (len(with_blimp) - 1) / 2 for j in range(len(fields))], fields, rotation=20)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("minimal pairs by field (dashed: chance)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, out / "blimp_fields.png")
        plt.close(fig)
        made.append("blimp_fields.png")
    with_babylm = [(r["name"], b) for r in runs for b in r["babylm"]]
    if with_babylm:
        tasks = sorted({t for _, b in with_babylm for t in b["tasks"]})
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1, 3.6), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            labels = [f"{name}\n({b['scorer']})" for name, b in with_babylm]
            values = [b["tasks"].get(task, {}).get("value") for _, b in with_babylm]
            values = [float("nan") if v is None else v for v in values]
            metric = next(b["tasks"][task]["metric"] for _, b in with_babylm if task in b["tasks"])
            ax.bar(range(len(values)), values, color=[f"C{i}" for i in range(len(values))])
            ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=30)
            ax.set_title(task, fontsize=9)
            ax.set_ylabel(metric, fontsize=8)
            if _chance(task, metric) is not None:
                ax.axhline(_chance(task, metric), color="grey", ls="--", lw=1)
        fig.tight_layout()
        _save(fig, out / "babylm.png")
        plt.close(fig)
        made.append("babylm.png")
    lines = [(f"{r['name']} ({scorer})", tasks) for r in runs for scorer, tasks in r["curves"].items()]
    if lines:
        tasks = sorted({t for _, by_task in lines for t in by_task})
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1, 3.6), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for i, (label, by_task) in enumerate(lines):
                points = by_task.get(task, [])
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{i}", label=label)
            metric = next(p[2] for _, by_task in lines for p in by_task.get(task, []))
            if _chance(task, metric) is not None:
                ax.axhline(_chance(task, metric), color="grey", ls="--", lw=1)
            ax.set_xscale("log")
            ax.set_xlabel("words seen", fontsize=8)
            ax.set_ylabel(metric, fontsize=8)
            ax.set_title(task, fontsize=9)
            ax.grid(alpha=0.3, which="both")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("learning curves (hlm eval babylm --all-checkpoints; dashed: chance)", fontsize=9)
        fig.tight_layout()
        _save(fig, out / "learning_curves.png")
        plt.close(fig)
        made.append("learning_curves.png")
    with_aoa = [(r["name"], a) for r in runs for a in r["aoa"]]
    if with_aoa:
        fig, axes = plt.subplots(1, len(with_aoa), figsize=(4 * len(with_aoa) + 1, 3.8), squeeze=False)
        for ax, (name, a) in zip(axes[0], with_aoa):
            pairs = [p for p in a["words"].values() if isinstance(p, dict) and {"model", "child"} <= set(p)]
            ax.scatter([p["child"] for p in pairs], [p["model"] for p in pairs], s=12)
            r = "n/a" if a.get("value") is None else f"{a['value']:.2f}"
            ax.set_title(f"{name} ({a.get('scorer', '?')}): r = {r}, {len(pairs)} words", fontsize=9)
            ax.set_xlabel("children's AoA (months)", fontsize=8)
            ax.set_ylabel("model AoA (log10 words seen)", fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        _save(fig, out / "aoa.png")
        plt.close(fig)
        made.append("aoa.png")

    with_samples = [(r["name"], g) for r in runs for g in r["generation"] if not g.get("from_file")]
    if with_samples:
        made.append(_generation_plot(plt, with_samples, out))
    shots = _shot_points(runs)
    if shots:
        made.append(_shots_plot(plt, shots, out))
    return made


def _shot_points(runs: list[dict]) -> dict:
    """{task: {run: [(shots, accuracy, stderr)]}} and each task's majority class, from hlm eval harness."""
    points: dict = {}
    for r in runs:
        for h in r["harness"]:
            for task, metrics in h["results"].items():
                if isinstance(metrics, dict) and isinstance(metrics.get("acc,none"), NUMBER):
                    entry = points.setdefault(task, {"runs": {}, "majority": h["majority"].get(task)})
                    entry["runs"].setdefault(r["name"], []).append(
                        (h["num_fewshot"] or 0, metrics["acc,none"], metrics.get("acc_stderr,none"))
                    )
    return points


def _shots_plot(plt, points: dict, out: Path) -> str:
    """Accuracy against in-context examples, a panel per task, the majority class dashed."""
    fig, axes = plt.subplots(1, len(points), figsize=(4 * len(points) + 1, 3.6), squeeze=False)
    for ax, (task, entry) in zip(axes[0], sorted(points.items())):
        for name, pts in entry["runs"].items():
            pts = sorted(pts)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] or 0 for p in pts], marker="o",
                        capsize=2, label=name)  # fmt: skip
        if isinstance(entry["majority"], NUMBER):
            ax.axhline(entry["majority"], color="k", ls="--", lw=0.8, label="majority class")
        ax.set_xscale("symlog")
        ax.set_xlabel("in-context examples", fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    _save(fig, out / "in_context.png")
    plt.close(fig)
    return "in_context.png"


def _generation_plot(plt, results: list[tuple[str, dict]], out: Path) -> str:
    """Sample quality against network calls, a line per run, sampler and length (hlm eval generation; the
    steps of a sweep along it); where samples of one length were decoded in several ways (threshold, cache,
    guidance: the fast-decoding grid), quality against wall time per sample instead, a panel per length,
    each way of decoding a labelled point."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from hybridlm.evaluate.generation import decoding_label

    exact = any(g.get("grammatical") is not None for _, g in results)
    keys = [("grammatical", "grammatical sentences")] if exact else []
    keys += [("gen_ppl", "generative perplexity (judge)"), ("entropy", "unigram entropy per sample (nats)")]
    by_length: dict = {}
    for name, g in results:
        by_length.setdefault(g.get("length"), []).append((name, g))
    grid = {
        length: pts
        for length, pts in by_length.items()
        if len({decoding_label(g) for _, g in pts}) > 1 and all(g.get("seconds_per_sample") for _, g in pts)
    }
    lines: dict[tuple, list] = {}
    for name, g in results:
        if g.get("length") not in grid:
            # a line per way of decoding (self-correction, thresholds...), the steps of a sweep along it
            lines.setdefault((name, decoding_label(g, length=False), g.get("length")), []).append(g)
    rows = [row for row, wanted in (("calls", lines), ("grid", grid)) if wanted]
    columns = max(len(keys) if lines else 0, len(grid))
    fig, axes = plt.subplots(len(rows), columns, figsize=(4.5 * columns + 1, 3.8 * len(rows)), squeeze=False)
    plain = FuncFormatter(lambda v, _: f"{v:g}")

    def log_x(ax, label):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        low, high = ax.get_xlim()
        # within a decade there is no major tick to label: label the minor ones then
        ax.xaxis.set_minor_formatter(plain if high < 10 * low else NullFormatter())
        ax.set_xlabel(label, fontsize=8)
        ax.grid(alpha=0.3)

    if lines:
        for ax, (key, label) in zip(axes[0], keys):
            for (name, how, length), points in lines.items():
                points = sorted((p for p in points if p.get(key) is not None and p.get("nfe")), key=lambda p: p["nfe"])
                if points:
                    suffix = f" L{length}" if len(by_length) > 1 and length else ""
                    ax.plot([p["nfe"] for p in points], [p[key] for p in points], marker="o",
                            label=f"{name} {how}{suffix}")  # fmt: skip
            log_x(ax, "network calls per sample")
            ax.set_title(label, fontsize=9)
        drawn = next((ax for ax in axes[0] if ax.lines), None)  # a judge-less run has no generative perplexity
        if drawn is not None:
            drawn.legend(fontsize=6)
    key, label = keys[0]
    for ax, (length, points) in zip(axes[-1] if grid else [], sorted(grid.items(), key=lambda kv: kv[0] or 0)):
        several = len({name for name, _ in points}) > 1
        for name, g in points:
            if g.get(key) is not None:
                ax.scatter(g["seconds_per_sample"], g[key], s=14)
                how = decoding_label(g, length=False)
                ax.annotate(f"{name}: {how}" if several else how, (g["seconds_per_sample"], g[key]), fontsize=5,
                            xytext=(3, 2), textcoords="offset points")  # fmt: skip
        log_x(ax, "seconds per sample (wall)")
        ax.set_title(f"{label}, {length} tokens: each way of decoding", fontsize=9)
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_visible(False)
    fig.tight_layout()
    _save(fig, out / "samplers.png")
    plt.close(fig)
    return "samplers.png"


def _sample(run: dict, seed: int) -> str:
    try:
        loaded = load_run(run["path"])
    except UserError as e:
        return f"(no sample: {e})"
    return sample_text(loaded, "The", "The <mask> was <mask> in the <mask> .", 40, seed, temperature=0.8, top_p=0.95)


GENERATION_COLUMNS = (
    ("nfe", ".1f"),
    ("gen_ppl", ".2f"),
    ("entropy", ".2f"),
    ("degenerate", ".0%"),
    ("distinct_2", ".3f"),
    ("grammatical", ".1%"),
    ("seconds_per_sample", ".3f"),
)


def _number(value, spec: str) -> str:
    return "—" if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, spec)


def _value(value, metric: str) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%" if metric == "accuracy" else f"{value:.3f}"


def _md(value) -> str:
    """A string from a run or a result file, safe in Markdown (a table cell too): one line, HTML
    escaped, Markdown's own characters backslash-escaped."""
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", html.escape(" ".join(str(value).split())))


def _plain(cell: str) -> str:
    """A cell of the Markdown text back to plain text (for the HTML report, which escapes it itself)."""
    return html.unescape(re.sub(r"\\(.)", r"\1", cell))


def _section(title: str | None, header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table (after a blank line and its title); text cells are escaped, numbers are given formatted."""
    if not rows:
        return []
    lines = [""] + ([title, ""] if title else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


@dataclass(frozen=True)
class Section:
    """How the report shows one kind of result (hybridlm.results.KINDS): the fields it reads (key -> the types
    they may have: a result that does not fit is skipped, with a warning) and its table, whose rows
    rows(a run's results of this kind) gives (the run's name is put before each)."""

    title: str | None
    header: tuple[str, ...]
    rows: Callable[[list[dict]], list[list]]
    shape: dict = field(default_factory=dict)
    part_shape: dict = field(default_factory=dict)  # each task's (babylm, checkpoint) or each measure's (perplexity)
    parts: str = ""  # perplexity: the key that marks a measure (each is kept or skipped on its own)


def _perplexity_rows(results):
    return [
        [
            f"{_md(k)} ({_md(v['measure'])})",
            f"{v['tokens']:,}",
            f"{v['nll_per_token']:.4f}"
            + (f" ± {v['nll_per_token_stderr']:.3f}" if "nll_per_token_stderr" in v else ""),
            f"{v['perplexity']:.2f}",
            f"{v['bits_per_byte']:.4f}",
        ]
        for p in results
        for k, v in p.items()
        if isinstance(v, dict) and "perplexity" in v
    ]


def _blimp_rows(results):
    return [
        [
            _md(b["scorer"]),
            f"{100 * b['macro_accuracy']:.1f}%" + (f" ± {100 * b['macro_stderr']:.1f}" if "macro_stderr" in b else ""),
            f"{b['n_pairs']:,}",
            len(b["paradigms"]),
            b["ties"],
        ]
        for b in results
    ]


def _babylm_rows(results):
    return [
        [
            _md(b["scorer"]),
            _md(b["convention"]),
            _md(task),
            _md(t["metric"]),
            _value(t["value"], t["metric"]),
            f"{t['n']:,}",
            t["ties"],
        ]
        for b in results
        for task, t in b["tasks"].items()
    ]


def _curve_rows(results):
    return [
        [
            _md(scorer),
            _md(task),
            ", ".join(f"{_md(c.removeprefix('words_') or w)}: {_value(v, m)}" for w, v, m, c in points),
        ]
        for scorer, tasks in _curves(results).items()
        for task, points in tasks.items()
    ]


def _aoa_rows(results):
    return [
        [
            _md(a.get("scorer", "?")),
            "n/a" if a.get("value") is None else f"{a['value']:.3f}",
            a.get("n_words", 0),
            _md(a.get("note", "")),
        ]
        for a in results
    ]


def _finetune_rows(results):
    return [
        [
            _md(f["task"]),
            _md(f["metric"]),
            f"{f['value']:.3f}" + (f" ± {f['stdev']:.3f}" if len(f["seeds"]) > 1 else ""),
            len(f["seeds"]),
            f"{f['majority_baseline']:.3f}" if f.get("majority_baseline") is not None else "—",
        ]
        for f in results
    ]


def _generation_rows(results):
    from hybridlm.evaluate.generation import decoding_label

    return [
        [_md(decoding_label(g, length=False)), g["steps"] or "—"]
        + [_number(g.get(k), f) for k, f in GENERATION_COLUMNS]
        for g in sorted(results, key=lambda g: (decoding_label(g), g["nfe"] or 0))
    ]


def _harness_rows(results):
    return [
        [
            _md(h["scorer"]),
            _md(task),
            h["num_fewshot"] if h["num_fewshot"] is not None else "task's",
            _number(m.get("acc,none"), ".3f")
            + (f" ± {m['acc_stderr,none']:.3f}" if isinstance(m.get("acc_stderr,none"), float) else ""),
            _number(h["majority"].get(task), ".3f"),
        ]
        for h in results
        for task, m in sorted(h["results"].items())
        if isinstance(m, dict)
    ]


def _multilingual_rows(results):
    return [
        [_md(m["scorer"]), m["convention"], lang, _md(task), f"{row['acc']:.2f}", row["n"], row["ties"]]
        for m in results
        for lang, entry in m["languages"].items()
        for task, row in [*entry["tasks"].items(), ("mean", {"acc": entry["score"], "n": "", "ties": ""})]
        if row["acc"] is not None
    ]


def _finetune_multilingual_rows(results):
    return [
        [
            m["convention"],
            lang,
            _md(task),
            f"{row['acc']:.2f}",
            row.get("n_scored", ""),
            "" if row.get("majority") is None else f"{row['majority']:.2f}",
        ]  # fmt: skip
        for m in results
        for lang, entry in m["languages"].items()
        for task, row in [*entry["tasks"].items(), ("mean", {"acc": entry["score"]})]
        if row["acc"] is not None
    ]


# one section per kind of result, in the report's order
SECTIONS = {
    "perplexity": Section(
        None,
        ("run", "measure", "tokens", "nats/token", "perplexity", "bits/byte"),
        _perplexity_rows,
        parts="perplexity",
        part_shape={
            "measure": str,
            "tokens": int,
            "nll_per_token": NUMBER,
            "perplexity": NUMBER,
            "bits_per_byte": NUMBER,
        },
    ),
    "blimp": Section(
        None,
        ("run", "scorer", "macro accuracy", "pairs", "paradigms", "ties"),
        _blimp_rows,
        shape={
            "scorer": str,
            "macro_accuracy": NUMBER,
            "n_pairs": int,
            "ties": int,
            "paradigms": dict,
            "fields": dict,
        },
    ),
    "babylm": Section(
        "BabyLM 2025 zero-shot (hlm eval babylm):",
        ("run", "scorer", "convention", "task", "metric", "value", "n", "ties"),
        _babylm_rows,
        shape={"scorer": str, "convention": str, "tasks": dict},
        part_shape={"metric": str, "value": OPTIONAL_NUMBER, "n": int, "ties": int},
    ),
    "checkpoint": Section(
        "Learning curves (hlm eval babylm --all-checkpoints): value at each checkpoint, by words seen:",
        ("run", "scorer", "task", "checkpoint: value, in order of words seen"),
        _curve_rows,
        shape={"tasks": dict, "words_seen": (int, float, type(None))},
        part_shape={"metric": str, "value": OPTIONAL_NUMBER},
    ),
    "aoa": Section(
        "Age of acquisition (Chang & Bergen 2022; hlm eval babylm --all-checkpoints):",
        ("run", "scorer", "Pearson r (model vs child AoA)", "words", "note"),
        _aoa_rows,
        shape={"words": dict, "value": OPTIONAL_NUMBER, "n_words": int},
    ),
    "finetune": Section(
        "Fine-tuning (hlm finetune; best epoch on validation):",
        ("run", "task", "metric", "value", "seeds", "majority class"),
        _finetune_rows,
        shape={"task": str, "metric": str, "value": NUMBER, "seeds": list, "stdev": NUMBER},
    ),
    "generation": Section(
        "Samples (hlm eval generation; gen. perplexity under the judge, degenerate: entropy below every real window):",
        (
            "run",
            "sampler",
            "steps",
            "calls",
            "gen. ppl",
            "entropy",
            "degenerate",
            "distinct-2",
            "grammatical",
            "s/sample",
        ),  # fmt: skip
        _generation_rows,
        shape={"sampler": str, "num_samples": int, "steps": (int, type(None)), "nfe": OPTIONAL_NUMBER},
    ),
    "harness": Section(
        "In-context learning (hlm eval harness; accuracy ± standard error, the majority class beside it):",
        ("run", "scorer", "task", "shots", "accuracy", "majority class"),
        _harness_rows,
        shape={"scorer": str, "results": dict, "num_fewshot": (int, type(None)), "majority": dict},
    ),
    "multilingual": Section(
        "BabyLM 2026 multilingual, zero-shot (accuracy x 100; a language's mean is unweighted over its tasks):",
        ("run", "scorer", "convention", "language", "task", "accuracy", "items", "ties"),
        _multilingual_rows,
        shape={"scorer": str, "convention": str, "languages": dict},
    ),
    "finetune-multilingual": Section(
        "BabyLM 2026 multilingual, fine-tuned (hlm finetune --recipe babylm-2026; accuracy x 100 of the last model):",
        ("run", "convention", "language", "task", "accuracy", "items scored", "majority class"),
        _finetune_multilingual_rows,
        shape={"convention": str, "languages": dict},
    ),
}
assert set(SECTIONS) == set(KINDS), "every kind of result has its section"


def _tables(runs: list[dict], samples: dict) -> list[str]:
    rows = []
    for r in runs:
        val = [m for m in r["metrics"] if "val_loss" in m]
        train = [m for m in r["metrics"] if "loss" in m]
        last = val[-1] if val else {}

        def fmt(key, last=last):  # bits per byte: likelihoods and bounds
            return f"{last[key]:.4f}" if key in last else "—"

        rows.append(
            [
                _md(r["name"]),
                _md(r["config"]["objective"]),
                _md(r["config"]["preset"]),
                train[-1]["step"] if train else 0,
                f"{train[-1]['tokens'] if train else 0:,}",
                fmt("val_loss"),
                fmt("val_bpb"),
            ]
        )
    lines = _section(
        None, ["run", "objective", "preset", "steps", "tokens seen", "last val loss", "val bits/byte"], rows
    )[1:]
    for kind, section in SECTIONS.items():
        rows = [[_md(r["name"]), *row] for r in runs for row in section.rows(r[kind])]
        lines += _section(section.title, list(section.header), rows)
    if samples:
        lines += ["", "Samples:", ""] + [f"- **{_md(name)}**: {_md(text)}" for name, text in samples.items()]
    return lines


# ---------------------------------------------------------------- seeds: groups of runs
SEED_KEYS = ("seed", "data_seed", "out")  # what runs that differ only by their seeds differ in
GROUP_METRICS = (
    ("val_loss", "last val loss", min),
    ("val_bpb", "val bits/byte", min),
    ("blimp", "pairs macro acc", max),
)


def group_runs(runs: list[dict], by: str) -> dict[str, list[dict]]:
    """Runs grouped by config keys (`objective`, `objective,masking`), with `auto` by everything but
    their seeds, or with `folder` by the folder that holds them (hlm train --seeds: OUT/seed_N); each
    group is labelled by the keys whose values tell the groups apart, or by its folder."""
    if by == "folder":
        groups: dict[str, list[dict]] = {}
        for r in runs:
            groups.setdefault(Path(r["path"]).parent.name, []).append(r)
        return groups
    keys = None if by == "auto" else [k.strip() for k in by.split(",") if k.strip()]
    if keys is not None:
        for k in keys:
            if any(k not in r["config"] for r in runs):
                raise UserError(f"--group-by {k}: not a config key of these runs (e.g. objective, masking, init_from)")
    ident = [{k: v for k, v in r["config"].items() if k not in SEED_KEYS and (keys is None or k in keys)} for r in runs]
    differ = [k for k in ident[0] if len({repr(i.get(k)) for i in ident}) > 1] if keys is None else keys
    groups: dict[str, list[dict]] = {}
    for r, i in zip(runs, ident):
        label = ", ".join(f"{k}={i.get(k)}" for k in differ) or "all runs"
        groups.setdefault(label, []).append(r)
    return groups


def _metric(r: dict, key: str) -> float | None:
    """A run's last value of `key`: of its moving average of the weights where it keeps one (val_*_ema), as
    hlm eval scores it."""
    if key == "blimp":
        return r["blimp"][0]["macro_accuracy"] if r["blimp"] else None
    val = [m for m in r["metrics"] if key in m]
    return val[-1].get(f"{key}_ema", val[-1][key]) if val else None


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return mean, sd


def _group_section(groups: dict[str, list[dict]]) -> list[str]:
    """mean ± s.d. over each group's runs (seeds); "≈" marks a group whose difference from the best is
    smaller than two s.d. (pooled over the two groups): a difference the seeds do not support."""
    stats = {}
    for key, _, _ in GROUP_METRICS:
        values = {g: [x for r in rs if (x := _metric(r, key)) is not None] for g, rs in groups.items()}
        stats[key] = {g: _mean_sd(v) for g, v in values.items() if v}
    rows = []
    for g, rs in groups.items():
        row = [_md(g), len(rs)]
        for key, _, best_of in GROUP_METRICS:
            if g not in stats[key]:
                row.append("—")
                continue
            mean, sd = stats[key][g]
            best = best_of(stats[key], key=lambda h: stats[key][h][0])
            b_mean, b_sd = stats[key][best]
            pooled = math.sqrt((sd**2 + b_sd**2) / 2) if not (math.isnan(sd) or math.isnan(b_sd)) else float("nan")
            tied = g != best and not math.isnan(pooled) and abs(mean - b_mean) < 2 * pooled
            scale = 100 if key == "blimp" else 1
            text = f"{scale * mean:.4g}" + ("" if math.isnan(sd) else f" ± {scale * sd:.2g}")
            row.append(("≈ " if tied else "") + text + (" (best)" if g == best and len(stats[key]) > 1 else ""))
        rows.append(row)
    header = ["group", "runs"] + [label for _, label, _ in GROUP_METRICS]
    note = ("mean ± s.d. over the runs of each group (training seeds), of the moving average of the weights where "
            "a run keeps one; ≈: differs from the best group by less than two seed s.d. (pooled), a difference the "
            "seeds do not support")  # fmt: skip
    return _section("## Groups over seeds", header, rows) + ["", note]


def _group_plot(groups: dict[str, list[dict]], out: Path) -> list[str]:
    plt = _pyplot()
    key = "val_bpb" if any(_metric(r, "val_bpb") is not None for rs in groups.values() for r in rs) else "val_loss"
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(groups) + 2), 3.8))
    for i, rs in enumerate(groups.values()):
        values = [x for r in rs if (x := _metric(r, key)) is not None]
        if not values:
            continue
        mean, sd = _mean_sd(values)
        ax.bar(i, mean, yerr=0 if math.isnan(sd) else sd, capsize=4, alpha=0.6)
        ax.plot([i] * len(values), values, "k.", ms=6)
    ax.set_xticks(range(len(groups)), list(groups), rotation=15, fontsize=8)
    ax.set_ylabel(key)
    ax.set_title(f"{key}: mean ± s.d. over seeds (dots: runs)")
    fig.tight_layout()
    _save(fig, out / "seeds.png")
    plt.close(fig)
    return ["seeds.png"]


def make_report(
    run_dirs, out_dir, fmt: str = "md", samples: bool = True, seed: int = 0, group_by: str | None = None
) -> Path:
    runs = [_read_run(Path(r)) for r in run_dirs]
    groups = group_runs(runs, group_by) if group_by else None
    out = Path(out_dir)
    refuse_links_in(out)
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(runs, out) + (_group_plot(groups, out) if groups else [])
    sample_text = {r["name"]: _sample(r, seed) for r in runs} if samples else {}
    body = _tables(runs, sample_text) + (_group_section(groups) if groups else [])
    if fmt == "md":
        text = ["# hybridlm report", ""] + [f"![{i}]({i})" for i in images] + [""] + body
        return atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    imgs = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode((out / i).read_bytes()).decode()}" alt="{i}"><br>'
        for i in images
    )
    parts, table = [], []  # Markdown tables become HTML tables, other lines paragraphs

    def flush():
        if table:
            parts.append("<table>" + "".join(table) + "</table>")
            table.clear()

    for line in body:
        if line.startswith("|---"):
            continue
        if line.startswith("|"):
            cells = [html.escape(_plain(c.strip())) for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            table.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        else:
            flush()
            if m := re.fullmatch(r"- \*\*(.*?)\*\*: (.*)", line):  # a sample: its run in bold
                parts.append(f"<p><b>{html.escape(_plain(m[1]))}</b>: {html.escape(_plain(m[2]))}</p>")
            elif line:
                parts.append(f"<p>{html.escape(_plain(line))}</p>")
    flush()
    doc = (
        f"<!doctype html><meta charset=utf-8><title>hybridlm report</title><style>body{{font-family:sans-serif;"
        f"max-width:1100px;margin:auto}}td{{border:1px solid #ccc;padding:3px 8px}}table{{border-collapse:collapse;"
        f"margin:1em 0}}</style><h1>hybridlm report</h1>{imgs}{''.join(parts)}"
    )
    return atomic_write_text(out / "report.html", doc)
