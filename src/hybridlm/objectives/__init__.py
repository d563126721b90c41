"""The four objectives behind one interface: corrupt(ids) -> Batch, loss(model, batch)."""

from hybridlm.errors import UserError
from hybridlm.objectives.base import Batch, Objective
from hybridlm.objectives.causal import CausalObjective
from hybridlm.objectives.diffusion import DiffusionObjective
from hybridlm.objectives.hybrid import HybridObjective
from hybridlm.objectives.masked import MaskedObjective

OBJECTIVES = {c.name: c for c in (CausalObjective, MaskedObjective, HybridObjective, DiffusionObjective)}


def build_objective(name: str, vocab_size: int, **options) -> Objective:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r} (choose one of: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name](vocab_size, **options)


__all__ = ["Batch", "Objective", "OBJECTIVES", "build_objective"]
