"""fastText model files, loaded once per Python process.

Both language identification (lid.176) and the quality classifiers run inside Spark's Python
workers, which Spark reuses across tasks: a process-wide cache means an executor reads each model
file once, not once per partition.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=64)
def load(path: str) -> Any:
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence load_model's stderr warning
    return fasttext.load_model(path)
