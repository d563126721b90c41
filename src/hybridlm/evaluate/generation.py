"""`hlm eval generation`: how good a run's samples are, by the protocol of MDLM and ReMDM, pinned down.

N unconditional samples of L tokens (from <s>, in batches) with one sampler, or the texts of a file,
are measured by:
- generative perplexity under a judge (`--judge RUN` or `--judge-hf DIR`, a causal LM): each sample
  is retokenised with the judge's tokenizer, scored after an explicit <s> in fp32, and the
  perplexity is exp(total NLL / total judge tokens) over all samples (token-weighted, not a mean of
  per-sample perplexities);
- the unigram entropy of each sample's tokens (nats), with a sample flagged degenerate (repetitive)
  when its entropy is below every one of 200 held-out windows of the same length (the run's own
  validation data): a low generative perplexity from such samples is no achievement;
- distinct-n (n = 1..4): distinct n-grams / all n-grams, over all samples;
- network calls (NFE) and wall time per sample;
- with --grammar (the demo's built-in grammar): the share of complete sentences the grammar
  generates, an exact measure of sample quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hybridlm.data import PackedTokens
from hybridlm.errors import UserError
from hybridlm.evaluate.lm import ScoringLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.generate import generate_samples
from hybridlm.grammar import is_grammatical, sentences_of
from hybridlm.objectives import Generation
from hybridlm.results import stamp
from hybridlm.samplers import Sampling

DATA_WINDOWS = 200


def unigram_entropy(ids) -> float:
    """Entropy (nats) of the token frequencies within one sample."""
    if len(ids) == 0:
        return 0.0
    _, counts = np.unique(np.asarray(ids), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def distinct_n(samples: list[list[int]], n: int) -> float | None:
    grams = [tuple(s[i : i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def data_entropies(run, length: int, seed: int = 0) -> list[float] | None:
    """Entropies of held-out windows of `length` tokens from the run's validation data (None: no data)."""
    try:
        windows = PackedTokens(run.config.data, "val", length)
    except (UserError, OSError, TypeError):
        return None
    if windows.n_windows == 0:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.choice(windows.n_windows, size=min(DATA_WINDOWS, windows.n_windows), replace=False)
    bos = run.tokenizer.token_to_id("<s>")
    return [unigram_entropy([t for t in windows.window(int(i))[:length].tolist() if t != bos]) for i in picks]


def grammaticality(texts: list[str]) -> dict:
    """The share of complete sentences the built-in grammar generates, and of samples all of whose are."""
    verdicts = [[is_grammatical(s) for s in sentences_of(t)[0]] for t in texts]
    n = sum(len(v) for v in verdicts)
    return {
        "grammatical": sum(map(sum, verdicts)) / n if n else None,
        "sentences": n,
        "samples_all_grammatical": sum(bool(v) and all(v) for v in verdicts) / len(texts) if texts else None,
    }


def check_judge(judge: ScoringLM) -> ScoringLM:
    if "causal" not in judge.scorers:
        raise UserError(f"the judge {judge.name} is a {judge.kind} model; a judge needs an exact causal likelihood")
    return judge


def generative_perplexity(judge: ScoringLM, texts: list[str]) -> dict:
    check_judge(judge)
    kept = [t for t in texts if t.strip()]
    if not kept:
        return {"gen_ppl": None, "judge_tokens": 0}
    nll = -np.asarray(score_sentences(judge, kept, "causal"))
    counts = np.asarray([len(judge.tokenize(t)[0]) for t in kept], dtype=np.float64)
    per_token = float(nll.sum() / counts.sum())
    # the ratio estimator's standard error over samples (delta method): the protocol's sampling error
    k = len(kept)
    stderr = float(np.sqrt(((nll - per_token * counts) ** 2).sum() / (k * (k - 1))) / counts.mean()) if k > 1 else None
    return {
        "gen_ppl": math.exp(per_token),
        "nll_per_token": per_token,
        "nll_per_token_stderr": stderr,
        "judge_tokens": int(counts.sum()),
        "judge": judge.name,
    }


