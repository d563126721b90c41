"""`hlm export`, `hlm report`."""


def cmd_export(a):
    from hybridlm.export import export_run

    out = export_run(a.run, a.out)
    print(f"exported {a.run} to {out}")


def cmd_report(a):
    from hybridlm.report import make_report

    path = make_report(a.runs, a.out, fmt=a.format, samples=not a.no_samples, seed=a.seed)
    print(f"report written to {path}")


def add_commands(sub):
    r = sub.add_parser("report", help="plots and tables for one or more runs (Markdown or HTML with PNGs)")
    r.add_argument("runs", nargs="+", metavar="RUN")
    r.add_argument("--out", required=True)
    r.add_argument("--format", default="md", choices=["md", "html"])
    r.add_argument("--no-samples", action="store_true")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_report)

    e = sub.add_parser("export", help="write a run as a Hugging Face transformers model directory")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_export)
