"""The languages sailyard curates, their scripts, and how user-given codes map onto them.

Tables carry ISO 639-3 codes (Sailor2's convention). Ingest accepts the common two-letter and
locale forms users have in their crawls and maps them here, so partitions never split one
language across several spellings.
"""

from __future__ import annotations

import re

#: The 15 languages in the order Sailor2 lists them: 13 SEA languages, then English and Chinese.
LANGS: tuple[str, ...] = (
    "ind", "vie", "tha", "zsm", "mya", "tgl", "khm", "lao", "jav", "sun", "ceb", "war", "ilo",
    "eng", "zho",
)

#: Written without spaces between words: word-based units fall back to characters for these.
SPACELESS: frozenset[str] = frozenset({"tha", "lao", "khm", "mya", "zho"})

#: Language of a document whose language is not known (yet).
UNKNOWN = "und"

LANG_NAMES: dict[str, str] = {
    "ind": "Indonesian", "vie": "Vietnamese", "tha": "Thai", "zsm": "Malay", "mya": "Burmese",
    "tgl": "Tagalog", "khm": "Khmer", "lao": "Lao", "jav": "Javanese", "sun": "Sundanese",
    "ceb": "Cebuano", "war": "Waray", "ilo": "Ilocano", "eng": "English", "zho": "Chinese",
    UNKNOWN: "unknown",
}

_ALIASES: dict[str, str] = {
    "id": "ind", "in": "ind", "vi": "vie", "th": "tha", "ms": "zsm", "msa": "zsm", "may": "zsm",
    "zlm": "zsm", "my": "mya", "bur": "mya", "tl": "tgl", "fil": "tgl", "km": "khm", "lo": "lao",
    "jv": "jav", "jw": "jav", "su": "sun", "en": "eng", "zh": "zho", "chi": "zho", "cmn": "zho",
}

_CODE = re.compile(r"^[a-z]{2,3}$")


def normalize_lang(value: str | None) -> str:
    """Map a user-given language tag ('th', 'th_TH', 'zh-Hans', 'ms', 'tha') to a table code.

    Known languages map to their ISO 639-3 code; other well-formed tags keep their lower-cased
    primary subtag (so an unexpected language still gets its own partition); anything else,
    including a missing tag, is `und`.
    """
    if value is None:
        return UNKNOWN
    primary = re.split(r"[-_\s]", value.strip().lower(), maxsplit=1)[0]
    if primary in LANGS:
        return primary
    if primary in _ALIASES:
        return _ALIASES[primary]
    return primary if _CODE.match(primary) else UNKNOWN
