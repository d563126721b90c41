"""Optimizers and the moving average of the weights, as the BabyLM winners train.

- `adamw`: PyTorch's AdamW (fused where it can be).
- `lamb`: LAMB as GPT-BERT's and the 2025 diffusion winner's `lamb.py` compute it (the two files are the
  same): Adam's bias-corrected direction m / (sqrt(v) + eps), plus weight decay, and on the decayed group
  scaled by the trust ratio ||w|| / ||update||; the gains and biases (no decay) take the plain direction.
- `muon`: PyTorch's Muon (orthogonalised momentum) for the blocks' weight matrices, AdamW for the
  embedding, the norms and the output head, as Muon's documentation and modded-nanogpt prescribe; its
  learning rate is matched to AdamW's (`adjust_lr_fn="match_rms_adamw"`), so one --lr and schedule serve both.

A step whose loss or gradient is not finite is skipped on the device (`found_inf`, as the fused AdamW
does): nothing here waits for the device.

`WeightEMA` keeps an fp32 exponential moving average of the weights on the device: GPT-BERT's update
(decay d every step) or, with warm-up, the 2025 diffusion winner's d_n = min(d, (1 + n) / (10 + n)).
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("adamw", "lamb", "muon")


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020) in the BabyLM winners' form; see the module's docstring."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.found_inf: torch.Tensor | None = None  # 1.0: skip this step (set by the trainer, on the device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        skip = self.found_inf
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, decay, lr = group["eps"], group["weight_decay"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # the step count is a tensor, as torch's fused Adam keeps it: saved with the moments
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step, m, v, grad = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
                new_step = step + 1
                new_m = m * beta1 + grad * (1 - beta1)
                new_v = v * beta2 + grad * grad * (1 - beta2)
                update = (new_m / (1 - beta1**new_step)) / ((new_v / (1 - beta2**new_step)).sqrt() + eps)
                ratio = None
                if decay > 0:
                    update = update + p * decay
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                new_p = p - update * (lr * ratio if ratio is not None else lr)
                if skip is not None:  # a bad step changes nothing, decided on the device
                    keep = skip.to(p.device) > 0
                    new_step, new_m, new_v = (torch.where(keep, a, b) for a, b in ((step, new_step), (m, new_m),
                                                                                    (v, new_v)))  # fmt: skip
                    new_p = torch.where(keep, p, new_p)
                step.copy_(new_step)
                m.copy_(new_m)
                v.copy_(new_v)
                p.copy_(new_p)
        return loss


class ChainedOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters acting as one (Muon for the matrices, AdamW for the rest):
    one param_groups list, one state, one step, so the schedule, checkpoints and resume see one optimizer."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        super().__init__([p for o in optimizers for g in o.param_groups for p in g["params"]], {})

    def add_param_group(self, param_group):  # the children own the groups (Optimizer.__init__ calls this)
        pass

    # the children's groups and state, read afresh: load_state_dict replaces a child's group dicts
    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    @param_groups.setter
    def param_groups(self, value):
        pass

    @property
    def state(self):
        merged = {}
        for o in self.optimizers:
            merged.update(o.state)
        return merged

    @state.setter
    def state(self, value):
        pass

    def step(self, closure=None):
        for o in self.optimizers:
            o.step()
        return None

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        sds = [o.state_dict() for o in self.optimizers]
        state, groups, offset = {}, [], 0
        for sd in sds:
            index = {i: i + offset for g in sd["param_groups"] for i in g["params"]}
            state.update({index[i]: s for i, s in sd["state"].items()})
            groups += [{**g, "params": [index[i] for i in g["params"]]} for g in sd["param_groups"]]
            offset += len(index)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Each child takes its own groups (positionally, as Optimizer.load_state_dict maps them) and their state;
        keys may be indices or parameter names (torch.distributed.checkpoint passes names)."""
        start = 0
        for o in self.optimizers:
            groups = state_dict["param_groups"][start : start + len(o.param_groups)]
            keys = {k for g in groups for k in g["params"]}
            o.load_state_dict({"state": {k: v for k, v in state_dict["state"].items() if k in keys},
                               "param_groups": groups})  # fmt: skip
            start += len(o.param_groups)


def _groups(params, weight_decay: float) -> list[dict]:
    """Weight decay on the matrices (group 0), none on gains and biases (group 1)."""
    params = list(params)
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(cfg, model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names over the model's parameters (see the module's docstring)."""
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "lamb":
        return Lamb(_groups(model.parameters(), cfg.weight_decay), lr=cfg.lr, betas=betas, eps=cfg.adam_eps)
    if cfg.optimizer == "muon":
        matrices = [p for block in model.blocks for p in block.parameters() if p.dim() == 2]
        chosen = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if id(p) not in chosen]
        muon = torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                                adjust_lr_fn="match_rms_adamw")  # fmt: skip
        adamw = torch.optim.AdamW(_groups(rest, cfg.weight_decay), lr=cfg.lr, betas=betas, eps=cfg.adam_eps)
        return ChainedOptimizer([muon, adamw])
    return torch.optim.AdamW(
        _groups(model.parameters(), cfg.weight_decay), lr=cfg.lr, betas=betas, eps=cfg.adam_eps, fused=fused
    )


def apply_config(optimizer: torch.optim.Optimizer, cfg) -> None:
    """The config's betas and weight decay on every group (after a resume, which may have changed them): decay on
    the groups of matrices, none on gains and biases (as `_groups` and Muon's group split them)."""
    for group in optimizer.param_groups:
        group["weight_decay"] = cfg.weight_decay if all(p.dim() >= 2 for p in group["params"]) else 0.0
        if "betas" in group:
            group["betas"] = (cfg.beta1, cfg.beta2)


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer skips a step flagged by `found_inf` on the device (no wait for it)."""
    return bool(optimizer.defaults.get("fused")) or isinstance(optimizer, Lamb)


class WeightEMA:
    """An fp32 exponential moving average of a model's weights, on the device: shadow <- shadow - (1 - d)
    (shadow - w) after each optimizer step; with warm-up, d_n = min(d, (1 + n) / (10 + n)) at update n."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False):
        named = list(model.named_parameters())
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.decay, self.warmup = decay, warmup
        self.updates = 0  # optimizer steps averaged so far (the run's step: restored on resume)

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        diff = torch._foreach_sub(self.shadow, [p.detach().float() for p in self.params])
        torch._foreach_add_(self.shadow, diff, alpha=-(1.0 - decay))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """name -> the averaged weight (whole, on the CPU; FSDP2's shards gathered)."""
        full = [s.full_tensor() if hasattr(s, "full_tensor") else s for s in self.shadow]
        return {n: s.detach().cpu() for n, s in zip(self.names, full)}

    @torch.no_grad()
    def load_state_dict(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        for n, s in zip(self.names, self.shadow):
            value = weights[n].to(torch.float32)
            if hasattr(s, "full_tensor"):  # FSDP2: this process's shard of the whole weight
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value.to(s.device_mesh.device_type), s.device_mesh, s.placements)
            s.copy_(value)
        self.updates = updates

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights and the averaged ones (twice: as they were)."""
        for p, s in zip(self.params, self.shadow):
            raw = p.detach().clone()
            p.copy_(s)
            s.copy_(raw)
