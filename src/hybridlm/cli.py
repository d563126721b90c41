"""`hlm`: the command-line entry point (a thin layer over the package's modules)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

from hybridlm.errors import UserError


def _train_args(p: argparse.ArgumentParser):
    from hybridlm.config import TrainConfig

    p.add_argument("--config", help="TOML/YAML/JSON file of config keys (flags given here override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(default, list):
            p.add_argument(flag, dest=f.name, action="append", default=None, help=f"repeatable (default: {default})")
        elif isinstance(default, dict):
            p.add_argument(flag, dest=f.name, type=json.loads, default=None, help='JSON, e.g. \'{"n_layer": 4}\'')
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=None, help=f"default: {default}")


def cmd_train(a):
    from hybridlm.config import TrainConfig, load_config, merge_config
    from hybridlm.train import train

    base = load_config(a.config) if a.config else TrainConfig()
    flags = {f.name: getattr(a, f.name) for f in fields(TrainConfig) if getattr(a, f.name) is not None}
    cfg = merge_config(flags, base, source="command line")
    summary = train(cfg, resume=a.resume)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))


def cmd_tokenizer_train(a):
    from hybridlm.tokenizer import train_tokenizer

    tok = train_tokenizer(a.input, a.vocab_size, a.out, kind=a.kind, min_frequency=a.min_frequency)
    print(f"tokenizer with {tok.get_vocab_size()} tokens written to {a.out}/tokenizer.json")


def cmd_prepare(a):
    from hybridlm.data import prepare

    m = prepare(a.input, a.tokenizer, a.out, valid_inputs=a.valid, val_fraction=a.val_fraction)
    tr, va = m["splits"]["train"], m["splits"]["val"]
    print(f"prepared {tr['tokens']:,} train tokens ({tr['documents']} documents, {tr['words']:,} words) and "
          f"{va['tokens']:,} validation tokens ({va['source']}) in {a.out}")


def cmd_demo(a):
    from hybridlm.demo import run_demo

    run_demo(a.out, steps=a.steps, objectives=a.objectives, seed=a.seed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hlm", description="hybridlm: one transformer, four pretraining objectives")
    sub = p.add_subparsers(dest="command", required=True)

    tk = sub.add_parser("tokenizer", help="tokenizer commands").add_subparsers(dest="tokenizer_command", required=True)
    t = tk.add_parser("train", help="train a byte-level BPE (or WordPiece) tokenizer")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--kind", default="bpe", choices=["bpe", "wordpiece"])
    t.add_argument("--min-frequency", type=int, default=2)
    t.set_defaults(func=cmd_tokenizer_train)

    pr = sub.add_parser("prepare", help="tokenize text into memmapped token shards")
    pr.add_argument("--input", nargs="+", required=True, help="text: a paragraph a line, a blank line between documents")
    pr.add_argument("--tokenizer", required=True, help="directory with tokenizer.json")
    pr.add_argument("--out", required=True)
    pr.add_argument("--valid", nargs="+", help="validation text (default: hold out the corpus tail)")
    pr.add_argument("--val-fraction", type=float, default=0.005)
    pr.set_defaults(func=cmd_prepare)

    tr = sub.add_parser("train", help="train a model with one of the four objectives")
    _train_args(tr)
    tr.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="train all four objectives on built-in grammar text and compare them")
    d.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    d.add_argument("--steps", type=int, default=None, help="training steps per objective")
    d.add_argument("--objectives", nargs="+", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    from hybridlm import cli_eval

    cli_eval.add_commands(sub)
    return p


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"hlm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("hlm: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
