"""The installed distribution (not only the editable one) carries every file the code reads:
each non-Python file under a package's source folder is matched by pyproject's package-data, and
every folder with an __init__.py is a listed package. (A wheel without export/trt_supported_ops.json
broke `pip install .` + `pulse-trt upsample` once.)"""
from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR = SETUPTOOLS["package-dir"]
SKIP_SUFFIXES = {".py", ".pyc"}


def _source_dir(package: str) -> Path:
    if package in PACKAGE_DIR:
        return ROOT / PACKAGE_DIR[package]
    parent, _, leaf = package.rpartition(".")
    return _source_dir(parent) / leaf


def _files_of(package: str) -> list[str]:
    """Non-Python files below the package's folder, relative to it, outside sub-packages."""
    base = _source_dir(package)
    subpackages = [_source_dir(p) for p in SETUPTOOLS["packages"] if p.startswith(package + ".")]
    out = []
    for f in base.rglob("*"):
        if (f.is_file() and f.suffix not in SKIP_SUFFIXES and "__pycache__" not in f.parts
                and not any(s in f.parents for s in subpackages)):
            out.append(f.relative_to(base).as_posix())
    return out


def test_every_data_file_is_package_data():
    data = SETUPTOOLS["package-data"]
    missing = [f"{pkg}: {rel}" for pkg in SETUPTOOLS["packages"] for rel in _files_of(pkg)
               if not any(fnmatch(rel, pattern) for pattern in data.get(pkg, []))]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_every_package_folder_is_listed():
    listed = set(SETUPTOOLS["packages"])
    for pkg in list(listed):
        for init in _source_dir(pkg).glob("*/__init__.py"):
            assert f"{pkg}.{init.parent.name}" in listed, f"{init.parent} is not in packages"


def test_the_read_data_files_exist_in_the_source():
    """The files named above are the ones the code opens."""
    from pulse_trt.export import trt_compat  # noqa: PLC0415

    assert Path(trt_compat.SUPPORTED_OPS_JSON).is_file()
    assert "trt_supported_ops.json" in _files_of("pulse_trt.export")
