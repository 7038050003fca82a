"""The compiled shingle pass against a plain-Python reading of the definition in
`shingles.shingle_hashes`' docstring, one code point at a time, on mixed-script texts."""

from __future__ import annotations

import random
import unicodedata

import numpy as np

from data_engine.dedup.shingles import _BLOCKS, LANG_SCRIPT, SCRIPTS, ShingleSpec, shingle_hashes
from data_engine.digests import mix64

B1 = 0x9E3779B97F4A7C15 | 1
B2 = 0xD6E8FEB86659FD93
M = (1 << 64) - 1


def mix(h: int) -> int:
    return int(mix64(np.array([h], dtype=np.uint64))[0])


def horner(values: list[int], base: int, seed: int = 0) -> int:
    h = seed
    for v in values:
        h = (h * base + v) & M
    return h


def script_of(ch: str) -> str:
    c = ord(ch)
    if c >= 0x2FFFF:
        return "other"
    return next((name for name, blocks in _BLOCKS.items() if any(lo <= c <= hi for lo, hi in blocks)), "other")


def is_letter(ch: str) -> bool:
    return ord(ch) >= 0x2FFFF or (unicodedata.category(ch)[0] in "LMN" and not 0xD800 <= ord(ch) < 0xE000)


def reference(text: str, lang: str | None, spec: ShingleSpec) -> list[int]:
    text = unicodedata.normalize("NFC", text).lower()
    letters = [ch for ch in text if is_letter(ch)]
    by_script = {name: sum(script_of(ch) == name for ch in letters) for name in SCRIPTS[1:]}
    spaceless = sum(by_script.values())
    dominant = max(by_script, key=lambda name: (by_script[name], -SCRIPTS.index(name)))
    char_mode = bool(letters) and 2 * spaceless >= len(letters)
    if not letters and lang in LANG_SCRIPT:
        char_mode, dominant = True, LANG_SCRIPT[lang]
    out: list[int] = []
    if char_mode:
        n = spec.char_n(dominant)
        values = [ord(ch) + 1 for ch in letters]
        out = [horner(values[i:i + n], B2) for i in range(len(values) - n + 1)]
    else:
        words, word = [], []
        for ch in text + "\x00":
            if is_letter(ch):
                word.append(ord(ch) + 1)
            elif word:
                words.append(mix(horner(word, B1)))
                word = []
        n = spec.word_ngram
        out = [horner(words[i:i + n], B2) for i in range(len(words) - n + 1)]
        if 0 < len(words) < n:
            out = [horner(words, B2, seed=len(words))]
    if not out:
        out = [horner([ord(ch) + 1 for ch in text], B2, seed=len(text))]
    return [mix(h) for h in out]


def test_compiled_shingles_are_the_definition_on_mixed_scripts():
    rng = random.Random(7)
    pieces = ["the", "cat", "sat", "ไม้", "สิทธิ", "กข", "你好", "世界", "ខ្ញុំ", "ສະບາຍ", "မြန်မာ", "việt",
              "e\u0301cole", "123", "Ａｂｃ", "\U00020001", "-", "!", " ", "  ", "\n", "\t", "_"]
    texts = ["", "ok", "!!!", "ดีจ้ะ", "a b c d", "a b c d e f"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40))) for _ in range(300)]
    langs = [rng.choice(["tha", "eng", None, "zho", "khm", "mya"]) for _ in texts]
    for spec in (ShingleSpec(), ShingleSpec(word_ngram=2, char_ngram=3, char_ngram_by_script=(("han", 2),))):
        hashes, doc = shingle_hashes(texts, langs, spec)
        assert (np.diff(doc) >= 0).all()
        for i, (text, lang) in enumerate(zip(texts, langs, strict=True)):
            assert hashes[doc == i].tolist() == reference(text, lang, spec), (text, lang)
