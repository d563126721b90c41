"""One pre-norm transformer for every objective: RMSNorm, rotary positions, SwiGLU, tied embeddings (by default;
grouped-query attention and an untied head are there for imported Llama-family checkpoints).

Attention runs causal or bidirectional in the same weights, chosen per sequence, and can be
restricted to each packed document (block-diagonal). The layout matches Llama's exactly
(same norm, rotary convention and MLP), so a causal model exports to `LlamaForCausalLM`.

Two attention backends compute the same function: SDPA with a dense boolean mask (CPU, and any
device without compilation), and FlexAttention with a block mask built from the same rule, which
skips the blocks nobody may see and keeps packed documents on a fused kernel (CUDA, compiled).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from hybridlm.errors import UserError


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    n_layer: int = 12
    n_head: int = 6
    d_model: int = 384
    d_ffn: int = 1280
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    # multi-token prediction (Gloeckle et al. 2024): output heads in all, each extra one a transformer
    # block of its own on the trunk, predicting t+2, t+3, ... through the shared unembedding
    mtp_heads: int = 1
    # noise conditioning (the 2025 BabyLM diffusion winner's adaLN, cond_dim 128): each block's norms shifted,
    # scaled and its branches gated by the sequence's noise level (`noise_of`, set by the objective); 0: none
    cond_dim: int = 0
    # grouped-query attention (Llama 2 70B, SmolLM2): key/value heads, each shared by n_head / n_kv_heads query
    # heads; 0: as many as the query heads (multi-head attention)
    n_kv_heads: int = 0
    tie_embeddings: bool = True  # the output head is the input embedding (False: an lm_head of its own)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_head


PRESETS: dict[str, dict] = {
    # tests: well under 1M parameters with a small vocabulary
    "tiny": dict(n_layer=2, n_head=2, d_model=64, d_ffn=176, max_seq_len=256),
    # GPT-BERT's 10M-word recipe (≈30M parameters with an 8k-16k vocabulary)
    "small": dict(n_layer=12, n_head=6, d_model=384, d_ffn=1280, max_seq_len=512),
    # GPT-BERT's 100M-word recipe (≈119M parameters with a 16k vocabulary)
    "base": dict(n_layer=12, n_head=12, d_model=768, d_ffn=2560, max_seq_len=512),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalise in fp32 (as Llama does): bf16 mean-of-squares loses the small activations.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_tables(seq_len: int, head_dim: int, theta: float, device=None):
    """cos and sin of the rotation angles, [seq_len, head_dim / 2] (Llama's frequencies)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return freqs.cos(), freqs.sin()


def apply_rotary(x, cos, sin):
    """Llama's "rotate half" convention, x: [..., T, D], cos/sin: [T, D/2].

    Equal to x * cat(cos, cos) + cat(-x2, x1) * cat(sin, sin), computed on the halves: half the
    elementwise traffic, which is a large share of a small model's step on CPU.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def matmul_attention(q, k, v, mask=None, is_causal: bool = False):
    """softmax(q kᵀ / √d) v as two matmuls with the softmax in fp32 (transformers' "eager" attention), under
    SDPA's mask rules (a boolean mask: True may attend; is_causal: the lower triangle). On a CPU in bf16 it
    is 2-3x faster than SDPA's flash kernel at BabyLM lengths (the kernel is not tuned for bf16 there)."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    if is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.backend = "sdpa"  # sdpa | flex | matmul: set through Transformer.attention_backend
        self.n_head, self.n_kv = cfg.n_head, cfg.kv_heads
        self.head_dim = cfg.d_model // cfg.n_head
        # q, k, v fused: [d_model + 2 * n_kv * head_dim] rows (3 * d_model without grouped-query attention)
        self.qkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * self.n_kv * self.head_dim, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, mask, is_causal, kv_cache=None):
        B, T, C = x.shape
        if self.n_kv == self.n_head:
            qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k = apply_rotary(qkv[:2], cos, sin).unbind(0)  # q and k rotated in one pass
            v = qkv[2]
        else:
            q, k, v = self.qkv(x).split([C, self.n_kv * self.head_dim, self.n_kv * self.head_dim], dim=-1)
            q = apply_rotary(q.view(B, T, self.n_head, self.head_dim).transpose(1, 2), cos, sin)
            k = apply_rotary(k.view(B, T, self.n_kv, self.head_dim).transpose(1, 2), cos, sin)
            v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # the cache holds the n_kv heads
        if self.n_kv != self.n_head:  # each key/value head serves n_head / n_kv consecutive query heads (Llama's)
            k, v = (t.repeat_interleave(self.n_head // self.n_kv, dim=1) for t in (k, v))
        if isinstance(mask, BlockMask):
            y = flex_attention(q, k, v, block_mask=mask)
        elif self.backend == "matmul":
            y = matmul_attention(q, k, v, mask, is_causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ffn, bias=False)
        self.down = nn.Linear(cfg.d_ffn, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, is_causal, kv_cache=None, modulation=None):
        if modulation is None:
            x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, kv_cache)
            return x + self.mlp(self.mlp_norm(x))
        # adaLN (DiT; the diffusion winner's model.py): norm * (1 + scale) + shift, each branch gated
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = modulation
        h = self.attn_norm(x) * (1 + scale_attn) + shift_attn
        x = x + gate_attn * self.attn(h, cos, sin, mask, is_causal, kv_cache)
        return x + gate_mlp * self.mlp(self.mlp_norm(x) * (1 + scale_mlp) + shift_mlp)


class NoiseEmbedding(nn.Module):
    """A noise level [B] as a vector [B, cond_dim]: sinusoidal features (GLIDE's, 256 of them) through an MLP."""

    def __init__(self, cond_dim: int, features: int = 256):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    @staticmethod
    def sinusoids(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoids(t, self.features).to(self.mlp[0].weight.dtype))


class KVCache:
    """Per-layer key/value cache for incremental decoding.

    rows: read the cache of these batch rows only; commit=False: the new keys and values are used
    but not kept (block diffusion's denoising steps, before a block is final)."""

    def __init__(self):
        self.k = self.v = None
        self.rows: torch.Tensor | None = None
        self.commit = True

    def update(self, k, v):
        if self.k is not None:
            past_k, past_v = (self.k, self.v) if self.rows is None else (self.k[self.rows], self.v[self.rows])
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        if self.commit:
            if self.rows is not None:
                raise ValueError("commit a cache on all of its rows")
            self.k, self.v = k, v
        return k, v


class CanvasCache(KVCache):
    """Keys and values of a whole canvas, kept from a full forward (a refresh) and reused, stale, by
    forwards of a window of it: Fast-dLLM's approximate caches of full-attention diffusion. A window
    [start, start + T) attends to its own fresh keys and values spliced between the cached ones before
    and after it: a window that runs to the canvas's end is the prefix cache, a block the dual cache.

    refresh=True: the forward is the whole canvas; keep its keys and values (of `rows`, if set)."""

    def __init__(self, n_rows: int):
        super().__init__()
        self.n_rows, self.start, self.refresh = n_rows, 0, True

    def update(self, k, v):
        if self.refresh:
            if self.k is None:
                self.k = k.new_zeros((self.n_rows, *k.shape[1:]))
                self.v = v.new_zeros((self.n_rows, *v.shape[1:]))
            rows = slice(None) if self.rows is None else self.rows
            self.k[rows], self.v[rows] = k, v
            return k, v
        if self.k is None:
            raise ValueError("a canvas cache is read before its first refresh")
        past_k, past_v = (self.k, self.v) if self.rows is None else (self.k[self.rows], self.v[self.rows])
        end = self.start + k.shape[2]
        k = torch.cat([past_k[:, :, : self.start], k, past_k[:, :, end:]], dim=2)
        v = torch.cat([past_v[:, :, : self.start], v, past_v[:, :, end:]], dim=2)
        return k, v


def values_on_host(*tensors) -> bool:
    """Whether reading these tensors' values costs no wait for a device (they live on the CPU)."""
    return all(x.device.type == "cpu" for x in tensors if isinstance(x, torch.Tensor))


@dataclass
class AttentionSpec:
    """Who attends to whom in a batch: the one description every caller gives the model.

    is_causal: one mode for every row (a bool) or per row ([B] bool: causal or bidirectional).
    document_ids: [B, T] ints; a position sees only positions of its own packed document.
    prefix_lengths: [B] ints; a causal row also sees its first prefix_lengths[b] positions whatever
    its place (a prefix LM: bidirectional inside the prefix, causal after it); 0 = plain causal.
    visible: [T, T] bool; what bidirectional rows see, when not everything (a causal-to-full anneal).
    block_ids: [T] ints; block attention (block diffusion), in place of the modes: a position sees its
    own block and earlier ones. With noisy ([T] bool, BD3-LM's x_t ⊕ x_0 layout) a noisy position sees
    the noisy positions of its own block and the clean positions of earlier blocks, and a clean one the
    clean positions of its own and earlier blocks.
    position_ids: [T] (or [B, T]) ints; rotary positions when they are not 0..T-1 (x_t and x_0 share
    theirs; the branches of a shared prefix continue from its end).
    segment_ids: [B, T] ints; a shared prefix and its branches packed in one causal row (scoring the
    options of an item once per prefix): 0 = the prefix, seen by every later position; k > 0 = branch k,
    seen only by itself.
    """

    is_causal: torch.Tensor | bool = True
    document_ids: torch.Tensor | None = None
    prefix_lengths: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    block_ids: torch.Tensor | None = None
    noisy: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None

    def per_position(self) -> tuple:
        """The tensors shared by every row ([T, T] or [T])."""
        return self.visible, self.block_ids, self.noisy, self.position_ids

    def tensors(self) -> tuple:
        return self.is_causal, self.document_ids, self.prefix_lengths

    def simplify(self) -> AttentionSpec:
        """The same attention with what changes nothing dropped: one mode for every row becomes a
        bool, one document per row and all-zero prefixes become None, so that SDPA's mask-free (flash)
        kernels apply. It reads the tensors' values, so callers do it where they live (the host, in
        training: no device synchronisation); a spec on a device is returned as it is."""
        if not values_on_host(*self.tensors(), *self.per_position(), self.segment_ids):
            return self
        is_causal, document_ids, prefix_lengths = self.tensors()
        if prefix_lengths is not None and not bool((prefix_lengths > 0).any()):
            prefix_lengths = None
        if document_ids is not None and bool((document_ids == document_ids[:, :1]).all()):
            document_ids = None
        if not isinstance(is_causal, bool) and bool((is_causal == is_causal[:1]).all()):
            is_causal = bool(is_causal[0]) if len(is_causal) else True
        visible = None if self.visible is None or bool(self.visible.all()) else self.visible
        segments = None if self.segment_ids is None or not bool(self.segment_ids.any()) else self.segment_ids
        return AttentionSpec(is_causal, document_ids, prefix_lengths, visible, *self.per_position()[1:], segments)

    def map(self, fn, rows: bool = False) -> AttentionSpec:
        """The spec with `fn` applied to each of its tensors (moving them), or with rows=True to the
        per-row ones (selecting rows)."""
        per_row = (fn(x) if isinstance(x, torch.Tensor) else x for x in self.tensors())

        def shared(x):  # the same for every row, except position_ids given per row ([B, T])
            return x if x is None or rows and not (x is self.position_ids and x.dim() == 2) else fn(x)

        segments = None if self.segment_ids is None else fn(self.segment_ids)
        return AttentionSpec(*per_row, *map(shared, self.per_position()), segments)

    def causal_rows(self, n: int, device) -> torch.Tensor:
        """[n] float: 1 for a causal row, 0 for a bidirectional one."""
        if isinstance(self.is_causal, bool):
            return torch.full((n,), float(self.is_causal), device=device)
        return self.is_causal.float()

    def mask(self, seq_len: int, device, backend: str = "sdpa"):
        """(mask, is_causal) for attention: (None, flag) when no mask is needed, else a boolean SDPA
        mask [B, 1, T, T] (True = may attend) or, with backend="flex", a FlexAttention BlockMask of
        the same rule."""
        spec = self.simplify()
        is_causal, document_ids, prefix_lengths = spec.tensors()
        visible = spec.visible
        if spec.block_ids is not None:
            return spec._block_attention(seq_len, device, backend), False
        segments = spec.segment_ids
        if document_ids is None and prefix_lengths is None and segments is None and isinstance(is_causal, bool):
            if visible is None or is_causal:
                return None, is_causal
        if isinstance(is_causal, bool):
            is_causal = torch.full((1,), is_causal, device=device)
        if backend == "flex":
            return _block_mask(is_causal, document_ids, prefix_lengths, seq_len, device, visible, segments), False
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
        # Rows in bidirectional mode see everything (in their document, and what `visible` allows);
        # causal rows the past only.
        bidirectional = ~is_causal.view(-1, 1, 1)
        mask = causal[None] | (bidirectional if visible is None else bidirectional & visible.to(device)[None])
        if prefix_lengths is not None:
            mask = mask | (torch.arange(seq_len, device=device)[None, None, :] < prefix_lengths.view(-1, 1, 1))
        if document_ids is not None:
            mask = mask & (document_ids[:, :, None] == document_ids[:, None, :])
        if segments is not None:
            mask = mask & ((segments[:, None, :] == 0) | (segments[:, :, None] == segments[:, None, :]))
        return mask[:, None], False

    def _block_attention(self, seq_len: int, device, backend: str):
        """Block attention's mask (see block_ids and noisy), within packed documents."""
        blocks = self.block_ids.to(device)
        noisy = torch.zeros_like(blocks, dtype=torch.bool) if self.noisy is None else self.noisy.to(device)
        documents = self.document_ids

        def rule(q, kv):
            same, earlier = blocks[kv] == blocks[q], blocks[kv] < blocks[q]
            clean_kv = ~noisy[kv]
            return torch.where(noisy[q], (noisy[kv] & same) | (clean_kv & earlier), clean_kv & (same | earlier))

        if backend == "flex":
            rows = 1 if documents is None else len(documents)

            def mask_mod(b, h, q, kv):
                seen = rule(q, kv)
                return seen & (documents[b, q] == documents[b, kv]) if documents is not None else seen

            return create_block_mask(mask_mod, rows, None, seq_len, seq_len, device=device)
        positions = torch.arange(seq_len, device=device)
        mask = rule(positions[:, None], positions[None, :])[None]
        if documents is not None:
            mask = mask & (documents[:, :, None] == documents[:, None, :])
        return mask[:, None]


def as_attention(attention) -> AttentionSpec:
    """An AttentionSpec from a spec or a bool (one mode for every row, no documents)."""
    return attention if isinstance(attention, AttentionSpec) else AttentionSpec(bool(attention))


def _block_mask(
    is_causal: torch.Tensor, document_ids, prefix_lengths, seq_len: int, device, visible=None, segments=None
) -> BlockMask:
    """The dense mask's rule as a FlexAttention mask_mod, evaluated block-sparsely."""
    rows = max(len(x) for x in (is_causal, document_ids, prefix_lengths, segments) if x is not None)
    is_causal = is_causal.expand(rows)
    prefix = prefix_lengths if prefix_lengths is not None else torch.zeros(rows, dtype=torch.long, device=device)

    def mask_mod(b, h, q, kv):
        bidirectional = ~is_causal[b] if visible is None else ~is_causal[b] & visible[q, kv]
        seen = (kv <= q) | bidirectional | (kv < prefix[b])
        if segments is not None:
            seen = seen & ((segments[b, kv] == 0) | (segments[b, kv] == segments[b, q]))
        return seen & (document_ids[b, q] == document_ids[b, kv]) if document_ids is not None else seen

    return create_block_mask(mask_mod, rows, None, seq_len, seq_len, device=device)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        # extra heads for t+2.. (training only: generation, scoring and exports use the next-token head)
        self.mtp = nn.ModuleList(
            nn.ModuleDict({"block": Block(cfg), "norm": RMSNorm(cfg.d_model, cfg.norm_eps)})
            for _ in range(cfg.mtp_heads - 1)
        )
        if cfg.cond_dim:  # zero-initialised modulation: at first every block's branches are gated off
            self.noise_embed = NoiseEmbedding(cfg.cond_dim)
            self.adaln = nn.ModuleList(nn.Linear(cfg.cond_dim, 6 * cfg.d_model) for _ in range(cfg.n_layer))
        self.noise_of = None  # input_ids -> the noise level of each row [B] (the objective's `noise_level`)
        cos, sin = rotary_tables(cfg.max_seq_len, cfg.d_model // cfg.n_head, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.attention_backend = "sdpa"  # or "flex" / "matmul" (set by training, see plan.attention_backend)
        self._trunk = None  # the compiled trunk (compile_trunk)
        self.reset_parameters()

    @property
    def attention_backend(self) -> str:
        """How every block attends: "sdpa" (PyTorch's fused kernels), "flex" (FlexAttention BlockMasks) or
        "matmul" (`matmul_attention`, the masks SDPA's)."""
        return self._attention_backend

    @attention_backend.setter
    def attention_backend(self, name: str) -> None:
        self._attention_backend = name
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = name

    def reset_parameters(self):
        for name, p in self.named_parameters():
            if name.startswith("adaln."):
                nn.init.zeros_(p)
            elif name.startswith("noise_embed.") and name.endswith(".bias"):
                nn.init.zeros_(p)
            elif name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("proj.weight", "down.weight")):
                # Residual outputs scaled down with depth (GPT-2), so the stream's variance stays O(1).
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied head counted once

    @property
    def output_weight(self) -> torch.Tensor:
        """The output head's weight (the input embedding's, unless the model has an lm_head of its own)."""
        return self.embed.weight if self.cfg.tie_embeddings else self.lm_head.weight

    def head(self, hidden: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """Logits of final hidden states. fp32: in fp32 even under bf16 autocast (for scoring: bf16
        logits are quantised to ~0.03 nats and turn close pairs into ties)."""
        if fp32:
            with torch.autocast(hidden.device.type, enabled=False):
                return F.linear(hidden.float(), self.output_weight.float())
        return F.linear(hidden, self.output_weight)

    def forward(
        self,
        input_ids,
        attention: AttentionSpec | bool = True,
        kv_caches=None,
        start_pos: int = 0,
        logits: bool = False,
        mtp: bool = False,
        soft_inputs: torch.Tensor | None = None,
    ):
        """Final hidden states [B, T, D] (after the last norm); with logits=True the logits [B, T, V].

        The loss is not computed here: the training loss calls the fused head + cross-entropy
        (hybridlm.ops.linear_cross_entropy) on the hidden states of the positions it scores.
        attention: an AttentionSpec (modes per row, documents, prefixes), or a bool for one mode.
        mtp: also return the extra heads' hidden states (a list, t+2 first) when the model has them.
        soft_inputs: [B, T, V] distributions over the vocabulary read in place of input_ids (their embedding is the
        mean of the token embeddings they weigh: Duo's curriculum).
        """
        B, T = input_ids.shape
        attention = as_attention(attention)
        positions = attention.position_ids
        if positions is None and start_pos + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        device = input_ids.device
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else self.embed.weight.dtype
        if positions is not None:  # x_t and x_0 of block diffusion share their positions
            cos, sin = self.rope_cos[positions].to(dtype), self.rope_sin[positions].to(dtype)
            if positions.dim() == 2:  # per row: [B, 1 (heads), T, D/2]
                cos, sin = cos[:, None], sin[:, None]
        else:
            cos = self.rope_cos[start_pos : start_pos + T].to(dtype)  # cast once, not in every layer
            sin = self.rope_sin[start_pos : start_pos + T].to(dtype)
        if kv_caches is not None and start_pos > 0:
            # new tokens attend to the whole cached past: one token (causal decoding), or a block
            # that also sees itself whole (block diffusion, a canvas cache's window); causal attention
            # within new tokens is not offered
            mask, causal_flag = None, False
            if T > 1 and attention.is_causal is not False:
                raise ValueError("incremental causal decoding takes one token at a time")
        else:
            mask, causal_flag = attention.mask(T, device, self.attention_backend)
        cond = None
        if self.cfg.cond_dim:
            if self.noise_of is None:
                raise ValueError("a noise-conditioned model needs noise_of (the objective's noise_level)")
            cond = F.silu(self.noise_embed(self.noise_of(input_ids).to(device)))
        trunk = self._trunk if self._trunk is not None and kv_caches is None else self.trunk
        x, heads = trunk(input_ids, cos, sin, mask, causal_flag, kv_caches, mtp and len(self.mtp) > 0, cond,
                         soft_inputs)  # fmt: skip
        out = self.head(x) if logits else x
        return (out, heads) if mtp else out

    def trunk(self, input_ids, cos, sin, mask, causal_flag: bool, kv_caches=None, mtp: bool = False, cond=None,
              soft_inputs=None):  # fmt: skip
        """Embedding, blocks and final norm (and the extra heads' blocks): what `compile_trunk` compiles
        as one graph, given the mask and rotary tables that `forward` makes outside it. cond: the noise
        embedding [B, cond_dim] of a noise-conditioned model."""
        x = (
            self.embed(input_ids)
            if soft_inputs is None
            else soft_inputs.to(self.embed.weight.dtype) @ self.embed.weight
        )
        for i, block in enumerate(self.blocks):
            modulation = None if cond is None else self.adaln[i](cond)[:, None, :].chunk(6, dim=-1)
            x = block(x, cos, sin, mask, causal_flag, None if kv_caches is None else kv_caches[i], modulation)
        heads = [head["norm"](head["block"](x, cos, sin, mask, causal_flag)) for head in self.mtp] if mtp else []
        return self.norm(x), heads

    def compile_trunk(self, backend: str = "inductor") -> None:
        """torch.compile the trunk whole (fullgraph: no break, so Inductor fuses each norm, rotary, SwiGLU and
        cast with its neighbours). The mask and rotary tables are built eagerly, outside it: their values
        decide its shape (data-dependent), and a graph per kind of mask (none, causal / bidirectional, a
        tensor) is compiled once; incremental decoding (a KV cache) stays eager."""
        self._trunk = torch.compile(self.trunk, fullgraph=True, backend=backend)


def check_model_overrides(overrides) -> None:
    """Keys and values of `model = {...}` overrides, checked before anything is built or written."""
    if not isinstance(overrides, dict):
        raise UserError(f"model overrides must be a table / mapping, e.g. {{n_layer = 4}} (got {overrides!r})")
    valid = {k: f.type for k, f in ModelConfig.__dataclass_fields__.items() if k != "vocab_size"}
    for key, value in overrides.items():
        if key not in valid:
            raise UserError(f"unknown model key {key!r} (valid: {', '.join(valid)})")
        if valid[key] in (bool, "bool"):
            if not isinstance(value, bool):
                raise UserError(f"model key {key} must be true or false (got {value!r})")
            continue
        if key == "n_kv_heads" and value == 0 and not isinstance(value, bool):
            continue  # 0: the default, as many key/value heads as query heads
        want = int if valid[key] in (int, "int") else float
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (want is int and not isinstance(value, int))
        ):
            raise UserError(f"model key {key} must be a positive {want.__name__} (got {value!r})")
        if not value > 0 or not math.isfinite(value) or (want is int and value > 1_000_000):
            raise UserError(f"model key {key} must be a positive {want.__name__} (got {value!r})")


def build_model(preset: str, vocab_size: int, overrides: dict | None = None, min_seq_len: int = 0) -> Transformer:
    """The preset with `overrides`; the context is at least min_seq_len (the training length)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose one of: {', '.join(PRESETS)})")
    check_model_overrides(overrides or {})
    fields = {**PRESETS[preset], **(overrides or {})}
    fields["max_seq_len"] = max(fields["max_seq_len"], min_seq_len)
    cfg = ModelConfig(vocab_size=vocab_size, **fields)
    if cfg.d_model % cfg.n_head or (cfg.d_model // cfg.n_head) % 2:
        raise UserError(f"d_model {cfg.d_model} must split into {cfg.n_head} heads of even size")
    if cfg.n_head % cfg.kv_heads:
        raise UserError(f"n_kv_heads {cfg.n_kv_heads} must divide n_head {cfg.n_head} (grouped-query attention)")
    return Transformer(cfg)
