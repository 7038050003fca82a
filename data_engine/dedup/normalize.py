"""Text normalisation for hashing: what two texts must share to count as the same text."""

# no `from __future__ import annotations`: pandas_udf reads the type hints at runtime

import unicodedata
from typing import Any

# Zero-width space and BOM: invisible, used inconsistently as word breaks in Thai, Khmer, Lao
# and Burmese web text. ZWJ/ZWNJ are kept: they change how some scripts render.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff"))


def normalize_text(text: str, *, lowercase: bool = False) -> str:
    """NFC (combining marks kept), invisible breaks removed, whitespace runs → one space."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def text_hash(text: str, *, lowercase: bool = False) -> str:
    """128-bit xxh3 of the normalised text, as 32 hex characters."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(normalize_text(text, lowercase=lowercase).encode("utf-8"))


def text_hash_column(col: Any, *, lowercase: bool = False) -> Any:
    """`text_hash` as a Spark column (a pandas UDF: NFC has no Spark SQL built-in)."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def _hash(texts: pd.Series) -> pd.Series:
        return pd.Series([text_hash(t, lowercase=lowercase) for t in texts], index=texts.index)

    return _hash(col)
