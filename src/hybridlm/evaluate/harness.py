"""An lm-evaluation-harness backend (`--model hlm`) for every objective hlm trains or scores.

    pip install "hybridlm[lmeval]"
    hlm eval harness --run RUN --tasks hellaswag,lambada_openai [--num-fewshot K] [--include-path DIR]
    # or from Python: import hybridlm.evaluate.harness, then lm_eval.simple_evaluate(model="hlm",
    #   model_args="run=RUN") (the harness finds backends by import, not by entry point)

Requests are tokenised exactly as the harness's own `hf` backend tokenises them (its `_encode_pair`:
the whole text encoded, the context's tokens split off; an empty context gets the prefix token,
<s>), so an hlm causal run, its export under `--model hf`, and this backend give the same numbers.
Each request is then scored by the run's scorer through hlm's batched engine (copies sorted by
length, many requests a batch):
- loglikelihood: exact (causal, prefix); PLL / MNTP of the continuation's tokens with the context
  visible (masked, mntp, hybrid's masked reading); the diffusion or block-diffusion bound of the
  continuation given the context, with Monte-Carlo draws seeded as hlm's engine seeds them (by
  length and --seed: the options of a minimal pair share them, and the numbers are hlm eval's).
  is_greedy: for an exact scorer, whether greedy decoding produces the
  continuation; for a pseudo-likelihood, whether every masked token is its position's argmax; for
  a bound it is not defined and reported False.
- loglikelihood_rolling: the harness's rolling windows, exact or a bound (logged as one); a
  pseudo-likelihood refuses it in one line.
- generate_until: hlm's own decoding (`generate.decode_rows`), greedy unless the request samples: KV-cached
  for causal and prefix runs, <mask> tokens after the text for masked and MNTP runs (and a hybrid's masked
  view, --view masked), the run's sampler for diffusion and block diffusion over `max_gen_toks` tokens, with
  Fast-dLLM's threshold and caches and LLaDA's guidance if asked (guidance also guides the diffusion bound's
  log-likelihoods, as LLaDA's get_log_likelihood does); `model.generate` for a local HF model. `</s>` ends
  an answer (not before the request's min_new_tokens), and its `until` strings cut it, in every case.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import lm_eval.models  # noqa: F401 (the harness's own backends, hf among them, registered beside hlm)
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from hybridlm.errors import UserError
from hybridlm.evaluate.lm import RunLM, load_lm
from hybridlm.evaluate.scoring import check_scorer, score_copies
from hybridlm.generate import check_decoding, check_generates, cut_at_stop, decode_rows, sampling_of
from hybridlm.objectives import Generation
from hybridlm.results import stamp
from hybridlm.samplers import RowRandom
from hybridlm.scorers import SCORERS

log = logging.getLogger(__name__)


@register_model("hlm")
class HarnessLM(TemplateLM):
    """lm-evaluation-harness's view of an hlm run (`run=`) or a local HF model (`hf_model=`)."""

    backend = "causal"  # how the harness splits context and continuation (whole text, then split)

    def __init__(
        self,
        run: str | None = None,
        hf_model: str | None = None,
        scorer: str | None = None,
        samples: int = 1,
        mask_padding: int = 0,
        device: str = "cpu",
        precision: str = "fp32",
        batch_tokens: int = 2048,
        sampler: str | None = None,
        steps: int = 0,
        block_length: int = 0,
        threshold: float | None = None,
        threshold_factor: float | None = None,
        cache: str = "none",
        cache_refresh: int | None = None,
        cfg_scale: float = 0.0,
        view: str = "",
        seed: int = 0,
        trust_remote_code: bool = False,
        max_gen_toks: int = 256,
        **_ignored,  # the harness passes batch_size, max_batch_size, ...: hlm batches by tokens
    ):
        super().__init__()
        if str(device).startswith("cuda") and not torch.cuda.is_available():  # the harness's default device
            log.warning("hlm: no CUDA device here; scoring on the CPU")
            device = "cpu"
        self.lm = load_lm(run, hf_model, device, precision, trust_remote_code)
        self.scorer = SCORERS[check_scorer(self.lm, scorer)]
        if self.scorer.parts:
            raise UserError(f"scorer {self.scorer.name} is a sum of scores, no likelihood; choose one of its parts")
        self.tokenizer = self.lm.pipeline_tokenizer()
        self.samples, self.batch_tokens, self.seed = int(samples), int(batch_tokens), int(seed)
        # <mask> tokens after the text of a bidirectional reading ("BERTs are generative in-context
        # learners": the model sees that the text goes on); 0 keeps hlm eval's own numbers
        self.mask_padding = int(mask_padding) if not self.scorer.causal else 0
        self._max_gen_toks = int(max_gen_toks)
        # generate_until's sampler (steps 0: one round per token at most); checked before any request
        self.sampling = sampling_of(
            sampler, int(steps), block_length=int(block_length), threshold=threshold, threshold_factor=threshold_factor,
            cache=cache, cache_refresh=cache_refresh, cfg_scale=float(cfg_scale), view=view or "",
        )  # fmt: skip
        if self.sampling.fast and not isinstance(self.lm, RunLM):
            raise UserError(
                "--threshold, --cache and --cfg-scale are hlm's diffusion decoding: give --run, not --hf-model"
            )
        if isinstance(self.lm, RunLM) and self.lm.objective.capabilities.generation is not Generation.NONE:
            check_decoding(self.lm.objective, self.sampling, self.lm.run.model)
        guides_a_bound = self.scorer.measure == "bound" and not self.scorer.causal and self._plain_canvas()
        if self.sampling.cfg_scale and not guides_a_bound:
            raise UserError(
                f"--cfg-scale guides full-attention diffusion's bound (LLaDA's rule); the {self.scorer.name} scorer "
                "does not take it"
            )

    def _plain_canvas(self) -> bool:
        return isinstance(self.lm, RunLM) and self.lm.objective.capabilities.generation is Generation.UNMASK

    # ------------------------------------------------------------ the harness's tokenisation
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.lm.max_len

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """As the `hf` backend: the tokenizer's own special tokens unless told, none when the text
        already starts with <s>."""
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos is not None and string.startswith(bos):
            kw = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **kw)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    # ------------------------------------------------------------ scoring
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        copies = []
        for index, (_, context_enc, continuation_enc) in enumerate(requests):
            ids = (context_enc + continuation_enc)[-(self.max_length - self.mask_padding) :]
            first = len(ids) - len(continuation_enc) - 1  # positions up to `first` are the visible context
            if first < 0:
                raise UserError(f"a continuation of {len(continuation_enc)} tokens is longer than the model's context")
            scored = list(range(first + 1, len(ids)))
            # draws seeded as hlm's engine seeds them (by length: the options of a minimal pair share them)
            draw_seed = 1_000_003 * len(ids) + self.seed
            starts = self._word_starts(ids)
            for copy in self.scorer.copies(self.scorer, self.lm, index, ids, starts, scored, first, self.samples,
                                           draw_seed):  # fmt: skip
                copy.ids = copy.ids + [self.lm.mask_id] * self.mask_padding
                copy.context = first + 1
                copies.append(copy)
        totals, greedy = score_copies(
            self.lm, copies, len(requests), self.scorer.causal, self.scorer.forbid_mask, self.batch_tokens,
            progress=not disable_tqdm, desc=f"hlm {self.scorer.name}", greedy=True, cfg_scale=self.sampling.cfg_scale,
            term=self.scorer.term,
        )  # fmt: skip
        defined = self.scorer.measure != "bound"
        return [(total, bool(g) and defined) for total, g in zip(totals, greedy)]

    def _word_starts(self, ids: list[int]) -> list[bool]:
        """Whether each token begins a word (for the within-word scorers), from the tokenizer's pieces."""
        if not self.scorer.whole_word:
            return [True] * len(ids)
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        return [i == 0 or p.startswith(("Ġ", "▁", " ")) or not p.isalnum() for i, p in enumerate(pieces)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        if self.scorer.measure == "pseudo":
            raise UserError(
                f"loglikelihood_rolling needs a likelihood; the {self.scorer.name} scorer is a pseudo-likelihood "
                "(use a causal, prefix, diffusion or block_diffusion run, or a task without perplexity)"
            )
        if self.scorer.measure == "bound":
            log.warning("hlm: loglikelihood_rolling of a %s model is an upper bound on the NLL", self.lm.kind)
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(self.tok_encode(string), self.prefix_token_id, self.max_length, 1),
            ):
                windows.append(((string, ""), context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (value, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[owner] += value
        return totals

    # ------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="hlm generate_until"):
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            text = self._generate(context, max_new, kwargs)
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            out.append(text)
        return out

    @torch.no_grad()
    def _generate(self, context: str, max_new: int, kwargs: dict) -> str:
        ids = self.tok_encode(context)[-(self.max_length - 1) :]
        max_new = max(1, min(max_new, self.max_length - len(ids)))
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
        if not isinstance(self.lm, RunLM):  # a local HF model: transformers' own decoding
            x = torch.tensor([ids], device=self.lm.device)
            options = {"do_sample": temperature > 0, "temperature": temperature or None, "top_p": None, "top_k": None}
            new = self.lm.model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, pad_token_id=self.eot_token_id,
                eos_token_id=self.eot_token_id, **options,
            )[0, len(ids) :].tolist()  # fmt: skip
            return self.tok_decode(cut_at_stop(new, (self.eot_token_id,)))
        run = self.lm.run
        check_generates(run.objective)
        g = RowRandom.seeded(self.seed, 1, device=run.model.embed.weight.device)  # the same answer in any batch
        # hlm's one end-of-text rule (decode_rows); the request's `until` strings are cut by generate_until
        sampling = replace(self.sampling, temperature=temperature, min_new_tokens=int(kwargs.get("min_new_tokens", 0)))
        new, _ = decode_rows(run, ids, max_new, sampling, 1, g)
        return self.tok_decode(new[0])


# ---------------------------------------------------------------- in-context classification on BabyLM's GLUE
# GPT-3's prompt formats (as lm-evaluation-harness writes them for these tasks), used for every objective:
# a masked or hybrid model reads the answer as <mask> tokens after the prompt (its PLL, the context
# visible), as "BERTs are generative in-context learners" prompts DeBERTa
ICL_TASKS = {
    "rte": ("{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:", [" True", " False"]),
    "mrpc": (
        "Sentence 1: {{sentence1}}\nSentence 2: {{sentence2}}\nQuestion: Do both sentences mean the same thing?"
        "\nAnswer:",
        [" no", " yes"],
    ),
    "qqp": (
        "Question 1: {{question1}}\nQuestion 2: {{question2}}\nQuestion: Do both questions ask the same thing?"
        "\nAnswer:",
        [" no", " yes"],
    ),
    "mnli": ("{{premise}}\nQuestion: {{hypothesis}} True, Neither or False?\nAnswer:", [" True", " Neither", " False"]),
    "wsc": (
        'Passage: {{text}}\nQuestion: In the passage above, does the pronoun "*{{span2_text}}*" refer to '
        '"*{{span1_text}}*"?\nAnswer:',
        [" no", " yes"],
    ),
    "boolq": ("{{passage}}\nQuestion: {{question}}?\nAnswer:", [" no", " yes"]),
    # hlm demo's grammaticality task (hybridlm.grammar.write_grammaticality: label 1 = grammatical)
    "grammar": ("Sentence: {{sentence}}\nQuestion: Is this sentence grammatical?\nAnswer:", [" no", " yes"]),
    "multirc": ("{{paragraph}}\nQuestion: {{question}}\nAnswer: {{answer}}\nIs the answer correct?", [" no", " yes"]),
}


def check_glue_data(glue_data) -> None:
    """The in-context tasks' files read as `hlm finetune` reads them (a text field per prompt slot, an integer
    label in range), so that a damaged file is one line naming it, not an error inside the harness."""
    from hybridlm.finetune import load_split

    root = Path(glue_data)
    for task in ICL_TASKS:  # the prompts' fields and choices are the fine-tuning tasks' fields and labels
        for split in ("train", "valid"):
            path = root / f"{task}.{split}.jsonl"
            if path.is_file():
                load_split(path, task)


def write_icl_tasks(glue_data, out_dir) -> dict[str, Path]:
    """Task YAMLs `TASK_icl` for each task of ICL_TASKS whose TASK.train.jsonl and TASK.valid.jsonl are
    in glue_data (validation scored; shots drawn from train by the harness's seeded sampler)."""
    root, out = Path(glue_data), Path(out_dir)
    if not root.is_dir():
        raise UserError(
            f"--glue-data {glue_data} is not a folder (e.g. ../shared/data/babylm-2025/full_eval/glue_filtered)"
        )
    made = {}
    for task, (prompt, choices) in ICL_TASKS.items():
        train, valid = root / f"{task}.train.jsonl", root / f"{task}.valid.jsonl"
        if not (train.is_file() and valid.is_file()):
            continue
        config = {
            "task": f"{task}_icl",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"train": str(train.resolve()), "validation": str(valid.resolve())}},
            "output_type": "multiple_choice",
            "training_split": "train",
            "validation_split": "validation",
            "fewshot_split": "train",
            "doc_to_text": prompt,
            "doc_to_choice": choices,
            "doc_to_target": "label",
            "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "source": "hybridlm"},
        }
        path = out / f"{task}_icl.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        made[f"{task}_icl"] = valid
    if not made:
        raise UserError(
            f"--glue-data {glue_data} holds no TASK.train.jsonl and TASK.valid.jsonl of {', '.join(ICL_TASKS)}"
        )
    return made


