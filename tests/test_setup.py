"""`make venv`'s Spark wrappers: each checkout's wrappers point at itself, uv's cache is untouched.

uv installs a wheel's bin/ scripts as hard links into its cache, shared by every venv that uses the
cache. Two checkouts are reproduced cheaply and faithfully: two venvs made by the real uv (the one
`make venv` pins) from one `UV_CACHE_DIR`, each given a tiny stand-in `pyspark` wheel (built here)
whose `spark-submit` lands in bin/ as such a hard link, then the Makefile's own recipe
(scripts/install-spark-wrappers) run in each checkout.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("spark-submit", "spark-class", "pyspark")
# What uv puts in bin/ from the wheel; the wrappers must replace it without writing through it.
ORIGINAL_SCRIPT = "#!/usr/bin/env bash\necho 'the wheel script, not a wrapper'\n"
# pyspark's real tools live in <site-packages>/pyspark/bin; these report what the wrapper set.
REAL_TOOL = '#!/usr/bin/env bash\necho "tool=$(basename "$0") home=$SPARK_HOME conf=$SPARK_CONF_DIR"\n'


def _uv() -> str:
    found = Path(sys.executable).parent / "uv"
    if found.exists():
        return str(found)
    path = shutil.which("uv")
    if path is None:
        pytest.skip("uv is not installed (make venv installs it)")
    return path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_stand_in_pyspark(out_dir: Path) -> Path:
    """A wheel named pyspark laid out like the real one: tools in pyspark/bin and bin/ scripts."""
    files: dict[str, tuple[str, int]] = {"pyspark/__init__.py": ("", 0o644)}
    for tool in TOOLS:
        files[f"pyspark/bin/{tool}"] = (REAL_TOOL, 0o755)
        files[f"pyspark-0.0.0.data/scripts/{tool}"] = (ORIGINAL_SCRIPT, 0o755)
    files["pyspark-0.0.0.dist-info/METADATA"] = ("Metadata-Version: 2.1\nName: pyspark\nVersion: 0.0.0\n", 0o644)
    files["pyspark-0.0.0.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: sailyard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n", 0o644)
    record = [_record_line(name, text.encode()) for name, (text, _) in files.items()]
    record.append("pyspark-0.0.0.dist-info/RECORD,,")
    files["pyspark-0.0.0.dist-info/RECORD"] = ("\n".join(record) + "\n", 0o644)
    wheel = out_dir / "pyspark-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, text)
    return wheel


def make_checkout(root: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A checkout holding the repo's wrapper scripts, with a venv that got pyspark from the cache."""
    (root / "scripts").mkdir(parents=True)
    for name in ("install-spark-wrappers", "spark-tool-wrapper"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    (root / "data_engine" / "resources" / "spark").mkdir(parents=True)
    venv = root / ".venv"
    subprocess.run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
                   env=env, check=True, capture_output=True)
    subprocess.run([_uv(), "pip", "install", "--quiet", "--offline", "--no-deps", "--link-mode", "hardlink",
                    "--python", str(venv / "bin" / "python"), str(wheel)],
                   env=env, check=True, capture_output=True)
    return root


def install_wrappers(checkout: Path) -> None:
    """Exactly the Makefile's recipe line, run from the checkout's root."""
    subprocess.run(["scripts/install-spark-wrappers", ".venv"], cwd=checkout, check=True,
                   capture_output=True, text=True)


def cache_snapshot(cache: Path) -> dict[str, bytes]:
    return {str(path.relative_to(cache)): path.read_bytes()
            for path in sorted(cache.rglob("*")) if path.is_file() and not path.is_symlink()}


def spark_home(checkout: Path) -> Path:
    return next((checkout / ".venv" / "lib").glob("python*/site-packages/pyspark"))


def test_two_checkouts_sharing_a_uv_cache_keep_their_own_wrappers(tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache"
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    wheel = build_stand_in_pyspark(tmp_path)
    first = make_checkout(tmp_path / "first", wheel, env)
    second = make_checkout(tmp_path / "second", wheel, env)
    # The reproduction is faithful only if both venvs' bin/spark-submit is the cache's file.
    first_script, second_script = (c / ".venv" / "bin" / "spark-submit" for c in (first, second))
    assert os.path.samefile(first_script, second_script)
    cached = [p for p in cache.rglob("spark-submit") if os.path.samefile(p, first_script)]
    assert cached, "uv did not hard-link bin/spark-submit from its cache"
    before = cache_snapshot(cache)

    install_wrappers(first)
    install_wrappers(second)

    assert cache_snapshot(cache) == before
    assert cached[0].read_text() == ORIGINAL_SCRIPT
    for checkout in (first, second):
        for tool in TOOLS:
            wrapper = checkout / ".venv" / "bin" / tool
            assert os.access(wrapper, os.X_OK)
            assert wrapper.stat().st_nlink == 1
            text = wrapper.read_text()
            assert f'"${{SPARK_HOME:-{spark_home(checkout)}}}"' in text
            assert f'"${{SPARK_CONF_DIR:-{checkout / "data_engine" / "resources" / "spark"}}}"' in text
    assert not list((first / ".venv" / "bin").glob(".spark-submit.*"))  # no temp files left behind

    # The second checkout gone, the first one's wrapper still runs its own pyspark with its conf.
    shutil.rmtree(second)
    env_run = {k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "SPARK_CONF_DIR")}
    out = subprocess.run([str(first / ".venv" / "bin" / "spark-submit")], env=env_run, check=True,
                         capture_output=True, text=True).stdout.strip()
    conf = first / "data_engine" / "resources" / "spark"
    assert out == f"tool=spark-submit home={spark_home(first)} conf={conf}"


def test_make_venv_writes_nothing_through_installed_files() -> None:
    """Every line `make venv` would run: no shell redirection into the venv (the old bug's shape)."""
    dry = subprocess.run(["make", "-n", "-B", "venv"], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    assert "scripts/install-spark-wrappers .venv" in dry
    assert not re.findall(r">>?\s*\S*\.venv/", dry), dry
