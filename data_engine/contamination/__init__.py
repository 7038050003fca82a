"""Contamination audit: eval items' n-grams against a pinned training table, and decontamination."""

from data_engine.contamination.audit import plan_audit, prepare_items
from data_engine.contamination.config import CHAR_NGRAM, ContaminationConfig
from data_engine.contamination.items import Item, ItemsError, items_from_records, read_items
from data_engine.contamination.ngrams import normalise
from data_engine.contamination.table import CONTAMINATION, verdict

__all__ = ["CHAR_NGRAM", "CONTAMINATION", "ContaminationConfig", "Item", "ItemsError", "items_from_records",
           "normalise", "plan_audit", "prepare_items", "read_items", "verdict"]
