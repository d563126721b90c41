"""A small probabilistic grammar of English-like text, for `hlm demo` and tests.

It has the phenomena minimal-pair suites probe: subject-verb agreement (also across a
prepositional phrase or a relative clause with an attractor noun of the other number),
determiner-noun agreement, reflexive gender/number agreement and verb transitivity. Every
sentence is grammatical; `minimal_pairs` makes BLiMP-format pairs by breaking one of these.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# (singular, plural, gender: m/f/n for reflexives)
PEOPLE = [
    ("boy", "boys", "m"),
    ("girl", "girls", "f"),
    ("man", "men", "m"),
    ("woman", "women", "f"),
    ("king", "kings", "m"),
    ("queen", "queens", "f"),
    ("teacher", "teachers", "n"),
    ("farmer", "farmers", "n"),
    ("child", "children", "n"),
    ("doctor", "doctors", "n"),
    ("sailor", "sailors", "n"),
    ("baker", "bakers", "n"),
]
ANIMALS = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("horse", "horses"),
    ("mouse", "mice"),
    ("fox", "foxes"),
    ("rabbit", "rabbits"),
    ("sheep", "sheep"),
    ("wolf", "wolves"),
    ("goose", "geese"),
]
THINGS = [
    ("ball", "balls"),
    ("book", "books"),
    ("apple", "apples"),
    ("house", "houses"),
    ("tree", "trees"),
    ("box", "boxes"),
    ("letter", "letters"),
    ("garden", "gardens"),
    ("river", "rivers"),
    ("cake", "cakes"),
    ("window", "windows"),
    ("song", "songs"),
    ("stone", "stones"),
    ("bridge", "bridges"),
]
DET_SG = ["the", "a", "this", "that", "every", "one"]
DET_PL = ["the", "these", "those", "some", "many", "two", "few"]
ADJ = ["big", "small", "old", "young", "red", "green", "quiet", "happy", "tired", "clever", "brave", "little", "dark"]
# (3sg, plural/base, past)
TRANSITIVE = [
    ("sees", "see", "saw"),
    ("likes", "like", "liked"),
    ("finds", "find", "found"),
    ("holds", "hold", "held"),
    ("watches", "watch", "watched"),
    ("wants", "want", "wanted"),
    ("carries", "carry", "carried"),
    ("follows", "follow", "followed"),
    ("remembers", "remember", "remembered"),
]
INTRANSITIVE = [
    ("sleeps", "sleep", "slept"),
    ("runs", "run", "ran"),
    ("sings", "sing", "sang"),
    ("laughs", "laugh", "laughed"),
    ("waits", "wait", "waited"),
    ("arrives", "arrive", "arrived"),
    ("falls", "fall", "fell"),
    ("smiles", "smile", "smiled"),
]
PREP = ["near", "behind", "under", "beside", "with", "by"]
ADV = ["quickly", "slowly", "often", "again", "today", "quietly"]
PLACES = ["in the garden", "by the river", "at home", "in the morning", "after dinner", "near the bridge"]
REFLEXIVE = {
    ("m", False): "himself",
    ("f", False): "herself",
    ("n", False): None,
    ("m", True): "themselves",
    ("f", True): "themselves",
    ("n", True): "themselves",
}


class Grammar:
    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def _pick(self, xs):
        return self.rng.choice(xs)

    def noun_phrase(self, plural: bool, kind: str = "any", adj_p: float = 0.3):
        """(words, head noun entry)."""
        pool = {"person": PEOPLE, "animal": ANIMALS, "thing": THINGS}.get(kind)
        if pool is None:
            pool = self._pick([PEOPLE, ANIMALS, ANIMALS, THINGS]) if kind == "any" else PEOPLE + ANIMALS
        entry = self._pick(pool)
        det = self._pick(DET_PL if plural else DET_SG)
        words = [det]
        if self.rng.random() < adj_p:
            words.append(self._pick(ADJ))
        noun = entry[1] if plural else entry[0]
        following = words[1] if len(words) > 1 else noun
        if det == "a" and following[0] in "aeiou":
            words[0] = "an"
        return words + [noun], entry

    def subject(self, plural: bool, kind="animate"):
        """A subject NP, sometimes with a PP or relative clause holding an attractor of the other number."""
        words, entry = self.noun_phrase(plural, kind)
        r = self.rng.random()
        if r < 0.15:
            pp, _ = self.noun_phrase(not plural if self.rng.random() < 0.7 else plural, "any", adj_p=0.1)
            words += [self._pick(PREP)] + pp
        elif r < 0.27:
            rc_plural = not plural if self.rng.random() < 0.7 else plural
            rc_subj, _ = self.noun_phrase(rc_plural, "animate", adj_p=0.0)
            verb = self._pick(TRANSITIVE)
            words += ["that"] + rc_subj + [verb[1] if rc_plural else verb[0]]
        return words, entry

    def sentence(self) -> str:
        plural = self.rng.random() < 0.45
        past = self.rng.random() < 0.2
        r = self.rng.random()
        if r < 0.12:  # reflexive
            subj, entry = self.subject(plural, "person")
            refl = REFLEXIVE[(entry[2], plural)]
            if refl is None:
                refl = self._pick(["himself", "herself"])
                entry = (entry[0], entry[1], "m" if refl == "himself" else "f")
            verb = self._pick(TRANSITIVE)
            v = verb[2] if past else (verb[1] if plural else verb[0])
            return " ".join(subj + [v, refl]) + " ."
        subj, _ = self.subject(plural)
        if r < 0.55:
            verb = self._pick(TRANSITIVE)
            obj, _ = self.noun_phrase(self.rng.random() < 0.4, "any")
            v = verb[2] if past else (verb[1] if plural else verb[0])
            words = subj + [v] + obj
        else:
            verb = self._pick(INTRANSITIVE)
            v = verb[2] if past else (verb[1] if plural else verb[0])
            words = subj + [v]
            if self.rng.random() < 0.3:
                words.append(self._pick(ADV))
        if self.rng.random() < 0.2:
            words += self._pick(PLACES).split()
        return " ".join(words) + " ."

    def paragraph(self, n_sentences: int) -> str:
        text = " ".join(self.sentence() for _ in range(n_sentences))
        return text[0].upper() + text[1:]


def write_corpus(path, n_words: int, seed: int = 0, paragraphs_per_doc: int = 20) -> Path:
    """Write a corpus in hybridlm's text format: a paragraph a line, a blank line between documents."""
    g = Grammar(seed)
    path = Path(path)
    words = 0
    with open(path, "w", encoding="utf-8") as f:
        while words < n_words:
            for _ in range(paragraphs_per_doc):
                p = g.paragraph(g.rng.randint(3, 8))
                f.write(p + "\n")
                words += len(p.split())
            f.write("\n")
    return path


