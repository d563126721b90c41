"""The objectives behind one interface (`Objective`), and the registry that names them.

Adding an objective is one file: an `Options` dataclass (its flags and config keys), one frozen
`Capabilities` record (what it can be asked for) and one class that corrupts a batch, registered
with `@register` (or `register(MyObjective)` from anywhere, e.g. a test, or the
`hybridlm.objectives` entry-point group of another package): training, validation, scoring,
generation, export, the demo and reports then ask the class what they need.
"""

from hybridlm.objectives.base import Batch, Objective, Options, option
from hybridlm.objectives.block_diffusion import BlockDiffusionObjective
from hybridlm.objectives.capabilities import Attention, Capabilities, ExportView, Generation, Infill, Likelihood
from hybridlm.objectives.causal import CausalObjective
from hybridlm.objectives.diffusion import DiffusionObjective
from hybridlm.objectives.gidd import GiddObjective
from hybridlm.objectives.hybrid import HybridObjective
from hybridlm.objectives.masked import MaskedObjective
from hybridlm.objectives.mix import MixObjective
from hybridlm.objectives.mntp import MntpObjective
from hybridlm.objectives.prefix import PrefixObjective
from hybridlm.objectives.registry import (
    OBJECTIVES,
    build_objective,
    objective_class,
    option_fields,
    option_owners,
    register,
)

for _cls in (CausalObjective, MaskedObjective, HybridObjective, DiffusionObjective, MntpObjective, PrefixObjective):
    register(_cls)
register(MixObjective)
register(BlockDiffusionObjective)
register(GiddObjective)

DEFAULT_OBJECTIVES = ("causal", "masked", "hybrid", "diffusion")  # the demo's default set

__all__ = [
    "Attention",
    "Batch",
    "Capabilities",
    "ExportView",
    "Generation",
    "Infill",
    "Likelihood",
    "Objective",
    "Options",
    "option",
    "OBJECTIVES",
    "DEFAULT_OBJECTIVES",
    "register",
    "objective_class",
    "build_objective",
    "option_fields",
    "option_owners",
]