def read_samples(path) -> list[str]:
    """Texts to measure: a .jsonl of {"text": ...} or one sample a line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--samples {path} is not a file (JSONL with a 'text' field, or a text a line)")
    try:
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError as e:
        raise UserError(f"--samples {path}: not UTF-8 (byte {e.start}); re-encode the file") from None
    if p.suffix == ".jsonl":
        try:
            lines = [str(json.loads(ln)["text"]) for ln in lines]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"--samples {path}: every line must be a JSON object with a 'text' field") from None
    if not any(t.strip() for t in lines):
        raise UserError(f"--samples {path} holds no text to measure")
    return lines


def evaluate_generation(
    run,
    sampling: Sampling,
    num_samples: int,
    length: int,
    seed: int = 0,
    judge: ScoringLM | None = None,
    texts: list[str] | None = None,
    grammar: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> dict:
    """Sample (unless `texts` are given) and measure; the result hlm keeps in RUN/eval/. Samples end by
    hlm's one rule (generate.decode_rows: at `</s>`, not before sampling.min_new_tokens; before sampling.stop):
    what follows is dropped, never measured."""
    caps = run.objective.capabilities
    generation = caps.generation if texts is not None else caps.generation_for(sampling.view, run.objective.name)
    if generation is not Generation.CAUSAL:  # the sampler named, as the decoding resolves it
        default = {Generation.MASKS: "first", Generation.DENOISE: "ancestral"}.get(generation, "confidence")
        sampling = sampling.resolved(default)
    ids, nfe, seconds = [], [], 0.0
    if texts is None:
        texts = []
        bar = tqdm(total=num_samples, desc="sample", unit="sample", disable=not progress)
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            drawn = generate_samples(run, "", length, sampling, n, seed=seed, first_index=start)
            texts += [t.strip() for t in drawn.texts]
            ids += drawn.token_ids
            nfe += drawn.nfe
            seconds += drawn.seconds
            bar.update(n)
        bar.close()
    else:
        ids = [run.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    entropies = [unigram_entropy(s) for s in ids]
    reference = data_entropies(run, int(np.median([len(s) for s in ids])) if ids else length, seed)
    floor = min(reference) if reference else None
    # one call a token: a causal model left to right (no sampler), a masked one by <mask> tokens after the text
    left_to_right = {Generation.CAUSAL: "autoregressive", Generation.MASKS: f"masked-{sampling.sampler}"}.get(
        generation
    )
    result = stamp(
        "generation",
        {
            "sampler": left_to_right or sampling.sampler,
            "sampling": vars(sampling),
            "steps": None if left_to_right or sampling.sampler == "first-hitting" else sampling.steps,
            "num_samples": len(texts),
            "length": length,
            "seed": seed,
            "from_file": not nfe,
            "mean_tokens": float(np.mean([len(s) for s in ids])) if ids else 0.0,
            "entropy": float(np.mean(entropies)) if entropies else None,
            "data_entropy": float(np.mean(reference)) if reference else None,
            "degenerate": (sum(e < floor for e in entropies) / len(entropies)) if floor is not None and ids else None,
            **{f"distinct_{n}": distinct_n(ids, n) for n in (1, 2, 3, 4)},
            "nfe": float(np.mean(nfe)) if nfe else None,
            "seconds_per_sample": seconds / len(nfe) if nfe else None,
        },
        run.weights,
    )
    if judge is not None:
        result.update(generative_perplexity(judge, texts))
    if grammar:
        result.update(grammaticality(texts))
    result["samples"] = texts
    return result


def decoding_label(result: dict, length: bool = True) -> str:
    """How a result's samples were decoded, for legends and tables: the sampler, its fast-decoding knobs
    (and the samples' length)."""
    sampling = {**vars(Sampling()), **result.get("sampling", {})}
    parts = [result["sampler"]]
    if result["sampler"].startswith("masked-"):
        parts += [f"{sampling['cache']} cache"] if sampling["cache"] != "none" else []
    elif result["sampler"] != "autoregressive":
        parts += [f"B{sampling['block_length']}"] if sampling["block_length"] else []
        parts += [f"tau {sampling['threshold']:g}"] if sampling["threshold"] is not None else []
        parts += [f"factor {sampling['threshold_factor']:g}"] if sampling["threshold_factor"] is not None else []
        parts += [f"{sampling['cache']} cache"] if sampling["cache"] != "none" else []
        parts += [f"cfg {sampling['cfg_scale']:g}"] if sampling["cfg_scale"] else []
    parts += [f"self-correct {sampling['self_correct']}"] if sampling["self_correct"] else []
    return " ".join(parts) + (f" L{result['length']}" if length and result.get("length") else "")


def result_name(result: dict) -> str:
    """RUN/eval/ file of a result: one per sampler and setting, so a sweep of steps keeps every point."""
    if result["from_file"]:
        return "generation-file.json"
    sampling = Sampling(**result["sampling"])
    ended = f"-min{sampling.min_new_tokens}" if sampling.min_new_tokens else ""
    ended += "-stop" if sampling.stop else ""
    ended += f"-correct{sampling.self_correct}" if sampling.self_correct else ""
    ended += f"-ctemp{sampling.correct_temperature:g}" if sampling.correct_temperature != 0.1 else ""
    if result["sampler"] == "autoregressive" or result["sampler"].startswith("masked-"):
        cache = f"-{sampling.cache}cache" if sampling.cache != "none" else ""
        return f"generation-{result['sampler']}{cache}-temp{sampling.temperature:g}{ended}.json"
    extra = f"-eta{sampling.eta:g}-{sampling.remdm_schedule}" if sampling.sampler == "remdm" else ""
    extra += f"-block{sampling.block_length}" if sampling.block_length else ""
    extra += f"-tau{sampling.threshold:g}" if sampling.threshold is not None else ""
    extra += f"-factor{sampling.threshold_factor:g}" if sampling.threshold_factor is not None else ""
    extra += f"-{sampling.cache}cache" if sampling.cache != "none" else ""
    extra += f"-refresh{sampling.cache_refresh}" if sampling.cache_refresh else ""
    extra += f"-cfg{sampling.cfg_scale:g}" if sampling.cfg_scale else ""
    extra += f"-temp{sampling.temperature:g}" if sampling.temperature != 1 else ""
    extra += ended
    return f"generation-{sampling.sampler}{extra}-steps{sampling.steps}.json"
