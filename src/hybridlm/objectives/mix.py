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
from dataclasses import dataclass

import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec
from hybridlm.objectives.base import Batch, Objective, Options, option
from hybridlm.objectives.capabilities import Attention, Capabilities, Generation, Infill, Likelihood
from hybridlm.objectives.registry import objective_class


def _token_ce():
    from hybridlm.losses import TokenCE

    return TokenCE


_ITEM = re.compile(r"\s*([A-Za-z][\w-]*)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*")


def parse_mix(text: str) -> dict[str, float]:
    """ "causal:1,mntp:15" -> {"causal": 1.0, "mntp": 15.0} (relative weights, not normalised)."""
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
            raise UserError(
                f"mix_phases entry {entry!r} must be [fraction, mix] or 'fraction@mix' (e.g. 0.5@mntp:1)"
            ) from None
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
    out[rows] = (
        weights[rows]
        * torch.where(kept > 0, total / kept.clamp(min=1), torch.zeros_like(total, dtype=weights.dtype))
        * share
    )
    return out


@dataclass(frozen=True)
class MixOptions(Options):
    mix: str = option("", "mix: objectives per row with relative weights, e.g. causal:1,mntp:15")
    mix_end: str = option("", "mix: the mix at the end of training (the shares move linearly from --mix)")
    mix_phases: list = option(
        [], "mix: repeatable FRACTION@MIX, e.g. --mix-phases 0@causal:1 --mix-phases 0.5@mntp:1 (AntLM)"
    )

    def check_together(self):
        self.schedule()
        for n in self.names():
            if issubclass(objective_class(n), MixObjective):
                raise UserError(f"a mix cannot contain {n!r} (itself a mix); list its objectives instead")
            if objective_class(n).two_stream:
                raise UserError(
                    f"a mix cannot contain {n!r}: its rows are twice a window long (x_t and x_0); train it alone"
                )

    def schedule(self) -> tuple[dict, dict | None, list]:
        """(start mix, end mix or None, phases)."""
        if not self.mix and not self.mix_phases:
            raise UserError("the mix objective needs --mix, e.g. --mix causal:1,mntp:15 (or mix_phases)")
        phases = parse_phases(self.mix_phases)
        if phases and self.mix_end:
            raise UserError("give mix_end (a linear schedule) or mix_phases (phases), not both")
        start = parse_mix(self.mix) if self.mix else phases[0][1]
        return start, parse_mix(self.mix_end) if self.mix_end else None, phases

    def names(self) -> list[str]:
        start, end, phases = self.schedule()
        return list(dict.fromkeys([*start, *(end or {}), *(n for _, m in phases for n in m)]))


def mix_capabilities(by_share: list[tuple[str, Capabilities]], loss_label: str = "mixed CE") -> Capabilities:
    """A mix's record, a pure function of its components' records ((label, record), largest final share first)."""
    caps = [c for _, c in by_share]
    scorers = tuple(dict.fromkeys(s for c in caps for s in c.scorers))
    # left to right first, then unmasking (largest share first), then <mask> tokens after the text
    ranked = [(Generation.CAUSAL,), (Generation.UNMASK, Generation.BLOCKS, Generation.DENOISE), (Generation.MASKS,)]
    generation = next((c.generation for kinds in ranked for c in caps if c.generation in kinds), Generation.NONE)
    # other views: <mask> tokens after the text need nothing of the objective but where it reads a <mask>
    also = (Generation.MASKS,) if generation is not Generation.MASKS and any(
        c.generation is Generation.MASKS for c in caps) else ()  # fmt: skip
    likelihood, view = Likelihood.NONE, ""
    for kind in (Likelihood.EXACT, Likelihood.BOUND):
        found = next((label for label, c in by_share if c.likelihood is kind), None)
        if found is not None:
            likelihood, view = kind, found
            break
    return Capabilities(
        attention=Attention.MIXED if len({c.attention for c in caps}) > 1 else caps[0].attention,
        likelihood=likelihood,
        likelihood_view=view,
        scorers=scorers,
        loss_label=loss_label,
        perplexity_scorers=tuple(dict.fromkeys(s for c in caps for s in c.perplexity_scorers)),
        generation=generation,
        also_generates=also,
        prompt_as_prefix=next((c.prompt_as_prefix for c in caps if c.generation is generation), False),
        infill=next((c.infill for c in caps if c.infill is not Infill.NONE), Infill.NONE),
        export=frozenset(v for c in caps for v in c.export),
        forbid_mask_prediction=any(c.forbid_mask_prediction for c in caps),
    )