def _agreement_pair(g: Grammar, attractor: str):
    plural = g.rng.random() < 0.5
    head, _ = g.noun_phrase(plural, "animate", adj_p=0.2)
    if attractor == "pp":
        pp, _ = g.noun_phrase(not plural, "any", adj_p=0.0)
        head += [g._pick(PREP)] + pp
    elif attractor == "relative":
        rc, _ = g.noun_phrase(not plural, "animate", adj_p=0.0)
        v = g._pick(TRANSITIVE)
        head += ["that"] + rc + [v[0] if plural else v[1]]
    verb = g._pick(INTRANSITIVE)
    good, bad = (verb[1], verb[0]) if plural else (verb[0], verb[1])
    return " ".join(head + [good]) + " .", " ".join(head + [bad]) + " ."


def _determiner_pair(g: Grammar):
    plural = g.rng.random() < 0.5
    noun = g._pick(ANIMALS + THINGS + PEOPLE)
    if noun[0] == noun[1]:  # "sheep": no contrast
        noun = THINGS[0]
    pairs = [("this", "these"), ("that", "those")]
    sg_det, pl_det = g._pick(pairs)
    verb = g._pick(INTRANSITIVE)
    good = [pl_det if plural else sg_det, noun[1] if plural else noun[0], verb[1] if plural else verb[0]]
    bad = [sg_det if plural else pl_det] + good[1:]
    return " ".join(good) + " .", " ".join(bad) + " ."


def _reflexive_pair(g: Grammar):
    plural = g.rng.random() < 0.5
    entry = g._pick([p for p in PEOPLE if p[2] != "n"])
    det = g._pick(DET_PL if plural else DET_SG[:2])
    verb = g._pick(TRANSITIVE)
    good_r = "themselves" if plural else ("himself" if entry[2] == "m" else "herself")
    bad_r = ("himself" if entry[2] == "m" else "herself") if plural else "themselves"
    words = [det, entry[1] if plural else entry[0], verb[1] if plural else verb[0]]
    return " ".join(words + [good_r]) + " .", " ".join(words + [bad_r]) + " ."


