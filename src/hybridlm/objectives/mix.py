"""Any registered objectives mixed per sequence, with a schedule for the ratios.

`mix = "causal:1,mntp:15"` gives each row of a step to one objective: the rows per objective come
from stochastic rounding (one uniform draw; each count within one of B * share, the counts
summing to B) and a random permutation, so any mix works on any number of processes. Each
objective corrupts the step's windows as it would alone and the mix keeps its rows; each
objective's loss weights are renormalised over its rows and scaled by its share of the rows, so
the loss is the share-weighted mean of the objectives' own means (GPT-BERT's per-mode means).

Schedules: `mix_end` moves the shares linearly from `mix` (start of training) to `mix_end` (its
end); `mix_phases = [[0.0, "causal:1"], [0.5, "mntp:1"], ...]` switches between mixes at fractions
of training (AntLM's alternating causal and masked phases). Validation reports each objective's
loss (`val_ce_NAME`) and weighs them by the final shares; everything else the package asks (scorers,
generation, export, bits per byte) is answered by the objectives in the mix.
"""

from __future__ import annotations

import math
import re

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import Batch, Objective

_ITEM = re.compile(r"\s*([A-Za-z][\w-]*)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*")


def parse_mix(text: str) -> dict[str, float]:
    """"causal:1,mntp:15" -> {"causal": 1.0, "mntp": 15.0} (relative weights, not normalised)."""
    out: dict[str, float] = {}
    for part in str(text).split(","):
        m = _ITEM.fullmatch(part)
        if not m:
            raise UserError(f"mix entry {part.strip()!r} is not NAME:WEIGHT (e.g. --mix causal:1,mntp:15)")
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    if not out or sum(out.values()) <= 0:
        raise UserError(f"mix {text!r} has no positive weight")
    return out


def parse_phases(phases) -> list[tuple[float, dict[str, float]]]:
    """[[fraction, mix], ...] (config files) or ["fraction@mix", ...] (repeated --mix-phases flags)."""
    out = []
    for entry in phases:
        if isinstance(entry, str) and "@" in entry:
            entry = entry.split("@", 1)
        try:
            fraction, mix = float(entry[0]), parse_mix(entry[1])
        except (TypeError, ValueError, IndexError):
            raise UserError(f"mix_phases entry {entry!r} must be [fraction, mix] or 'fraction@mix' (e.g. 0.5@mntp:1)") from None
        out.append((fraction, mix))
    if out and (out[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(out, out[1:])) or out[-1][0] >= 1):
        raise UserError("mix_phases must start at fraction 0 and increase, below 1")
    return out


def _restrict(weights: torch.Tensor, counted: torch.Tensor, rows: torch.Tensor, share: float) -> torch.Tensor:
    """An objective's loss weights kept on `rows` only, as if it had normalised over those rows, and
    scaled by their share of the batch. Every objective divides by the number of positions it counts
    (`counted`: its token_mask), whatever its weights are (a diffusion ELBO weight, an MTP head's
    weight), so the factor is count(all rows) / count(these rows) — per head for [B, L, H] weights."""
    total, kept = counted.sum((0, 1)), counted[rows].sum((0, 1))
    out = torch.zeros_like(weights)
    out[rows] = weights[rows] * torch.where(kept > 0, total / kept.clamp(min=1), torch.zeros_like(total, dtype=weights.dtype)) * share
    return out


