"""One error tree for sailyard: every failure a user can act on is a SailyardError.

Jobs turn these into a one-line message and a non-zero exit code; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class SailyardError(Exception):
    """Base of all errors a user can act on."""


class ConfigError(SailyardError, ValueError):
    """A configuration value or command-line argument is invalid."""


class InputError(SailyardError):
    """The job's input cannot be used at all (no files, unreadable directory)."""


class TableNotFoundError(SailyardError):
    """A Delta table the job needs does not exist in the lake."""


class TableConflictError(SailyardError):
    """Another writer committed to the same table first; nothing of ours was committed."""


class SchemaMismatchError(SailyardError):
    """Data about to be committed does not match the table's schema."""


class LakeVisibilityError(SailyardError):
    """What Spark wrote is not what the driver sees in the lake (unshared disks); nothing committed."""
