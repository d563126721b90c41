"""One training step as `hlm train` takes it on the CPU (batch moved, objective loss, backward, clip, fused
AdamW), fp32, for each objective: tokens/s (median of 7). For before/after comparisons of the step
itself on CPUs whose bf16 is too slow for bench/train_throughput.py: run it on two trees, alternating,
    PYTHONPATH=OLD_TREE/src python bench/train_step_fp32.py; python bench/train_step_fp32.py
"""

import json
import statistics
import time

import torch

from hybridlm.losses import loss_of
from hybridlm.model import build_model
from hybridlm.objectives import objective_class

torch.set_num_threads(2)
V, B, L = 4096, 8, 128
out = {}
for name in ("causal", "masked", "hybrid", "diffusion", "mntp", "prefix"):
    torch.manual_seed(0)
    model = build_model("tiny", V, {"d_model": 192, "n_head": 3, "d_ffn": 512, "n_layer": 4}, min_seq_len=L)
    obj = objective_class(name)(V)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (B, L + 1), generator=g)
    ids[:, 0] = 1
    ids[:, 1:][torch.rand(B, L, generator=g) < 1 / 40] = 1  # packed documents
    batch = obj.corrupt(ids, torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        mb = batch.prepared().to("cpu")
        loss = loss_of(model, obj, mb)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step()
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    out[name] = statistics.median(ts)
print(json.dumps({k: round(B * L / v) for k, v in out.items()}))
