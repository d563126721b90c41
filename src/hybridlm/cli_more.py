"""`hlm export`, `hlm report`."""


def cmd_export(a):
    from hybridlm.export import export_run

    out = export_run(a.run, a.out)
    print(f"exported {a.run} to {out}")


def add_commands(sub):
    e = sub.add_parser("export", help="write a run as a Hugging Face transformers model directory")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_export)
