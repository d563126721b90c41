"""Languages and BabyLM 2026's multilingual budget: English-equivalent words by byte premium.

BabyBabelLM (babylm-org/multilingual-babylm, src/pad_utils.py: eng_sizes_per_tier) sizes 1M English-equivalent
words of language L as 5.43 x factor_L MB of UTF-8 text, factor_L the byte premium of Arnett, Chang & Bergen
(2024): how many bytes language L takes for what English says in one. So a text's English-equivalent words are
its UTF-8 bytes / (5.43 x factor_L), for English too (factor 1); hlm counts the bytes of the text's lines, line
breaks not counted. The table ships with hlm (resources/byte_premiums.tsv, with its source and MIT licence).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

from hybridlm.errors import UserError

ENGLISH_BYTES_PER_WORD = 5.43  # BabyBabelLM: 1M English words are 5.430 MB of UTF-8 text
# a language with premiums for several scripts and one it is written in by default (BabyBabelLM's Chinese is
# Simplified); every other such language needs its script
DEFAULT_SCRIPT = {"zho": "hans"}
# macro-language codes BabyBabelLM maps to the table's individual language (pad_utils.get_byte_premium_factor)
ALIASES = {"ara": "arb", "fas": "pes"}


@dataclass(frozen=True)
class Language:
    """A language of a corpus: its ISO 639-3 code, script (ISO 15924, lower case) and byte premium."""

    lang: str
    script: str
    byte_premium: float

    @property
    def tag(self) -> str:
        """How hlm names it in manifests, logs and metrics: `nld`, or `zho_hans` where the script matters."""
        return self.lang if len(_table().get(self.lang, {})) <= 1 else f"{self.lang}_{self.script}"

    @property
    def words_per_byte(self) -> float:
        return 1.0 / (ENGLISH_BYTES_PER_WORD * self.byte_premium)

    def english_words(self, n_bytes: int | float) -> float:
        """English-equivalent words of `n_bytes` bytes of UTF-8 text in this language."""
        return n_bytes * self.words_per_byte


@functools.cache
def _table() -> dict[str, dict[str, float]]:
    """lang -> script -> byte premium, read from the shipped table."""
    table: dict[str, dict[str, float]] = {}
    text = files("hybridlm").joinpath("resources", "byte_premiums.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    for _lang_script, lang, script, _source, premium in rows[1:]:
        table.setdefault(lang, {})[script] = float(premium)
    return table


def language(tag: str, script: str | None = None) -> Language:
    """The Language of a tag such as `nld`, `zho`, `zho_hans` or `zho_Hans` (a row's `script` field may give the
    script separately, e.g. `Latn`); unknown languages and ambiguous scripts are one line naming the fix."""
    if not isinstance(tag, str) or not tag.strip():
        raise UserError("a language tag is missing; give an ISO 639-3 code such as eng, nld or zho_hans")
    lang, _, tag_script = tag.strip().lower().replace("-", "_").partition("_")
    lang = ALIASES.get(lang, lang)
    chosen = (tag_script or (script or "").strip().lower()) or None
    scripts = _table().get(lang)
    if not scripts:
        raise UserError(
            f"no byte premium for language {tag!r}: give an ISO 639-3 code from hlm's table (e.g. eng, nld, zho_hans)"
        )
    if chosen is None:
        if len(scripts) == 1:
            chosen = next(iter(scripts))
        elif lang in DEFAULT_SCRIPT:
            chosen = DEFAULT_SCRIPT[lang]
        else:
            raise UserError(f"{lang} is written in several scripts: give one, e.g. {lang}_{sorted(scripts)[0]}")
    if chosen not in scripts:
        known = ", ".join(f"{lang}_{s}" for s in sorted(scripts))
        raise UserError(f"no byte premium for {lang} in script {chosen!r}: hlm's table has {known}")
    return Language(lang, chosen, scripts[chosen])
