"""Text normalisation applied to every document before anything is measured.

What changes: C0/C1 control characters other than newline and tab, zero-width space, word joiner,
BOM and soft hyphen removed; CR LF, lone CR, vertical tab, form feed, NEL and U+2028/2029 become
newlines; no-break and other Unicode spaces become plain spaces; then Unicode NFC (combining marks
kept, composed where a composition exists); runs of spaces and tabs inside a line become one space;
trailing spaces go; more than one empty line in a row becomes one. ZWJ and ZWNJ stay: they change
how Indic-derived scripts (Khmer, Burmese) and emoji render.

Each step runs over the whole text at C speed (a line at a time cost a Python call per line), and
`str.translate` — a dictionary lookup per character — only when a character it maps is present.
After the translation the only whitespace left is space, tab and newline (every other character
Python calls whitespace is mapped), so stripping a line is removing the one space left at either
end of it once runs of spaces and tabs are single spaces.
"""

from __future__ import annotations

import re
import unicodedata

_REMOVE = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0),
                             0x200B, 0x2060, 0xFEFF, 0x00AD]}
_SPACES = {c: " " for c in [0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000]}
# Line breaks of other conventions (old Mac CR, vertical tab, form feed, NEL, Unicode line and
# paragraph separators) become "\n" rather than disappearing and gluing words together.
_BREAKS = {c: "\n" for c in (0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029)}
_TABLE = {**_REMOVE, **_SPACES, **_BREAKS}
_MAPPED = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(_TABLE)) + "]")
_INLINE_SPACE = re.compile(r"(?: [ \t]|\t)[ \t]*")  # runs of spaces and tabs, but not a single space
_LINE_EDGE_SPACE = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n")
    if _MAPPED.search(text):
        text = text.translate(_TABLE)
    if not text.isascii():  # after removals: dropping a soft hyphen can leave a composable pair
        text = unicodedata.normalize("NFC", text)
    if "\t" in text or "  " in text:
        text = _INLINE_SPACE.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGE_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()
