"""The fast paths of the cleaning stage give the answers of the plain definitions, on tricky text.

`normalize.clean_text` (whole-text regular expressions) against the line-by-line definition below;
`measure.measure` (numpy over a batch) against `stats.document_stats` (one document in plain
Python); `lid176.predict` (numpy) against fastText's own `predict`, bit for bit; the script rule
against the dedup's. Tricky: Thai, Khmer, Lao, Burmese and Chinese without spaces, combining
marks, CRLF and other line breaks, empty and blank lines, characters Python case-folds specially.
"""

from __future__ import annotations

import random
import re
import unicodedata

import numpy as np
import pytest

from data_engine.clean import lid176
from data_engine.clean.lid import _lid176, _model_path, lid176_top
from data_engine.clean.measure import _codepoints, _dominant_script, measure
from data_engine.clean.normalize import _TABLE, clean_text
from data_engine.clean.stats import _CHARS_PER_WORD, _LOREM, _URL, STAT_NAMES, document_stats
from data_engine.dedup.shingles import dominant_spaceless_script, normalize_for_shingles
from data_engine.langs import LANGS
from data_engine.sample.corpus import load_udhr
from data_engine.sample.labelled import JUNK_KINDS, junk_documents

SPACELESS = ["ภาษาไทยเขียนติดกันโดยไม่เว้นวรรคระหว่างคำ", "ភាសាខ្មែរសរសេរជាប់គ្នា", "ພາສາລາວຂຽນຕິດກັນ",
             "မြန်မာဘာသာစကားကို ဆက်တိုက်ရေးသည်", "中文书写时词与词之间没有空格。"]
MARKS = ["e\u0301 a\u0300 n\u0303", "Việt Nam", "ที่นี่ ดี", "ကမ္ဘာ ကမ္ဘာ", "ក្រុង ភ្នំពេញ", "İstanbul ſtraße Kelvin K ΣΑΣ"]
ALPHABET = [*" \t\n\r\x0b\x0c\x85\u2028\u2029\xa0\u3000\u2000\u200b\u200c\u200d\u00ad\ufeff\x07\x1f\x7f\x9f",
            *"ab.;:,!?{}<>=#…\"'-•1٣²_İıſKΣσ/", "\r\n", "  ", "\n\n\n", "...", "ก่", "ខ្ម", "ລາວ", "ကမ္ဘာ",
            "漢字", "😀", "\u0301", "http://x.org/a ", "WWW.", "httpſ://y ", "lorem ipsum ", "LOREM IPſUM ",
            "var x = 1;", "def f(x):", "} else {", "- item ", "12. x ", "<div>", "return a;"]


def _reference_clean(text: str) -> str:
    """The definition, a line at a time (as the stage computed it before the whole-text version)."""
    text = text.replace("\r\n", "\n").translate(_TABLE)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _tricky(n: int, seed: int = 7, max_len: int = 60) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def test_clean_text_equals_its_line_by_line_definition():
    texts = [*_tricky(20000), *SPACELESS, *MARKS, "a\r\n\r\n\r\nb", "  \n \t\n x \n", "\u00a0\u3000", ""]
    texts += [chr(c) + " " + chr(c) for c in range(0x3100) if not 0xD800 <= c < 0xE000]
    assert [t for t in texts if clean_text(t) != _reference_clean(t)] == []


def test_measure_equals_document_stats():
    texts = [clean_text(t) for t in _tricky(3000, max_len=300)]
    texts += [clean_text(t) for t in (*SPACELESS, *MARKS)]
    texts += ["\n".join(SPACELESS * 3), " ".join(MARKS * 5), "\n\n".join(["Home | News"] * 4 + SPACELESS)]
    texts += [clean_text(d.text) for lang in (*LANGS, "tha", "khm", "lao", "mya", "zho")
              for d in junk_documents(lang, 2 * len(JUNK_KINDS))]
    texts += ["\n".join(p for s in load_udhr(lang) for p in s)[:3000] for lang in LANGS]
    texts += ["", "a", "ก" * 400, "กข" * 300, "x " * 300, "ab " * 100_001]  # the last one is too long
    # most frequent n-grams tied: which is first seen decides the characters counted
    texts += ["x yy zzz x yy zzz w zzz w", "long words here and long words here and", "a b a b c d c d c d"]
    scripts = dominant_spaceless_script(texts)
    got = measure(texts, max_units=100_000)
    for i, (text, script) in enumerate(zip(texts, scripts, strict=True)):
        want = document_stats(text, bool(script), _CHARS_PER_WORD.get(int(script), 3), 100_000)
        assert {name: float(got[name][i]) for name in STAT_NAMES} == want, text[:80]


