"""The objectives behind one interface (`Objective`), and the registry that names them.

Adding an objective is one file with one class, registered with `@register` (or
`register(MyObjective)` from anywhere, e.g. a test): training, validation, scoring, generation,
export, the demo and reports then ask the class what they need.
"""

from hybridlm.errors import UserError
from hybridlm.objectives.base import Batch, Objective
from hybridlm.objectives.causal import CausalObjective
from hybridlm.objectives.diffusion import DiffusionObjective
from hybridlm.objectives.hybrid import HybridObjective
from hybridlm.objectives.masked import MaskedObjective
from hybridlm.objectives.mix import MixObjective
from hybridlm.objectives.mntp import MntpObjective
from hybridlm.objectives.prefix import PrefixObjective

OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Make `cls` available under `cls.name` (as --objective, in configs and in saved runs)."""
    if not (isinstance(cls, type) and issubclass(cls, Objective)) or cls.name == Objective.name:
        raise TypeError("register an Objective subclass with its own `name`")
    OBJECTIVES[cls.name] = cls
    return cls


for _cls in (CausalObjective, MaskedObjective, HybridObjective, DiffusionObjective, MntpObjective, PrefixObjective, MixObjective):
    register(_cls)

DEFAULT_OBJECTIVES = ("causal", "masked", "hybrid", "diffusion")  # the demo's default set


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r} (choose one of: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


def build_objective(cfg, vocab_size: int, data_dir=None) -> Objective:
    """The objective a TrainConfig names, with its options."""
    return objective_class(cfg.objective).from_config(cfg, vocab_size, data_dir)


__all__ = ["Batch", "Objective", "OBJECTIVES", "DEFAULT_OBJECTIVES", "register", "objective_class", "build_objective"]