# task files are data: bounded, and code they name (`!function`) runs only with --trust-remote-code
MAX_TASK_FILE_BYTES = 1 << 20
MAX_TASK_FILES = 10_000
MAX_YAML_NODES = 1_000_000  # after aliases are expanded (a "billion laughs" file expands past any memory)


def _yaml_nodes(node, memo: dict, path: Path, trust: bool) -> int:
    """The node count of `node` with every alias expanded (memoised, so it costs the file's size); a tag that
    runs code is refused unless trusted."""
    import yaml

    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise UserError(f"{path}: a YAML alias refers to itself; fix the task file")
        return memo[key]
    memo[key] = None
    if node.tag.startswith("!") and not node.tag.startswith("!!") and not trust:
        raise UserError(
            f"{path}: the tag {node.tag} runs Python named by the task file; read it, then pass --trust-remote-code "
            "to allow it"
        )
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_yaml_nodes(c, memo, path, trust) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_yaml_nodes(k, memo, path, trust) + _yaml_nodes(v, memo, path, trust) for k, v in node.value)
    else:
        n = 1
    memo[key] = n
    return n


def check_task_files(folder, trust_remote_code: bool = False) -> None:
    """Every task YAML under --include-path, and every file they `include`, read as data before the harness sees
    them: at most 1 MiB each, aliases expanding to at most a million nodes, and no tag that imports Python
    (`!function`) unless the user trusts the folder. One line naming the file otherwise."""
    import yaml

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--include-path {folder} is not a folder of task YAMLs")
    todo = sorted((p for p in root.rglob("*") if p.suffix in (".yaml", ".yml")), reverse=True)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if len(seen) > MAX_TASK_FILES:
            raise UserError(f"--include-path {folder} holds more than {MAX_TASK_FILES:,} task files")
        if not path.is_file():
            raise UserError(f"{path}: a task file includes it, and it is not a file")
        if path.stat().st_size > MAX_TASK_FILE_BYTES:
            raise UserError(f"{path}: over {MAX_TASK_FILE_BYTES >> 20} MiB, too large for a task file")
        try:
            node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8; re-encode the task file") from None
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0][:80]})") from None
        if node is None:
            continue
        if _yaml_nodes(node, {}, path, trust_remote_code) > MAX_YAML_NODES:
            raise UserError(f"{path}: its YAML aliases expand to over {MAX_YAML_NODES:,} nodes; refused")
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == "include":
                    names = [v] if isinstance(v, yaml.ScalarNode) else list(getattr(v, "value", []))
                    todo += [path.parent / n.value for n in names if isinstance(n, yaml.ScalarNode)]


