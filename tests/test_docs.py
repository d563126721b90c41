"""What a user reads names what the code has: `hlm --help` and the README name every registered objective,
scorer, sampler and BabyLM task (a new one added without its line fails here)."""

import re
from pathlib import Path

import pytest
from helpers import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)  # argparse wraps lines, at hyphens too


def _registries():
    from hybridlm.evaluate.babylm import TASKS
    from hybridlm.objectives import OBJECTIVES
    from hybridlm.samplers import SAMPLERS
    from hybridlm.scorers import SCORERS

    return {
        "objective": (list(OBJECTIVES), ["train", "--help"]),
        "scorer": (list(SCORERS), ["eval", "babylm", "--help"]),
        "sampler": (list(SAMPLERS), ["generate", "--help"]),
        "task": (list(TASKS), ["eval", "babylm", "--help"]),
    }


@pytest.mark.parametrize("kind", ["objective", "scorer", "sampler", "task"])
def test_help_and_readme_name_every_registered_name(kind, capsys):
    names, command = _registries()[kind]
    proc = run_cli(capsys, *command)
    assert proc.returncode == 0
    shown, readme = _squeezed(proc.stdout), README.read_text(encoding="utf-8")
    assert [n for n in names if n not in shown] == [], f"hlm {' '.join(command)} does not name these {kind}s"
    assert [n for n in names if f"`{n}`" not in readme] == [], f"the README does not name these {kind}s"