class MixObjective(Objective):
    name = "mix"
    config_keys = ("mix", "mix_end", "mix_phases")
    attention = "mixed"
    loss_label = "mixed CE"
    # the demo: GPT-BERT's two modes, moving from mostly masked to even over training
    demo_config = {"mix": "causal:1,mntp:3", "mix_end": "causal:1,mntp:1"}
    derive_from_components = True  # a preset (hybrid) states its answers as class attributes instead

    def __init__(self, vocab_size, components: dict[str, Objective], start: dict[str, float], end: dict[str, float] | None = None,
                 phases=None, labels: dict[str, str] | None = None, **kw):
        super().__init__(vocab_size, **kw)
        self.components = components  # in the order rows are assigned
        self.order = list(components)
        self.start, self.end, self.phases = start, end, list(phases or [])
        self.labels = {k: (labels or {}).get(k, k) for k in self.order}
        if self.derive_from_components:
            self._derive()

    # ------------------------------------------------------------ construction
    @staticmethod
    def _mixes(cfg) -> tuple[dict, dict | None, list]:
        if not cfg.mix and not cfg.mix_phases:
            raise UserError("the mix objective needs --mix, e.g. --mix causal:1,mntp:15 (or mix_phases)")
        phases = parse_phases(cfg.mix_phases)
        if phases and cfg.mix_end:
            raise UserError("give mix_end (a linear schedule) or mix_phases (phases), not both")
        start = parse_mix(cfg.mix) if cfg.mix else phases[0][1]
        return start, parse_mix(cfg.mix_end) if cfg.mix_end else None, phases

    @classmethod
    def _names(cls, cfg) -> list[str]:
        start, end, phases = cls._mixes(cfg)
        names = list(dict.fromkeys([*start, *(end or {}), *(n for _, m in phases for n in m)]))
        from hybridlm.objectives import objective_class

        for n in names:
            if issubclass(objective_class(n), MixObjective):
                raise UserError(f"a mix cannot contain {n!r} (itself a mix); list its objectives instead")
        return names

    @classmethod
    def identity_keys(cls, cfg) -> tuple[str, ...]:
        from hybridlm.objectives import objective_class

        return cls.config_keys + tuple(k for n in cls._names(cfg) for k in objective_class(n).identity_keys(cfg))

    @classmethod
    def check_config(cls, cfg):
        from hybridlm.objectives import objective_class

        for n in cls._names(cfg):
            objective_class(n).check_config(cfg)

    @classmethod
    def from_config(cls, cfg, vocab_size, data_dir=None):
        from hybridlm.objectives import objective_class

        start, end, phases = cls._mixes(cfg)
        components = {n: objective_class(n).from_config(cfg, vocab_size, data_dir) for n in cls._names(cfg)}
        return cls(vocab_size, components, start, end, phases, document_mask=cfg.document_mask, z_loss=cfg.z_loss)

    # ------------------------------------------------------------ the schedule
    def shares(self, progress: float) -> list[float]:
        """Each component's share of the rows at this point of training (in `order`)."""
        if self.phases:
            mix = [m for f, m in self.phases if f <= progress][-1] if progress >= 0 else self.phases[0][1]
            weights = [mix.get(n, 0.0) for n in self.order]
        elif self.end is not None:
            p = min(max(progress, 0.0), 1.0)
            a, b = (sum(m.values()) for m in (self.start, self.end))
            weights = [(1 - p) * self.start.get(n, 0.0) / a + p * self.end.get(n, 0.0) / b for n in self.order]
        else:
            weights = [self.start.get(n, 0.0) for n in self.order]
        total = sum(weights)
        return weights if total == 1 else [w / total for w in weights]

    # ------------------------------------------------------------ training
    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        B = len(ids)
        shares = self.shares(progress if train else 1.0)
        u = torch.rand((), generator=generator).item()
        bounds, cum = [0], 0.0
        for s in shares[:-1]:
            cum += s
            bounds.append(min(B, max(bounds[-1], int(math.floor(B * cum + u)))))
        bounds.append(B)
        perm = torch.randperm(B, generator=generator)
        out = None
        for i, name in enumerate(self.order):
            rows = perm[bounds[i] : bounds[i + 1]]
            if len(rows) == 0:
                continue
            part = self.components[name].corrupt(ids, generator, progress, train)
            part.loss_weights = _restrict(part.loss_weights, part.token_mask, rows, len(rows) / B)
            if part.extra_weights is not None:  # multi-token heads: each head normalised over its own targets
                part.extra_weights = _restrict(part.extra_weights, part.extra_weights > 0, rows, len(rows) / B)
            if out is None:  # its tensors may be views of `ids`: copied before other rows are written in
                out = Batch(**{k: None if v is None else v.clone() for k, v in vars(part).items()})
                if out.prefix_lengths is None:
                    out.prefix_lengths = torch.zeros(B, dtype=torch.long)
                continue
            for field in ("extra_targets", "extra_weights"):  # only some objectives have them: zeros elsewhere
                if getattr(out, field) is None and getattr(part, field) is not None:
                    setattr(out, field, torch.zeros_like(getattr(part, field)))
            for field in ("input_ids", "targets", "loss_weights", "is_causal", "token_mask", "document_ids", "prefix_lengths",
                          "extra_targets", "extra_weights"):
                target, source = getattr(out, field), getattr(part, field)
                if target is not None:
                    target[rows] = source[rows] if source is not None else 0
        if not bool(out.prefix_lengths.any()):
            out.prefix_lengths = None
        return out

    # ------------------------------------------------------------ what the rest of the package asks
    def validation_views(self):
        """One view per objective (a mix of that objective alone: the same draws as in training),
        weighted by the final shares."""
        final = dict(zip(self.order, self.shares(1.0)))
        return {self.labels[n]: (self._alone(n), final[n]) for n in self.order}

    def _alone(self, name) -> "MixObjective":
        view = MixObjective.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.start, view.end, view.phases = {name: 1.0}, None, []
        return view

    def _derive(self):
        final = dict(zip(self.order, self.shares(1.0)))
        by_share = sorted(self.order, key=lambda n: -final[n])
        comps = [self.components[n] for n in by_share]
        self.scorers = tuple(dict.fromkeys(s for c in comps for s in c.scorers))
        if "causal" in self.scorers and "mntp" in self.scorers:
            self.scorers += ("fused",)
        self.perplexity_scorers = tuple(dict.fromkeys(s for c in comps for s in c.perplexity_scorers))
        self.generation = next((c.generation for c in comps if c.generation == "causal"), None) or next(
            (c.generation for c in comps if c.generation), None)
        self.prompt_as_prefix = next((c.prompt_as_prefix for c in comps if c.generation == self.generation), False)
        self.infill_shift = next((c.infill_shift for c in comps if c.infill_shift is not None), None)
        self.export_causal_lm = any(c.export_causal_lm for c in comps)
        masked = any(c.export_masked_lm is not None for c in comps)
        self.export_masked_lm = ("masked_lm" if self.export_causal_lm else "") if masked else None
        self.forbid_mask_prediction = any(c.forbid_mask_prediction for c in comps)
        self.likelihood, self.likelihood_view = None, ""
        for kind in ("exact", "bound"):
            found = next((n for n in by_share if self.components[n].likelihood == kind), None)
            if found:
                self.likelihood, self.likelihood_view = kind, self.labels[found]
                break
        self.demo_sample_text = comps[0].demo_sample_text
        self.attention = "mixed" if len({c.attention for c in comps}) > 1 else comps[0].attention

    def _diffusion(self):
        for c in self.components.values():
            if hasattr(c, "subset_masks"):
                return c
        raise UserError("this mix has no diffusion objective: the elbo scorer and unmasking schedule need one")

    def subset_masks(self, n, generator, samples=1):
        return self._diffusion().subset_masks(n, generator, samples)

    def time_mask(self, *args, **kw):
        return self._diffusion().time_mask(*args, **kw)

    def unmask_fraction(self, t, t_next):
        try:
            return self._diffusion().unmask_fraction(t, t_next)
        except UserError:
            return super().unmask_fraction(t, t_next)
