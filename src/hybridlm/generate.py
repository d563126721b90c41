"""Sampling: causal decoding with a KV cache, diffusion's iterative unmasking, and infilling.

Categoricals are sampled in float64 (a float32 Gumbel lowers the effective temperature).
"""

from __future__ import annotations

import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec, KVCache
from hybridlm.objectives import Generation, Infill
from hybridlm.tokenizer import BOS, EOS, MASK


def filter_logits(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """Probabilities (float64) after temperature, top-k, top-p (nucleus) and min-p filtering."""
    logits = logits.double()
    if temperature <= 0:  # greedy
        out = torch.zeros_like(logits)
        out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return out
    probs = torch.softmax(logits / temperature, -1)
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, -1).values[..., -1:]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if min_p > 0:
        probs = torch.where(probs < min_p * probs.max(-1, keepdim=True).values, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p > top_p * cum[..., -1:]  # keep the smallest prefix reaching top_p
        sorted_p = torch.where(drop, torch.zeros_like(sorted_p), sorted_p)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return probs / probs.sum(-1, keepdim=True)


def _forbid(logits, ids):
    logits[..., ids] = float("-inf")
    return logits


@torch.no_grad()
def generate_causal(
    model,
    prompt_ids: list[int],
    max_new_tokens=50,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    use_cache=True,
    stop_ids=(),
    forbid_ids=(),
    generator=None,
    prompt_as_prefix=False,
) -> list[int]:
    """Autoregressive sampling; returns the new token ids. prompt_as_prefix: the prompt is read
    bidirectionally (a prefix LM), what follows it left to right."""
    limit = model.cfg.max_seq_len
    ids = list(prompt_ids)[-limit:]
    attention = AttentionSpec(True, prefix_lengths=torch.tensor([len(ids)]) if prompt_as_prefix else None)
    new: list[int] = []
    caches = [KVCache() for _ in model.blocks] if use_cache else None
    x = torch.tensor([ids])
    pos = 0
    for _ in range(max_new_tokens):
        if len(ids) >= limit:
            break
        if use_cache:
            logits = model.head(model(x, attention, kv_caches=caches, start_pos=pos)[:, -1])
            pos += x.shape[1]
        else:
            logits = model.head(model(torch.tensor([ids]), attention)[:, -1])
        probs = filter_logits(_forbid(logits.float(), list(forbid_ids)), temperature, top_k, top_p, min_p)
        tok = int(torch.multinomial(probs[0], 1, generator=generator))
        if tok in stop_ids:
            break
        ids.append(tok)
        new.append(tok)
        x = torch.tensor([[tok]])
    return new


@torch.no_grad()
def unmask(
    model,
    ids: list[int],
    mask_id: int,
    steps=32,
    order="confidence",
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    shift=0,
    forbid_ids=(),
    generator=None,
    unmask_fraction=None,
) -> list[int]:
    """Fill every <mask> in `ids` over `steps` rounds of iterative unmasking (MDLM-style).

    Round t -> t_next reveals the share unmask_fraction(t, t_next) of the masked positions: the
    reverse process of the objective's noise schedule, (alpha(t_next) - alpha(t)) / (1 - alpha(t))
    (default: log-linear, alpha = 1 - t); all of them by the last round. `order`:
    "confidence" unmasks the most probable predictions first; "random" picks positions at random
    (ancestral sampling). p(x0 | x_t) is reused when the previous round changed nothing (MDLM's cache).
    shift=1 reads position i's prediction at i-1 (GPT-BERT's masked next-token form).
    """
    x = torch.tensor([ids])
    forbid = list(forbid_ids) + [mask_id]
    probs = None
    for s in range(steps, 0, -1):
        masked = (x[0] == mask_id).nonzero().flatten()
        if len(masked) == 0:
            break
        t, t_next = s / steps, (s - 1) / steps
        share = unmask_fraction(t, t_next) if unmask_fraction is not None else (t - t_next) / t
        n_unmask = len(masked) if s == 1 else int(round(len(masked) * share))
        if n_unmask == 0:
            continue
        if probs is None:
            logits = model(x, False, logits=True)[0].float()
            if shift:
                logits = torch.cat([logits[:1], logits[:-1]], 0)  # position i is predicted at i-1
            probs = filter_logits(_forbid(logits, forbid), temperature, top_k, top_p, min_p)
        sampled = torch.multinomial(probs[masked], 1, generator=generator).flatten()
        if order == "confidence":
            conf = probs[masked].gather(-1, sampled[:, None]).flatten()
            chosen = conf.argsort(descending=True)[:n_unmask]
        else:
            chosen = torch.randperm(len(masked), generator=generator)[:n_unmask]
        x[0, masked[chosen]] = sampled[chosen]
        probs = None  # tokens changed: the cached p(x0 | x_t) is stale
    return x[0].tolist()


def _stop_and_forbid(tok):
    specials = [tok.token_to_id(t) for t in ("<pad>", BOS, EOS, MASK, "<unk>")]
    return [tok.token_to_id(EOS), tok.token_to_id(BOS)], specials


def generate_text(run, prompt: str, max_new_tokens=50, steps=32, order="confidence", seed=0, **sampling) -> str:
    """The continuation of `prompt` (prompt + result is the text), in the mode the objective supports."""
    tok, model, objective = run.tokenizer, run.model, run.objective
    g = torch.Generator().manual_seed(seed)
    stop, specials = _stop_and_forbid(tok)
    prompt_ids = [tok.token_to_id(BOS)] + (tok.encode(prompt, add_special_tokens=False).ids if prompt else [])
    caps = objective.capabilities
    if caps.generation is Generation.CAUSAL:
        new = generate_causal(
            model,
            prompt_ids,
            max_new_tokens,
            stop_ids=stop,
            forbid_ids=[i for i in specials if i not in stop],
            generator=g,
            prompt_as_prefix=caps.prompt_as_prefix,
            **sampling,
        )
    elif caps.generation is Generation.UNMASK:
        mask = tok.token_to_id(MASK)
        n = min(max_new_tokens, model.cfg.max_seq_len - len(prompt_ids))
        out = unmask(
            model,
            prompt_ids + [mask] * n,
            mask,
            steps,
            order,
            forbid_ids=specials,
            generator=g,
            unmask_fraction=objective.unmask_fraction,
            shift=caps.infill.shift or 0,
            **sampling,
        )
        new = out[len(prompt_ids) :]
    else:
        raise UserError(
            f"a {objective.name} model does not generate text; use hlm infill"
            if caps.infill is not Infill.NONE
            else f"a {objective.name} model does not generate text"
        )
    # decoded together with the prompt: a first token that continues the prompt's last word stays
    # attached to it, and one that starts a new word keeps its space
    before, after = tok.decode(prompt_ids[1:]), tok.decode(prompt_ids[1:] + new)
    return after[len(before) :] if after.startswith(before) else " " + tok.decode(new)


def infill_text(run, text: str, span: int = 1, steps=None, order="confidence", seed=0, **sampling) -> str:
    """Fill each <mask> in `text` (each stands for `span` tokens)."""
    tok, model, objective = run.tokenizer, run.model, run.objective
    if objective.capabilities.infill is Infill.NONE:
        raise UserError(f"a {objective.name} model cannot fill masks; use hlm generate, or a model trained to unmask")
    if MASK not in text:
        raise UserError("the text has no <mask> to fill, e.g. --text 'The <mask> sat on the <mask>.'")
    mask = tok.token_to_id(MASK)
    ids = [tok.token_to_id(BOS)]
    for k, piece in enumerate(text.split(MASK)):
        if k:
            ids += [mask] * span
        piece = piece.strip()
        if piece:
            ids += tok.encode(piece, add_special_tokens=False).ids
    if len(ids) > model.cfg.max_seq_len:
        raise UserError(f"the text is {len(ids)} tokens, longer than the model's {model.cfg.max_seq_len}")
    _, specials = _stop_and_forbid(tok)
    n_masks = ids.count(mask)
    out = unmask(
        model,
        ids,
        mask,
        steps or n_masks,
        order,
        shift=objective.capabilities.infill.shift,
        forbid_ids=specials,
        generator=torch.Generator().manual_seed(seed),
        unmask_fraction=objective.unmask_fraction,
        **sampling,
    )
    return tok.decode(out[1:]).strip()


def sample_text(run, prompt: str, infill_template: str, max_new_tokens: int, seed: int = 0, **sampling) -> str:
    """A sample to show (demo, report): the prompt and its continuation where the objective
    generates, the template's <mask>s filled where it only infills (greedily)."""
    caps = run.objective.capabilities
    if caps.generation is not Generation.NONE:
        return (
            prompt
            + generate_text(
                run, prompt, max_new_tokens=max_new_tokens, steps=max_new_tokens, seed=seed, **sampling
            ).rstrip()
        )
    if caps.infill is not Infill.NONE:
        return infill_text(run, infill_template, temperature=0.0, seed=seed).strip()
    return "(this objective neither generates nor infills)"
