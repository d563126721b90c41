from pathlib import Path

import pytest

from hybridlm.config import load_config

# papers' recipes (docs/recipes.md), named for the paper, not the objective
RECIPES = ("gpt-bert", "diffusion-2025-winner")
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.toml"))


def test_there_are_reference_configs_for_both_tracks_and_all_objectives():
    names = {(p.parent.name, p.stem) for p in CONFIGS}
    for track in ("babylm-strict-small", "babylm-strict"):
        for obj in ("causal", "masked", "hybrid", "diffusion"):
            assert (track, obj) in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_reference_config_is_valid(path):
    from hybridlm.objectives import OBJECTIVES

    cfg = load_config(path).validate()
    assert cfg.objective == path.stem or (path.stem in RECIPES and cfg.objective in OBJECTIVES)
    stages = cfg.stages()
    assert [L for _, L, _ in stages] == ([128] if path.stem == "diffusion-2025-winner" else [128, 256, 512])
    assert len({rows * L for _, L, rows in stages}) == 1  # the same tokens per step in every stage
    assert "hours" in path.read_text().splitlines()[1]
    assert cfg.max_epochs == 10 and cfg.checkpoint_schedule == path.parent.name  # BabyLM 2025: the cap and the schedule