_DATASET_PATH = re.compile(r"^(dataset_path:\s*)(['\"]?)([^'\"#\s]+)\2(\s*(#.*)?)$")
BUILDER_NAMES = ("json", "csv", "parquet", "text", "arrow")  # datasets' own loaders: local by definition


def _is_task_yaml(path: Path) -> bool:
    """A task file, or a template the harness includes (its convention: `_template_yaml`, no suffix)."""
    return path.suffix in (".yaml", ".yml") or path.name.endswith("_yaml")


_NAME_LINE = re.compile(r"^(?:task|group):\s*(['\"]?)([\w.\-]+)\1\s*(#.*)?$")  # the harness's own files


def _names(folder: Path) -> tuple[set[str], set[str]]:
    """(defined, listed): the task and group names the folder's files define, and those its groups list (read
    as data: a tag such as `!function` is read as nothing)."""
    import yaml

    class Tolerant(yaml.SafeLoader):
        pass

    Tolerant.add_multi_constructor("!", lambda loader, suffix, node: None)
    defined, listed = set(), set()
    for path in (p for p in folder.rglob("*") if p.is_file() and _is_task_yaml(p)):
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=Tolerant)
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # check_task_files names what is wrong with it
        if not isinstance(doc, dict):
            continue
        defined |= {doc[k] for k in ("task", "group") if isinstance(doc.get(k), str)}
        if "group" in doc and isinstance(doc.get("task"), list):
            listed |= {t for t in doc["task"] if isinstance(t, str)}
    return defined, listed