class MixObjective(Objective):
    name = "mix"
    Options = MixOptions
    capabilities = Capabilities(Attention.MIXED, loss_label="mixed CE")  # each mix derives its own from its components
    # the demo: GPT-BERT's two modes, moving from mostly masked to even over training
    demo_config = {"mix": "causal:1,mntp:3", "mix_end": "causal:1,mntp:1"}

    def __init__(
        self,
        vocab_size,
        components: dict[str, Objective],
        start: dict[str, float],
        end: dict[str, float] | None = None,
        phases=None,
        labels: dict[str, str] | None = None,
        options: Options | None = None,
        **kw,
    ):
        super().__init__(vocab_size, options, **kw)
        # a mix folds token CEs; one bound of another form (GIDD's KL) reads the CE rows as rows without noise
        TokenCE = _token_ce()
        own = {name: type(c.loss_term()) for name, c in components.items() if type(c.loss_term()) is not TokenCE}
        for name, component in components.items():
            if component.reads_soft_inputs:
                raise UserError(f"{name} with Duo's curriculum reads soft inputs, which a mix does not merge: train it "
                                "on its own, or drop --duo-curriculum-end")  # fmt: skip
        if len(set(own.values())) > 1:
            raise UserError(f"{' and '.join(own)} cannot be mixed: their losses are of two different forms")
        self.components = components  # in the order rows are assigned
        self.order = list(components)
        self.start, self.end, self.phases = start, end, list(phases or [])
        self.labels = {k: (labels or {}).get(k, k) for k in self.order}
        if type(self).capabilities is MixObjective.capabilities:  # a preset (hybrid) states its own record
            final = dict(zip(self.order, self.shares(1.0)))
            by_share = sorted(self.order, key=lambda n: -final[n])
            self.capabilities = mix_capabilities([(self.labels[n], self.components[n].capabilities) for n in by_share])
            self.demo_sample_text = self.components[by_share[0]].demo_sample_text

    # ------------------------------------------------------------ construction
    @classmethod
    def component_names(cls, options) -> list[str]:
        """The objectives whose own options the mix reads from the same config values."""
        return options.names()

    @classmethod
    def read_options(cls, values):
        options = super().read_options(values)
        for n in cls.component_names(options):
            objective_class(n).read_options(values)
        return options

    @classmethod
    def identity(cls, values):
        options = cls.Options.from_values(values)
        out = options.values()
        for n in cls.component_names(options):
            out.update(objective_class(n).identity(values))
        return out

    @classmethod
    def from_config(cls, cfg, vocab_size, data_dir=None):
        options = cls.read_options(cfg.options)
        start, end, phases = options.schedule()
        components = {n: objective_class(n).from_config(cfg, vocab_size, data_dir) for n in options.names()}
        return cls(vocab_size, components, start, end, phases, options=options, document_mask=cfg.document_mask)

    def loss_term(self, z_loss: float = 0.0):
        """The token CE, or a component's own bound (GIDD's), which then reads every row (`corrupt` gives the CE
        rows noise that makes its term their CE)."""
        for component in self.components.values():
            if not isinstance(component.loss_term(), _token_ce()):
                return component.loss_term(z_loss)
        return super().loss_term(z_loss)

    # ------------------------------------------------------------ the schedule
    def shares(self, fraction_done: float) -> list[float]:
        """Each component's share of the rows at this point of training (in `order`)."""
        if self.phases:
            mix = [m for f, m in self.phases if f <= fraction_done][-1] if fraction_done >= 0 else self.phases[0][1]
            weights = [mix.get(n, 0.0) for n in self.order]
        elif self.end is not None:
            p = min(max(fraction_done, 0.0), 1.0)
            a, b = (sum(m.values()) for m in (self.start, self.end))
            weights = [(1 - p) * self.start.get(n, 0.0) / a + p * self.end.get(n, 0.0) / b for n in self.order]
        else:
            weights = [self.start.get(n, 0.0) for n in self.order]
        total = sum(weights)
        return weights if total == 1 else [w / total for w in weights]

    # ------------------------------------------------------------ training
    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> Batch:
        B = len(ids)
        shares = self.shares(fraction_done if train else 1.0)
        u = torch.rand((), generator=generator).item()
        bounds, cum = [0], 0.0
        for s in shares[:-1]:
            cum += s
            bounds.append(min(B, max(bounds[-1], int(math.floor(B * cum + u)))))
        bounds.append(B)
        perm = torch.randperm(B, generator=generator)
        out, plain = None, []  # plain: the rows of objectives without a noise record
        for i, name in enumerate(self.order):
            rows = perm[bounds[i] : bounds[i + 1]]
            if len(rows) == 0:
                continue
            part = self.components[name].corrupt(ids, generator, fraction_done, train)
            part.loss_weights = _restrict(part.loss_weights, part.token_mask, rows, len(rows) / B)
            if part.extra_weights is not None:  # multi-token heads: each head normalised over its own targets
                part.extra_weights = _restrict(part.extra_weights, part.extra_weights > 0, rows, len(rows) / B)
            if part.noise is not None:  # its own term's training weights, scaled as its loss weights are
                part.noise = part.noise.clone()
                part.noise[..., -1] = _restrict(part.noise[..., -1], part.token_mask, rows, len(rows) / B)
            else:
                plain.append(rows)
            part = _columns(part)
            if out is None:  # its tensors may be views of `ids`: copied before other rows are written in
                out = {k: None if v is None else v.clone() for k, v in part.items()}
                if out["prefix_lengths"] is None:
                    out["prefix_lengths"] = torch.zeros(B, dtype=torch.long)
                continue
            for key in ("extra_targets", "extra_weights", "noise"):  # only some objectives have them: zeros elsewhere
                if out[key] is None and part[key] is not None:
                    out[key] = torch.zeros_like(part[key])
            for key, target in out.items():
                if target is not None:
                    target[rows] = part[key][rows] if part[key] is not None else 0
        if out["noise"] is not None and plain:  # CE rows in a noise term's form: alpha 1, no mask, no uniform
            rows = torch.cat(plain)
            out["noise"][rows] = 0.0
            out["noise"][rows, :, 0] = 1.0
            out["noise"][rows, :, -1] = out["loss_weights"][rows]
        if not bool(out["prefix_lengths"].any()):
            out["prefix_lengths"] = None
        attention = AttentionSpec(out.pop("is_causal"), out.pop("document_ids"), out.pop("prefix_lengths"))
        return Batch(**out, attention=attention)

    # ------------------------------------------------------------ what the rest of the package asks
    def validation_views(self):
        """One view per objective (a mix of that objective alone: the same draws as in training),
        weighted by the final shares."""
        final = dict(zip(self.order, self.shares(1.0)))
        return {self.labels[n]: (self._alone(n), final[n]) for n in self.order}

    def _alone(self, name) -> MixObjective:
        view = MixObjective.__new__(type(self))  # the same components, options and record
        view.__dict__.update(self.__dict__)
        view.start, view.end, view.phases = {name: 1.0}, None, []
        return view

    def bound(self):
        """The component whose likelihood is a bound (the elbo scorer and the unmasking schedule read it)."""
        for c in self.components.values():
            if c.capabilities.likelihood is Likelihood.BOUND:
                return c.bound()
        raise UserError("this mix has no diffusion objective: the elbo scorer and unmasking schedule need one")

    def alpha(self, t):
        try:
            return self.bound().alpha(t)
        except UserError:
            return super().alpha(t)


def _columns(batch: Batch) -> dict:
    """A batch's per-row tensors by name (the attention's too), for merging rows of several batches."""
    a = batch.attention
    return {
        "input_ids": batch.input_ids,
        "targets": batch.targets,
        "loss_weights": batch.loss_weights,
        "token_mask": batch.token_mask,
        "is_causal": a.is_causal,
        "document_ids": a.document_ids,
        "prefix_lengths": a.prefix_lengths,
        "extra_targets": batch.extra_targets,
        "extra_weights": batch.extra_weights,
        "noise": batch.noise,
    }
