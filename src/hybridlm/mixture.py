"""A language mixture: an order of training windows that realises shares of English-equivalent words.

`--mix-languages eng:1,nld:1,zho:1` (or `uniform`) asks that, of the words seen, each language has its share, at
every point of the run (so at every chck_ checkpoint). The order is built one sample at a time: each sample is a
window of the language furthest behind its share (words seen / share, smallest first), taken from that language's
own seeded permutation (a new one each time the language's windows are used up: a small language repeats, a large
one is subsampled). The shares then hold to within one window's words at every sample, not only on average.

The order depends on nothing but (seed, data), so a batch is a pure function of (seed, step) whatever the number of
processes; it is built from the start when a run resumes (a few seconds per million samples).
"""

from __future__ import annotations

import threading

import numpy as np

from hybridlm.errors import UserError
from hybridlm.languages import language


def parse_shares(spec: str, available: list[str]) -> dict[str, float]:
    """`eng:1,nld:1,zho:2` or `uniform` -> {tag: share} over the data's languages (tags as the data names them),
    normalised to sum to 1."""
    if not available:
        raise UserError("--mix-languages needs data prepared with languages: hlm prepare --lang ...")
    if spec.strip() == "uniform":
        return {tag: 1 / len(available) for tag in available}
    shares: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.strip().partition(":")
        try:
            share = float(value) if sep else float("nan")
        except ValueError:
            share = float("nan")
        if not share >= 0 or share == float("inf"):
            raise UserError(f"--mix-languages entry {part.strip()!r} must be LANG:SHARE, e.g. nld:1 (or: uniform)")
        tag = language(name).tag
        if tag not in available:
            raise UserError(
                f"--mix-languages names {tag}, which the data does not hold (it has {', '.join(available)})"
            )
        shares[tag] = shares.get(tag, 0.0) + share
    total = sum(shares.values())
    if total <= 0:
        raise UserError("--mix-languages: give at least one language a positive share")
    return {tag: share / total for tag, share in shares.items() if share > 0}


class LanguageMixture:
    """The mixed order of a split's windows (PackedTokens with languages) for one seed."""

    def __init__(self, data, shares: dict[str, float], seed: int):
        self.seed = seed
        self.tags = list(shares)
        self.shares = np.array([shares[t] for t in self.tags], dtype=np.float64)
        lang = data.window_language
        self.pools = [np.flatnonzero(lang == data.languages.index(t)) for t in self.tags]
        for tag, pool in zip(self.tags, self.pools):
            if not len(pool):
                raise UserError(
                    f"--mix-languages: the data has no {tag} windows of this length; use a shorter --seq-len"
                )
        self.window_words = data.window_words
        self._buffer = np.empty(0, dtype=np.int64)  # the windows of samples 0, 1, ... (grown by doubling)
        self.built = 0  # how many samples of the order are built
        self.words = np.zeros(len(self.tags))  # words of those samples, by language
        self.used = np.zeros(len(self.tags), dtype=np.int64)  # windows taken from each language
        self._perms: dict[int, tuple[int, np.ndarray]] = {}
        self._lock = threading.Lock()  # the batch prefetcher's thread may extend the order too

    def _window(self, k: int, rank: int) -> int:
        pool = self.pools[k]
        epoch = rank // len(pool)
        if self._perms.get(k, (-1,))[0] != epoch:
            self._perms[k] = (epoch, np.random.default_rng([self.seed, epoch, k, 0x6C616E67]).permutation(len(pool)))
        return int(pool[self._perms[k][1][rank % len(pool)]])

    def _extend(self, upto: int) -> None:
        if upto > len(self._buffer):  # doubling: a run of S samples copies O(S) in all, not O(S) a step
            grown = np.empty(max(upto, 2 * len(self._buffer)), dtype=np.int64)
            grown[: self.built] = self._buffer[: self.built]
            self._buffer = grown
        for i in range(self.built, upto):
            k = int(np.argmin(self.words / self.shares))  # the language furthest behind its share
            w = self._window(k, int(self.used[k]))
            self.used[k] += 1
            self.words[k] += self.window_words[w]
            self._buffer[i] = w
        self.built = max(self.built, upto)

    def windows_from(self, start: int, count: int) -> np.ndarray:
        """The windows of samples start .. start + count - 1 of the mixed order."""
        with self._lock:
            self._extend(start + count)
            return self._buffer[start : start + count].copy()