def _builtin_folders(names: set[str], data: Path) -> list[Path]:
    """The harness's own task folders that define `names` and read a dataset with a local copy in `data` (the
    2026 group `zeroshot_eng` lists the harness's `blimp`, which is not in the track's task folder)."""
    import lm_eval.tasks

    found = []
    for folder in sorted(p for p in Path(lm_eval.tasks.__file__).parent.iterdir() if p.is_dir()):
        files = [p for p in folder.rglob("*") if p.is_file() and _is_task_yaml(p)]
        texts = [p.read_text(encoding="utf-8", errors="replace").splitlines() for p in files]
        if not names & {m.group(2) for lines in texts for line in lines if (m := _NAME_LINE.match(line))}:
            continue
        paths = {m.group(3) for lines in texts for line in lines if (m := _DATASET_PATH.match(line))}
        if any(path not in BUILDER_NAMES and (data / path).is_dir() for path in paths):
            found.append(folder)
    return found


def localise_tasks(include_path, task_data, out_dir) -> Path:
    """A copy of the task folder whose `dataset_path: OWNER/NAME` lines point at TASK_DATA/OWNER/NAME where that
    local copy exists (a hub dataset repository as `huggingface-cli download --repo-type dataset` writes it: its
    README's configs name the files), so the official task files run offline, unchanged otherwise. A task its
    groups list but the folder does not define, and which the harness ships, is copied in from the harness with
    its dataset localised too, where TASK_DATA holds that dataset (an include path takes precedence)."""
    src, data = Path(include_path), Path(task_data)
    if not data.is_dir():
        raise UserError(f"--task-data {task_data} is not a folder of datasets (OWNER/NAME, as the hub names them)")
    out = Path(out_dir) / "tasks"
    shutil.copytree(src, out, symlinks=False)
    defined, listed = _names(out)
    if listed - defined:
        for folder in _builtin_folders(listed - defined, data):
            shutil.copytree(folder, out / "_harness" / folder.name, symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for path in sorted(p for p in out.rglob("*") if p.is_file() and _is_task_yaml(p)):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        changed = False
        for i, line in enumerate(lines):
            m = _DATASET_PATH.match(line.rstrip("\n"))
            if m and m.group(3) not in BUILDER_NAMES and (data / m.group(3)).is_dir():
                lines[i] = f"{m.group(1)}{json.dumps(str((data / m.group(3)).resolve()))}{m.group(4)}\n"
                changed = True
        if changed:
            path.write_text("".join(lines), encoding="utf-8")
    return out


def majority(valid: Path, limit: int | None) -> float:
    """The majority class's accuracy on the documents scored."""
    labels = [json.loads(line)["label"] for line in valid.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = labels[:limit] if limit else labels
    return max(labels.count(v) for v in set(labels)) / len(labels) if labels else 0.0


@contextlib.contextmanager
def _offline(cache: str | None):
    """With a cache folder (--task-data): the datasets and hub libraries offline while the tasks load, nothing
    downloaded, and the datasets cache in `cache` (it keys a local folder's dataset by its name and config, not
    its path or content: a second local copy of the same name would be read from the first's cache)."""
    import datasets.config
    import huggingface_hub.constants

    # both libraries read the environment when imported: their flags are set as well as the variables
    flags = [
        (datasets.config, "HF_DATASETS_OFFLINE", True),
        (datasets.config, "HF_HUB_OFFLINE", True),
        (huggingface_hub.constants, "HF_HUB_OFFLINE", True),
        (datasets.config, "HF_DATASETS_CACHE", Path(cache) if cache else None),
    ]
    saved = [(m, k, getattr(m, k), v) for m, k, v in flags if hasattr(m, k)]
    env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_CACHE")}
    if cache:
        os.environ.update({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": cache})
        for m, k, _, value in saved:
            setattr(m, k, value)
    try:
        yield
    finally:
        for m, k, v, _ in saved:
            setattr(m, k, v)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_harness(
    run=None,
    hf_model=None,
    tasks: str = "",
    num_fewshot: int | None = None,
    include_path=None,
    glue_data=None,
    limit: int | None = None,
    log_samples: bool = False,
    task_data=None,
    **backend,
) -> dict:
    """lm_eval.simple_evaluate with the hlm backend; the result hlm keeps (RUN/eval/harness-*.json)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UserError("--tasks names no task, e.g. --tasks rte_icl,mrpc_icl (with --glue-data) or hellaswag")
    if include_path:
        check_task_files(include_path, backend.get("trust_remote_code", False))
    if glue_data:
        check_glue_data(glue_data)
    if task_data and not include_path:
        raise UserError("--task-data points task files at local datasets: give the task files with --include-path")
    model = HarnessLM(run=run, hf_model=hf_model, **backend)
    with tempfile.TemporaryDirectory(prefix="hlm-tasks-") as tmp, _offline(f"{tmp}/cache" if task_data else None):
        icl = write_icl_tasks(glue_data, tmp) if glue_data else {}
        if task_data:
            include_path = localise_tasks(include_path, task_data, tmp)
        paths = [str(p) for p in (tmp if icl else None, include_path) if p]
        # the harness's own task index takes seconds to build: only when a task is not a local one
        manager = TaskManager(include_path=paths, include_defaults=False) if paths else None
        if manager is None or any(n not in manager.all_subtasks and n not in manager.all_groups for n in names):
            manager = TaskManager(include_path=paths or None)
        unknown = [n for n in names if n not in manager.all_subtasks and n not in manager.all_groups]
        if unknown:
            hint = " (hlm's in-context tasks need --glue-data)" if any(n.endswith("_icl") for n in unknown) else ""
            raise UserError(f"unknown harness task(s): {', '.join(unknown)}{hint}")
        try:
            out = lm_eval.simple_evaluate(
                model=model, tasks=names, num_fewshot=num_fewshot, task_manager=manager, limit=limit,
                log_samples=log_samples, random_seed=backend.get("seed", 0), fewshot_random_seed=1234,
            )  # fmt: skip
        except (ConnectionError, OSError) as e:  # offline, a task's dataset with no local copy under --task-data
            if not task_data:
                raise
            raise UserError(
                f"a task's dataset is not under --task-data {task_data} ({str(e).splitlines()[0][:100]}); fetch it "
                "once: huggingface-cli download --repo-type dataset OWNER/NAME --local-dir TASK_DATA/OWNER/NAME"
            ) from None
    results = {
        task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, metrics in out["results"].items()
    }
    result = stamp(
        "harness",
        {
            "model": str(run or hf_model),
            "objective": model.lm.kind,
            "scorer": model.scorer.name,
            "num_fewshot": num_fewshot,
            "sampling": vars(model.sampling),  # generate_until's, and cfg_scale also the bounds'
            "results": results,
            "groups": out.get("group_subtasks", {}),  # group -> its tasks (and groups)
            "n": {task: v.get("effective", v.get("original")) for task, v in out.get("n-samples", {}).items()},
            "majority": {task: majority(valid, limit) for task, valid in icl.items() if task in results},
        },
        model.lm.weights,
    )
    if log_samples:
        result["samples"] = {
            task: [{"doc_id": s["doc_id"], "target": s["target"], "resps": s["filtered_resps"]} for s in rows]
            for task, rows in out["samples"].items()
        }
    return result
