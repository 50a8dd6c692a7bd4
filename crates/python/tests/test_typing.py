"""The package is typed: mypy --strict passes on it, stubs of the native module included."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "flatfhir"


def test_mypy_strict_passes():
    pytest.importorskip("mypy", reason="mypy is not installed (scripts/test-all installs it)")
    assert (PACKAGE / "py.typed").exists() and (PACKAGE / "_native.pyi").exists()
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                        "--cache-dir", str(Path(tempfile.gettempdir()) / "flatfhir-mypy-cache"),
                        str(PACKAGE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