def _transitivity_pair(g: Grammar):
    plural = g.rng.random() < 0.5
    subj, _ = g.noun_phrase(plural, "animate", adj_p=0.2)
    t, i = g._pick(TRANSITIVE), g._pick(INTRANSITIVE)
    obj, _ = g.noun_phrase(g.rng.random() < 0.5, "thing", adj_p=0.0)
    k = 1 if plural else 0
    return " ".join(subj + [t[k]] + obj) + " .", " ".join(subj + [i[k]] + obj) + " ."


PARADIGMS = {
    "subject_verb_agreement": ("morphology", lambda g: _agreement_pair(g, "none")),
    "agreement_across_pp": ("syntax", lambda g: _agreement_pair(g, "pp")),
    "agreement_across_relative_clause": ("syntax", lambda g: _agreement_pair(g, "relative")),
    "determiner_noun_agreement": ("morphology", _determiner_pair),
    "reflexive_agreement": ("syntax_semantics", _reflexive_pair),
    "verb_transitivity": ("syntax", _transitivity_pair),
}


def minimal_pairs(n_per_paradigm: int, seed: int = 1) -> list[dict]:
    g = Grammar(seed)
    rows = []
    for uid, (field, make) in PARADIGMS.items():
        for i in range(n_per_paradigm):
            good, bad = make(g)
            rows.append(
                {
                    "sentence_good": good[0].upper() + good[1:],
                    "sentence_bad": bad[0].upper() + bad[1:],
                    "UID": uid,
                    "field": field,
                    "linguistics_term": uid.split("_")[0],
                    "pairID": str(i),
                }
            )
    return rows


