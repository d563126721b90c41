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


def test_every_compatibility_shim_names_the_release_it_goes_in_and_is_gone_by_then():
    """The README's rule: a shim is marked `# shim (until X.Y)` and removed when the version reaches X.Y."""
    import hybridlm

    source = Path(hybridlm.__file__).parent
    version = tuple(int(p) for p in hybridlm.__version__.split(".")[:2])
    marks = [(f, m) for f in source.rglob("*.py") for m in re.findall(r"# shim \(until ([^)]*)\)", f.read_text())]
    assert marks, "the shims are marked"
    for f, until in marks:
        assert re.fullmatch(r"\d+\.\d+", until), f"{f}: a shim names its release as X.Y (got {until!r})"
        assert tuple(map(int, until.split("."))) > version, f"{f}: this shim was due to go in {until}"
    assert f"Today's {_NUMBERS[len(marks)]} go in" in README.read_text(encoding="utf-8"), "the README counts them"


_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