def test_measure_prefilters_rest_on_case_folding_facts():
    """measure runs the URL and lorem ipsum searches only where the lower-cased text holds "http",
    "www." or "orem": true only if no character but the ASCII pair matches these letters under
    IGNORECASE, which these patterns (compiled like stats') check over all of Unicode."""
    for letter in "htpwoerm":
        pattern = re.compile(letter, re.IGNORECASE)
        assert {chr(c) for c in range(0x110000) if pattern.fullmatch(chr(c))} == {letter, letter.upper()}
    assert _URL.flags & re.IGNORECASE and _LOREM.flags & re.IGNORECASE


def test_script_rule_equals_the_dedups():
    texts = [*SPACELESS, *MARKS, *_tricky(2000), "ข้อความ mixed with English words", "漢字 and Latin", ""]
    measured = _dominant_script(*_codepoints([normalize_for_shingles(t) for t in texts]))  # measure's layout
    assert measured.tolist() == dominant_spaceless_script(texts).tolist()


@pytest.fixture(scope="module")
def lid_texts() -> list[str]:
    texts = [p for lang in LANGS for s in load_udhr(lang) for p in s]
    texts += [clean_text(t) for t in (*SPACELESS, *MARKS, *_tricky(1500, seed=3, max_len=200))]
    texts += ["a " * 1500, "x" * 3000, "<>", "<a>b<c>", "😀", "\U00010348\U00010348 \U0001f600", "</s>",
              "de in </s> en", "__label__en hello"]
    return [" ".join(t[:2000].split()) for t in texts] + ["a\x00b c", "ab  c", " ab"]  # the last: as given


def test_lid176_in_numpy_gives_fasttexts_answers_bit_for_bit(lid_texts):
    model = lid176.load(_model_path())
    labels, probs = lid176.predict(model, lid_texts)
    native_labels, native_probs = _lid176().predict([t for t in lid_texts if t], k=1)
    native = iter(zip(native_labels, native_probs, strict=True))
    checked = 0
    for text, label, prob in zip(lid_texts, labels, probs, strict=True):
        if not text:
            continue
        want_label, want_prob = next(native)
        if label is None:  # left to fastText: NUL, "__label__", "</s>", not single-spaced
            continue
        assert (label, np.float32(prob)) == (want_label[0].removeprefix("__label__"), np.float32(want_prob[0])), text
        checked += 1
    left = [t for t, label in zip(lid_texts, labels, strict=True) if t and label is None]
    assert {"</s>", "de in </s> en", "__label__en hello", "a\x00b c", "ab  c", " ab"} <= set(left)
    assert len(left) <= 6 + 5 and checked == sum(1 for t in lid_texts if t) - len(left)  # near-ties: few


def test_lid_top_labels_are_fasttexts_including_what_it_is_left(lid_texts):
    given = [t for t in lid_texts if t]
    labels, probs = _lid176().predict(given, k=1)
    want = [(label[0].removeprefix("__label__"), float(prob[0])) for label, prob in zip(labels, probs, strict=True)]
    assert lid176_top(given) == want


def test_character_classes_outside_the_flagged_planes_are_empty():
    """measure.char_flags asks Python's predicates only inside FLAGGED; outside, every one is false."""
    import unicodedata

    from data_engine.clean.measure import FLAGGED, char_flags

    inside = np.zeros(0x110000, dtype=bool)
    for lo, hi in FLAGGED:
        inside[lo:hi] = True
    outside = [chr(c) for c in np.flatnonzero(~inside)]
    assert not any(c.isspace() or c.isdigit() or c.isalnum() or c == "_" or c.isdecimal()
                   or unicodedata.category(c)[0] in "LM" for c in outside)
    assert not char_flags()[~inside].any()
