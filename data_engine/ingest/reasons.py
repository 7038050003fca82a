"""Quarantine reason codes. The code is the part before ':'; details follow it for the reader."""

EMPTY_FILE = "empty_file"
UNREADABLE_FILE = "unreadable_file"
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


def reason(code: str, detail: str = "") -> str:
    return f"{code}: {detail}" if detail else code
