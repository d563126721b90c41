"""A hybridlm transformer with bidirectional attention as a `transformers` masked LM.

Shipped inside `hlm export` output for masked, hybrid and diffusion runs; self-contained (no
hybridlm import). Weights keep hybridlm's own names. For MNTP runs (hybrid, mntp: `config.mntp`),
position i predicts token i+1, as in GPT-BERT's published models: score them with the official
BabyLM pipeline's `--backend mntp`, which masks token i and reads it at position i-1.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_hybridlm import HybridLMConfig


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.head_dim = c.n_head, c.d_model // c.n_head
        self.n_kv = c.n_kv_heads or c.n_head  # grouped-query attention: key/value heads shared by query heads
        self.qkv = nn.Linear(c.d_model, c.d_model + 2 * self.n_kv * self.head_dim, bias=False)
        self.proj = nn.Linear(c.d_model, c.d_model, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split([C, self.n_kv * self.head_dim, self.n_kv * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv, self.head_dim).transpose(1, 2) for t in (k, v))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k, v = (t.repeat_interleave(self.n_head // self.n_kv, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_up = nn.Linear(c.d_model, 2 * c.d_ffn, bias=False)
        self.down = nn.Linear(c.d_ffn, c.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(c.d_model, c.norm_eps), Attention(c)
        self.mlp_norm, self.mlp = RMSNorm(c.d_model, c.norm_eps), MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class HybridLMForMaskedLM(PreTrainedModel):
    config_class = HybridLMConfig
    base_model_prefix = "hybridlm"
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        if not config.tie_embeddings:  # an imported model's own output head
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        B, T = input_ids.shape
        head_dim = self.config.d_model // self.config.n_head
        inv = 1.0 / (self.config.rope_theta ** (torch.arange(0, head_dim, 2, device=input_ids.device, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(T, device=input_ids.device, dtype=torch.float32), inv)
        emb = torch.cat([freqs, freqs], -1)
        x = self.embed(input_ids)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        mask = None
        if attention_mask is not None:
            keep = attention_mask.bool()
            mask = (keep[:, None, :] & keep[:, :, None]) | torch.eye(T, dtype=torch.bool, device=x.device)  # pads see themselves
            mask = mask[:, None]
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        logits = F.linear(self.norm(x), self.embed.weight if self.config.tie_embeddings else self.lm_head.weight)
        loss = None
        if labels is not None:  # for an MNTP model (config.mntp) the labels are the next tokens
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
