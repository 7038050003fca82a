"""Quarantine reason codes. The code is the part before ':'; details follow it for the reader."""

EMPTY_FILE = "empty_file"
UNREADABLE_FILE = "unreadable_file"
"""Not written any more: an I/O error fails the task (retried by Spark) instead of being
quarantined. Kept because older `quarantine` rows carry it."""
UNREADABLE_GZIP = "unreadable_gzip"
UNREADABLE_PARQUET = "unreadable_parquet"
INVALID_UTF8 = "invalid_utf8"
INVALID_UNICODE = "invalid_unicode"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
NULL_TEXT = "null_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
FIELD_NOT_STRING = "field_not_string"
RECORD_TOO_LARGE = "record_too_large"

FILE_LEVEL = frozenset({EMPTY_FILE, UNREADABLE_FILE, UNREADABLE_GZIP, UNREADABLE_PARQUET})
"""Codes of rows that stand for the file, not a record (record_no null): not a record read."""
INCOMPLETE = frozenset({UNREADABLE_FILE, UNREADABLE_GZIP, UNREADABLE_PARQUET})
"""File-level codes that stopped reading early: records after the problem were never read, so
the file is logged as incomplete and a repaired copy at the same path is read as a continuation."""


def reason(code: str, detail: str = "") -> str:
    return f"{code}: {detail}" if detail else code


def code_of(reason_text: str) -> str:
    """The code of a stored reason (`'invalid_json: ...'` → `'invalid_json'`)."""
    return reason_text.split(":", 1)[0]
