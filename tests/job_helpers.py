"""How tests launch jobs from outside: the venv's spark-submit and the environment it needs.

A module of its own (not conftest): `from conftest import …` would pick whichever conftest.py
pytest imported first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def spark_submit() -> str:
    """The venv's spark-submit wrapper (`make venv` installs it)."""
    return str(VENV_BIN / "spark-submit")


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env
