"""Text normalisation applied to every document before anything is measured.

What changes: Unicode NFC (combining marks kept, composed where a composition exists); C0/C1
control characters other than newline and tab, zero-width space, word joiner, BOM and soft hyphen
removed; no-break and other Unicode spaces become plain spaces; runs of spaces and tabs inside a
line become one space; trailing spaces go; more than one empty line in a row becomes one. ZWJ and
ZWNJ stay: they change how Indic-derived scripts (Khmer, Burmese) and emoji render.
"""

from __future__ import annotations

import re
import unicodedata

_REMOVE = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0),
                             0x200B, 0x2060, 0xFEFF, 0x00AD]}
_SPACES = {c: " " for c in [0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000]}
_TABLE = {**_REMOVE, **_SPACES, 0x0D: None}  # CR: lines end with "\n" only
_INLINE_SPACE = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = text.translate(_TABLE)
    lines = [_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