def write_minimal_pairs(out_dir, n_per_paradigm: int = 100, seed: int = 1) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_uid: dict[str, list] = {}
    for row in minimal_pairs(n_per_paradigm, seed):
        by_uid.setdefault(row["UID"], []).append(row)
    for uid, rows in by_uid.items():
        (out / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def write_grammaticality(out_dir, n_train: int = 2000, n_valid: int = 400, seed: int = 7) -> Path:
    """A labelled grammaticality task for `hlm finetune --task grammar`: grammar.{train,valid}.jsonl
    with {"sentence", "label"} (1: grammatical, 0: the minimal pair's ungrammatical twin); the two
    files come from different seeds, so no sentence pair is in both."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_paradigms = len(PARADIGMS)
    for split, n, s in (("train", n_train, seed), ("valid", n_valid, seed + 1000)):
        rows = []
        for p in minimal_pairs(max(1, n // (2 * n_paradigms)), seed=s):
            rows += [{"sentence": p["sentence_good"], "label": 1}, {"sentence": p["sentence_bad"], "label": 0}]
        random.Random(s).shuffle(rows)
        (out / f"grammar.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


PLURAL_PROMPT = "plural : {} ="  # the SFT task's prompt: the response is the sentence with its subject plural


def plural_pairs(n: int, seed: int = 11) -> list[dict]:
    """A task with one right answer, for `hlm sft`: {"prompt": "plural : the old dog runs . =", "response":
    " the old dogs run ."}: the subject made plural and its verb agreeing (this -> these, that -> those). Distinct
    sentences; a different seed gives (mostly) other ones."""
    g, seen, out = Grammar(seed), set(), []
    nouns = [e for e in PEOPLE + ANIMALS if e[0] != e[1]]
    while len(out) < n:
        entry, verb = g._pick(nouns), g._pick(INTRANSITIVE)
        det_sg, det_pl = g._pick([("the", "the"), ("this", "these"), ("that", "those")])
        adj = [g._pick(ADJ)] if g.rng.random() < 0.4 else []
        tail = [g._pick(ADV)] if g.rng.random() < 0.4 else []
        singular = " ".join([det_sg, *adj, entry[0], verb[0], *tail]) + " ."
        if singular in seen:
            if len(seen) > 20 * n:
                raise ValueError(f"the grammar has fewer than {n} such sentences")
            continue
        seen.add(singular)
        plural = " ".join([det_pl, *adj, entry[1], verb[1], *tail]) + " ."
        out.append({"prompt": PLURAL_PROMPT.format(singular), "response": " " + plural})
    return out


def write_plural_pairs(out_dir, n_train: int = 2000, n_valid: int = 200, seed: int = 11) -> tuple[Path, Path]:
    """sft.train.jsonl and sft.valid.jsonl of `plural_pairs`, no sentence in both."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = plural_pairs(n_train + n_valid, seed)
    files = out / "sft.train.jsonl", out / "sft.valid.jsonl"
    for f, rows in zip(files, (pairs[:n_train], pairs[n_train:])):
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


# ---------------------------------------------------------------- recognising the grammar's sentences
def _entries(pool, plural: bool | None):
    """{word: (entry, plural)} of a noun pool, both numbers unless `plural` says which."""
    out: dict[str, list] = {}
    for entry in pool:
        for number in (False, True) if plural is None else (plural,):
            out.setdefault(entry[1] if number else entry[0], []).append((entry, number))
    return out


_POOLS = {"person": PEOPLE, "animate": PEOPLE + ANIMALS, "any": PEOPLE + ANIMALS + THINGS, "thing": THINGS}


def _noun_phrases(words, i, kind, adjectives=True):
    """Every parse of a noun phrase at words[i:]: (end, head entry, plural)."""
    if i >= len(words):
        return
    det = words[i]
    numbers = [n for n, dets in ((False, DET_SG + ["an"]), (True, DET_PL)) if det in dets]
    for plural in numbers:
        j = i + 1
        for with_adj in (False, True) if adjectives else (False,):
            k = j + with_adj
            if k >= len(words) or (with_adj and words[j] not in ADJ):
                continue
            following = words[j] if with_adj else words[k]
            if det in ("a", "an") and (det == "an") != (following[0] in "aeiou"):
                continue
            for entry, number in _entries(_POOLS[kind], plural).get(words[k], []):
                yield k + 1, entry, number


def _subjects(words, i, kind):
    """A subject: a noun phrase, maybe with a prepositional phrase or a relative clause after it."""
    for j, entry, plural in _noun_phrases(words, i, kind):
        yield j, entry, plural
        if j < len(words) and words[j] in PREP:
            for k, _, _ in _noun_phrases(words, j + 1, "any"):
                yield k, entry, plural
        if j < len(words) and words[j] == "that":
            for k, _, rc_plural in _noun_phrases(words, j + 1, "animate", adjectives=False):
                if k < len(words) and words[k] in {v[1] if rc_plural else v[0] for v in TRANSITIVE}:
                    yield k + 1, entry, plural


def _verb_forms(verbs, plural: bool) -> set[str]:
    return {v[2] for v in verbs} | {v[1] if plural else v[0] for v in verbs}


def _ends(words, i) -> bool:
    """The rest is an optional place phrase."""
    return words[i:] == [] or " ".join(words[i:]) in PLACES


def is_grammatical(sentence: str) -> bool:
    """Whether the grammar generates `sentence` (case and the final " ." aside): an exact check of a
    sample's sentences, agreement (subject-verb, determiner-noun, reflexives) and transitivity included."""
    words = sentence.lower().split()
    if not words or words[-1] != ".":
        return False
    words = words[:-1]
    for j, entry, plural in _subjects(words, 0, "animate"):
        if j >= len(words):
            continue
        verb, rest = words[j], j + 1
        if verb in _verb_forms(TRANSITIVE, plural):
            if entry in PEOPLE and rest + 1 == len(words):  # a reflexive object
                wanted = REFLEXIVE[(entry[2], plural)]
                if words[rest] == wanted or (wanted is None and words[rest] in ("himself", "herself")):
                    return True
            if any(_ends(words, k) for k, _, _ in _noun_phrases(words, rest, "any")):
                return True
        if verb in _verb_forms(INTRANSITIVE, plural):
            if _ends(words, rest) or (rest < len(words) and words[rest] in ADV and _ends(words, rest + 1)):
                return True
    return False


def sentences_of(text: str) -> tuple[list[str], str]:
    """The complete sentences of a text (each ending in " ."), and what is left after the last one."""
    parts = text.replace("\n", " ").split(" .")
    return [p.strip() + " ." for p in parts[:-1] if p.strip()], parts[-1].strip()
