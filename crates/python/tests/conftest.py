"""Shared fixtures: where the repository, ../shared, the CLI and the test server are.

Tests that need ../shared (the sample export, compare_flatten.py) or the binaries skip with
the reason printed when they are absent. `scripts/test-all` builds the binaries first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "fixtures"
SHARED = Path(os.environ.get("FLATFHIR_SHARED", ROOT.parent / "shared")).resolve()
BDS = SHARED / "fixtures" / "bds-r4"
COMPARE = SHARED / "tools" / "compare_flatten.py"


def _binary(name: str, env: str) -> Optional[Path]:
    if os.environ.get(env):
        return Path(os.environ[env])
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / name
        if p.exists():
            return p
    found = shutil.which(name)
    return Path(found) if found else None


def need_shared() -> None:
    if not BDS.is_dir():
        msg = f"../shared is absent ({BDS} not found): skipping the sample-export comparisons"
        print(msg)
        pytest.skip(msg)


def bds_types() -> List[str]:
    if not BDS.is_dir():
        return ["(../shared absent)"]
    return sorted(p.name[: -len(".ndjson")] for p in BDS.glob("*.ndjson"))


@pytest.fixture(scope="session")
def cli() -> Path:
    p = _binary("flatfhir", "FLATFHIR_BIN")
    if p is None:
        msg = "the flatfhir binary is not built (cargo build -p flatfhir, or set FLATFHIR_BIN)"
        print(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def server_bin() -> Path:
    p = _binary("flatfhir-bulk-server", "FLATFHIR_BULK_SERVER")
    if p is None:
        msg = "the flatfhir-bulk-server binary is not built (cargo build -p flatfhir-bulk-server)"
        print(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def cli_bds(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's Parquet output of the whole sample export."""
    need_shared()
    out = tmp_path_factory.mktemp("cli-bds")
    subprocess.run([str(cli), "convert", str(BDS), "--out", str(out), "--quiet"], check=True)
    return out


class Server:
    """A running `flatfhir-bulk-server serve` over generated data."""

    def __init__(self, binary: Path, data: Path, args: List[str]) -> None:
        self.data = data
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--data", str(data), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the test server did not start: {err}")
        self.key = data / "demo-client.pem"
        self.client_id = "flatfhir-demo"
        self.kid = "flatfhir-demo-es384"

    def stop(self) -> Dict[str, int]:
        """Stops the server; returns its counts (`token_calls`, `requests`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        counts = {}
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            if v.isdigit():
                counts[k] = int(v)
        return counts


@pytest.fixture
def serve(server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """`serve(*args, patients=N)` starts a server over freshly generated data."""
    started: List[Server] = []

    def start(*args: str, patients: int = 30) -> Server:
        data = tmp_path_factory.mktemp("server-data")
        subprocess.run([str(server_bin), "generate", "--patients", str(patients), "--out", str(data)],
                       check=True, capture_output=True)
        s = Server(server_bin, data, list(args))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def run_compare_flatten(parquet: Path, inputs: List[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), str(parquet), *map(str, inputs)],
                          capture_output=True, text=True)


@pytest.fixture(autouse=True)
def no_temporary_directory_left_behind():
    """Every read, view run and export cleans up its temporary directories, also when it
    fails or is interrupted."""
    import tempfile

    tmp = Path(tempfile.gettempdir())
    def ours():
        return {p for kind in ("read", "views", "export") for p in tmp.glob(f"flatfhir-{kind}-*")}

    before = ours()
    yield
    left = ours() - before
    assert not left, f"left behind: {sorted(map(str, left))}"
