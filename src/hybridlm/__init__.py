"""hybridlm: one transformer, the pretraining objective a switch over it (causal, masked, hybrid, diffusion, block
diffusion, mntp, prefix, mix, ...; `hybridlm.objectives.OBJECTIVES` lists them)."""

__version__ = "0.1.0"

from hybridlm.errors import UserError  # noqa: E402,F401
