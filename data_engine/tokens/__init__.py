"""Token accounting: exact training tokens per language, source and quality band, in `token_counts`."""

from data_engine.tokens.config import TokenCountConfig
from data_engine.tokens.count import LangTokens, TokenCounts, plan_count_tokens, read_token_counts

__all__ = ["LangTokens", "TokenCountConfig", "TokenCounts", "plan_count_tokens", "read_token_counts"]
