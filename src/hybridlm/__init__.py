"""hybridlm: one transformer, four pretraining objectives (causal, masked, hybrid, diffusion)."""

__version__ = "0.1.0"

from hybridlm.errors import UserError  # noqa: E402,F401
