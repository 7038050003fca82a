"""Per-document measurements the cleaning rules compare with their thresholds.

Units are script-aware: words for space-separated text, characters for text written without
spaces (Thai, Lao, Khmer, Burmese, Chinese; script-detected). Repetition statistics follow Gopher
(Rae et al. 2021): n-grams are of words, or for spaceless text of characters, n scaled by the
script's characters per word (about 3 for Thai and Lao, 4 for Khmer, 5 for Burmese with its
stacked marks, 2 for Chinese) so that the
thresholds, set for words, keep their meaning.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

STAT_NAMES = ("units", "mean_line_chars", "line_punct_frac", "symbol_ratio", "digit_ratio", "url_ratio",
              "dup_line_frac", "dup_line_char_frac", "top_2gram_frac", "dup_5gram_frac", "lorem_ipsum",
              "curly_ratio", "code_line_frac", "bullet_line_frac", "letter_frac", "dup_phrase_frac")

# Ends of sentences in our scripts (and closing quotes), and ends of clauses: a line of prose in
# Waray, Cebuano, Tagalog, Indonesian or Vietnamese often ends in `;` (a clause of a list, the UDHR
# preamble) or `:` (before a list), which FineWeb's `.!?"'` does not count; menus and tag lists
# end in neither.
_TERMINAL = tuple(".!?。！？…\"'”’»)]」』។៕။၊" + "।" + ";:；：")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•·●▪►–—◦‣○■□✓✔]|\d{1,3}[.)])\s")
# A line is code when it carries syntax natural text does not have. A `;` or `:` at the end of a
# line is not such a sign: Waray, Cebuano, Tagalog and Ilocano end clauses and list items with `;`,
# Vietnamese and many others end a line before a list with `:` (the UDHR preamble is `;`-separated in
# most languages). So a final `;` counts only together with a code token on the same line.
_CODE_START = re.compile(r"\s*(?:" + "|".join([  # matched at the start of the line
    r"[}\])]+\s*[;,)]?\s*$",  # a line of closing brackets
    r"}",  # `} else {`, `});`
    r"(?://|/\*|\*/|#!|<!--|<\?php)",  # comments, PHP
    r"function\s*[\w$]*\s*\(",
    r"(?:var|let|const)\s+[\w$]+\s*(?:=|;|,)",
    r"import\s+[\w.]+(?:\s+as\s+\w+)?\s*;?\s*$|import\s.*\sfrom\s+['\"]|from\s+[\w.]+\s+import\s+\w",
    r"return\s+[\w$.\[\]()]+\s*;\s*$",  # `return total;`
    r"def\s+\w+\s*\(|class\s+\w+\s*(?:[:({]|extends\b|implements\b)|#include\s*[<\"]",
    r"(?:if|elif|else|for|while|with|try|except|finally)\b[^.!?(\[=]{0,120}[(\[=][^.!?]{0,120}:\s*$"
    r"|(?:else|try|finally)\s*:\s*$",  # Python block openers with code in them
    r"[\w$.\[\]'\"]+\s*(?:[-+*/.|&]?=|=>)\s*[^=\s]",  # an assignment: `x = 1`, `total += n`
    r"[a-z]+(?:-[a-z]+)*\s*:\s*[\w#%.,()'\" -]{1,60};\s*$",  # a CSS declaration `margin: 0 auto;`
    r"\"[^\"]+\"\s*:\s*\S",  # a JSON member
]) + ")")
# Inline formatting tags left in prose by a careless HTML-to-text step (FLORES itself has `km<sup>2</sup>`)
# mark up words, not a program: only other tags count as markup.
_INLINE_TAG = r"(?:sup|sub|i|b|em|strong|u|small|br|span)\b"
_CODE_ANYWHERE = re.compile(r"[{}]\s*[;,)]?\s*$"  # a block opens or closes at the end of the line
                            rf"|<(?!{_INLINE_TAG})\w+(?:\s+[\w:-]+(?:=\"[^\"]*\"|='[^']*')?)*\s*/?>"
                            rf"|</(?!{_INLINE_TAG})\w+>|\?>\s*$")  # markup
_CODE_TOKEN = re.compile(r"[=$\[\]]|\w\(|\)\s*;|->|::|\+\+|&&|\|\|")  # with a final `;`: a statement


def is_code_line(line: str) -> bool:
    """Whether a line looks like program source or markup rather than prose (see `_CODE_START`)."""
    if _CODE_START.match(line) or _CODE_ANYWHERE.search(line):
        return True
    return line.rstrip().endswith(";") and bool(_CODE_TOKEN.search(line))


_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)


def _units(text: str, spaceless: bool) -> list[str]:
    if spaceless:
        return [c for c in text if not c.isspace()]
    return text.split()


def _repeats(lines: list[str]) -> list[str]:
    """Lines that occurred earlier in the document (the first occurrence is not a repeat)."""
    seen: set[str] = set()
    out = []
    for line in lines:
        if line in seen:
            out.append(line)
        else:
            seen.add(line)
    return out


def _ngram_stats(tokens: list[str], n_top: int, n_dup: int) -> tuple[float, float]:
    """(share of characters in the most frequent n_top-gram, share in duplicated n_dup-grams)."""
    total = sum(len(t) for t in tokens)
    if total == 0:
        return 0.0, 0.0
    top = 0.0
    if len(tokens) >= n_top:
        grams = Counter(tuple(tokens[i:i + n_top]) for i in range(len(tokens) - n_top + 1))
        gram, count = grams.most_common(1)[0]
        if count > 1:
            top = count * sum(len(t) for t in gram) / total
    # Gopher / datatrove `find_all_duplicate`: walk the n-grams; one seen before counts its
    # characters and the walk jumps past it, so a repeat is counted once and the first occurrence
    # never (the thresholds were set on this definition).
    seen: set[tuple[str, ...]] = set()
    repeated, i = 0, 0
    while i < len(tokens) - n_dup + 1:
        gram = tuple(tokens[i:i + n_dup])
        if gram in seen:
            repeated += sum(len(t) for t in gram)
            i += n_dup
        else:
            seen.add(gram)
            i += 1
    dup = repeated / total
    return top, dup


def _letter_runs(text: str) -> tuple[int, list[str]]:
    """(letters and marks of any script, the runs of them between spaces, digits and punctuation).

    Marks count as letters: Thai vowels and tone marks, the Burmese virama and Khmer subscripts are
    combining marks (category M), and a run must not break inside a syllable."""
    letters, runs, start = 0, [], -1
    for i, c in enumerate(text):
        if unicodedata.category(c)[0] in "LM":
            letters += 1
            if start < 0:
                start = i
        elif start >= 0:
            runs.append(text[start:i])
            start = -1
    if start >= 0:
        runs.append(text[start:])
    return letters, runs


def _dup_run_frac(runs: list[str]) -> float:
    """Share of the letters in runs that repeat an earlier run (the first occurrence not counted).

    In text written without spaces a run is a phrase or a sentence (Thai, Lao, Khmer and Burmese
    put spaces and punctuation between those, not between words), and phrases rarely recur
    (≤ 0.22 on UDHR/FLORES pages); a keyword or tag list repeats its few keywords, each its own run
    between separators (≥ 0.79). For spaced text a run is a word, so this is high in any prose."""
    seen: set[str] = set()
    repeated = total = 0
    for run in runs:
        total += len(run)
        if run in seen:
            repeated += len(run)
        else:
            seen.add(run)
    return repeated / total if total else 0.0


#: Characters per word by dominant spaceless script (shingles.SCRIPTS index): scales n-grams.
_CHARS_PER_WORD = {1: 3, 2: 3, 3: 4, 4: 5, 5: 2}  # thai, lao, khmer, myanmar, han


def document_stats(text: str, spaceless: bool, chars_per_word: int = 3,
                   max_units: float | None = None) -> dict[str, float]:
    """The statistics of one document. Above `max_units` units the document is `too_long` whatever
    else it measures, so the n-gram and letter-run statistics (memory in proportion to the text)
    are skipped (their neutral values: no repeats, all letters)."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    chars = sum(len(ln) for ln in lines) or 1
    units = _units(text, spaceless)
    n_units = len(units) or 1
    dup_lines = _repeats(lines)
    non_space = sum(1 for c in text if not c.isspace()) or 1
    words = _WORD.findall(text.lower())
    top_n, dup_n = (2 * chars_per_word, 5 * chars_per_word) if spaceless else (2, 5)
    tokens = units if spaceless else words
    too_long = max_units is not None and len(units) > max_units
    top2, dup5 = (0.0, 0.0) if too_long else _ngram_stats(tokens, top_n, dup_n)
    letters, runs = (non_space, []) if too_long else _letter_runs(text)
    return {
        "units": float(len(units)),
        "mean_line_chars": chars / max(len(lines), 1),
        "line_punct_frac": sum(ln.rstrip().endswith(_TERMINAL) for ln in lines) / max(len(lines), 1),
        "symbol_ratio": (text.count("#") + text.count("…") + text.count("...")) / n_units,
        "digit_ratio": sum(c.isdigit() for c in text) / non_space,
        "url_ratio": sum(len(m) for m in _URL.findall(text)) / chars,
        "dup_line_frac": len(dup_lines) / max(len(lines), 1),
        "dup_line_char_frac": sum(len(ln) for ln in dup_lines) / chars,
        "top_2gram_frac": top2,
        "dup_5gram_frac": dup5,
        "lorem_ipsum": 1.0 if _LOREM.search(text) else 0.0,
        "curly_ratio": (text.count("{") + text.count("}")) / non_space,
        "code_line_frac": sum(is_code_line(ln) for ln in lines) / max(len(lines), 1),
        "bullet_line_frac": sum(bool(_BULLET.match(ln)) for ln in lines) / max(len(lines), 1),
        "letter_frac": letters / non_space,
        "dup_phrase_frac": _dup_run_frac(runs),
    }


def batch_stats(texts: Sequence[str], max_units: float | None = None) -> list[dict[str, float]]:
    """`document_stats` of every text, with the dedup's script decision (`spaceless`, characters per
    word); computed for the whole batch at once by `measure.measure`."""
    from data_engine.clean.measure import measure

    columns = measure(texts, max_units)
    return [{name: float(columns[name][i]) for name in STAT_NAMES} for i in range(len(texts))]
