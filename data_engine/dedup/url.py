"""URL dedup: the same page fetched under different spellings of its URL keeps one copy.

Sailor2 found this the single largest cut of the SEA crawl (about half its tokens): mirrors of one
article under `http`/`https`, `www.`, tracking parameters and trailing slashes. Among documents
whose normalised URLs are equal the one with the most content (longest text) survives; documents
without a usable URL are left to the other stages.
"""

# no `from __future__ import annotations`: pandas_udf reads the type hints at runtime

import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from data_engine.dedup.base import StageResult, tag_duplicates
from data_engine.dedup.config import UrlDedupConfig

STAGE = "url"
REASON = "url_duplicate"

#: Query parameters that identify a campaign or a click, never the page (exact names).
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "ttclid", "igshid",
    "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "oly_anon_id", "oly_enc_id",
    "vero_id", "wickedid", "rb_clickid", "s_cid", "ref_src", "ref_url", "spm", "scm"})
#: Prefixes of tracking parameter families (`utm_source`, `utm_medium`, `pk_campaign` …).
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def normalize_url(url: str | None, *, extra_tracking: frozenset[str] = frozenset()) -> str | None:
    """A key equal for spellings of one page: `host[:port]/path?sorted-meaningful-query`.

    Scheme (http and https alike), host case, a leading `www.`, default ports, the fragment, a
    trailing slash, tracking parameters and the order of the remaining parameters do not count;
    path case and meaningful parameters do. None when there is no http(s) URL with a host.
    """
    if not url or not isinstance(url, str):
        return None
    text = url.strip()
    if "://" not in text:
        if text.startswith("//"):
            text = "http:" + text
        elif re.match(r"^[\w.-]+\.[a-z]{2,}(/|$)", text, re.IGNORECASE):
            text = "http://" + text  # a bare host, as some crawls store them
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a malformed netloc or port
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None
    if host.startswith("www."):
        host = host[4:]
    netloc = host if port is None or str(port) == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(lambda m: m.group(0).upper(), quote(unquote(parts.path), safe=_PATH_SAFE + "%"))
    path = re.sub(r"/{2,}", "/", path)
    if path.endswith("/"):
        path = path.rstrip("/")
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if not _is_tracking(k.lower(), extra_tracking)]
    query = urlencode(sorted(params), doseq=True)
    return f"{netloc}{path or ''}" + (f"?{query}" if query else "")


def _is_tracking(key: str, extra: frozenset[str]) -> bool:
    return key in TRACKING_PARAMS or key in extra or key.startswith(TRACKING_PREFIXES)


def url_key_column(col: Any, cfg: UrlDedupConfig) -> Any:
    """`normalize_url` as a Spark column (a pandas UDF: URL parsing has no SQL built-in)."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    extra = frozenset(p.lower() for p in cfg.extra_tracking_params)

    @pandas_udf("string")
    def _key(urls: pd.Series) -> pd.Series:
        return pd.Series([normalize_url(u, extra_tracking=extra) for u in urls], index=urls.index)

    return _key(col)


def dedup_url(df: Any, cfg: UrlDedupConfig = UrlDedupConfig()) -> StageResult:
    """Keep the longest text among documents with one normalised URL (ties: smallest doc_id).

    `cluster_id` in drops is the normalised URL itself, so a user can read what was merged.
    """
    from pyspark.sql import functions as F

    key = url_key_column(df["url"], cfg) if "url" in df.columns else F.lit(None).cast("string")
    rank = F.struct((-F.length("text")).alias("len"), F.col("doc_id").alias("id"))
    keys = df.select("doc_id", "lang", key.alias("_key"), rank.alias("_rank"))
    return tag_duplicates(df, keys, stage=STAGE, reason=REASON)
