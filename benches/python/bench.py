#!/usr/bin/env python3
"""Speed and memory of the Python package, against the CLI and the notebook it replaces.

Three measurements, each timed run its own process under GNU time (wall time, peak RSS),
rounds alternating between the tools so drifts in a shared machine's speed hit both:

  read      `flatfhir.read` of ~1 GB of Observation into a pyarrow.Table, against
            `flatfhir convert` of the same directory to Parquet (the target: read <= 1.2x).
  stream    `flatfhir.iter_batches` over the same input, each batch dropped: peak RSS
            (the target: < 1 GiB).
  notebook  the notebook's job on the sample export: Patient + Observation to pandas
            DataFrames, flatfhir (`flatfhir.read(...).to_pandas()`) against flatten_json +
            pandas.json_normalize (the target: >= 30x), both from the NDJSON on disk.

Usage (from the repository root, with the package installed in release mode, e.g.
`pip install ./crates/python` into VENV):
  VENV/bin/python benches/python/bench.py --flatfhir target/release/flatfhir [--rounds 3]
      [--size 1gb] [--data target/bench-data] [--only read,stream,notebook] [--reps 5]
  VENV/bin/python benches/python/bench.py run MODE ...   (one timed run; used internally)
Prints a Markdown report and writes target/bench-results/python-<timestamp>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
SHARED = Path(os.environ.get("FLATFHIR_SHARED", ROOT.parent / "shared")).resolve()
BDS = SHARED / "fixtures" / "bds-r4"
NOTEBOOK_TYPES = ["Patient", "Observation"]


def notebook_flatfhir() -> tuple[int, int]:
    import flatfhir

    frames = flatfhir.read(BDS, types=NOTEBOOK_TYPES, progress=False).to_pandas()
    return sum(len(f) for f in frames.values()), sum(f.shape[1] for f in frames.values())


def notebook_reference() -> tuple[int, int]:
    import json

    import pandas as pd
    from flatten_json import flatten

    frames = {}
    for t in NOTEBOOK_TYPES:
        with open(BDS / f"{t}.ndjson", encoding="utf-8") as f:
            flat = [flatten(json.loads(line), "_") for line in f if line.strip()]
        frames[t] = pd.json_normalize(flat)
    return sum(len(f) for f in frames.values()), sum(f.shape[1] for f in frames.values())


def run_mode(argv: list[str]) -> None:
    """One measured run, in this process; prints `seconds rows columns`. The notebook modes
    import everything first and time the job itself (a notebook cell: the interpreter and its
    imports are already there), as the median of 5 repetitions."""
    mode, *rest = argv
    if mode.startswith("notebook"):
        import flatfhir  # noqa: F401
        import flatten_json  # noqa: F401
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401

        job = notebook_flatfhir if mode == "notebook-flatfhir" else notebook_reference
        reps = int(rest[0]) if rest else 5
        times, cpu = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            rows, cols = job()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        # CPU time (all threads of the process) moves far less with the host's load.
        print(f"{statistics.median(times):.4f} {rows} {cols} {statistics.median(cpu):.4f}")
        return
    import flatfhir  # imports are not timed: a notebook has them done

    t0 = time.perf_counter()
    if mode == "read":
        (inp,) = rest
        tables = flatfhir.read(inp, progress=False)
        rows = sum(t.num_rows for t in tables.values())
        cols = sum(t.num_columns for t in tables.values())
    elif mode == "stream":
        (inp,) = rest
        rows = cols = 0
        for b in flatfhir.iter_batches(inp):
            rows += b.num_rows
            cols = b.num_columns
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(f"{time.perf_counter() - t0:.3f} {rows} {cols}")


def timed(cmd: list[str]) -> dict:
    """Runs `cmd` under GNU time; returns wall seconds, peak RSS (MB) and its stdout."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    rss = 0.0
    for line in p.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) / 1024
    return {"wall": wall, "rss_mb": rss, "stdout": p.stdout.strip()}


def warm(path: Path) -> None:
    for f in sorted(path.rglob("*.ndjson")) if path.is_dir() else [path]:
        with open(f, "rb") as src:
            while src.read(1 << 24):
                pass


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run_mode(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flatfhir", type=Path, default=ROOT / "target" / "release" / "flatfhir")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1gb")
    ap.add_argument("--data", type=Path, default=ROOT / "target" / "bench-data")
    ap.add_argument("--only", default="read,stream,notebook")
    ap.add_argument("--reps", type=int, default=5,
                    help="in-process repetitions of the notebook job per timed run (median)")
    a = ap.parse_args()
    if not BDS.is_dir():
        raise SystemExit(f"{BDS} not found (set FLATFHIR_SHARED)")
    only = set(a.only.split(","))
    from compare import make_input  # benches/compare.py: the same inputs as the CLI benchmark

    if only & {"read", "stream"}:
        inp = make_input(f"obs-{a.size}", a.data, BDS, log=lambda m: print(m, file=sys.stderr))
    else:  # the notebook job alone reads the sample export: no large input to make
        inp = BDS
    nbytes = sum(f.stat().st_size for f in inp.glob("*.ndjson"))
    py = sys.executable
    me = str(Path(__file__).resolve())
    results: dict[str, list[dict]] = {}
    out = a.data / "py-bench-out"
    load = os.getloadavg()
    for r in range(a.rounds):
        plan = []
        if "read" in only:
            plan += [("cli convert", [str(a.flatfhir), "convert", str(inp), "--out", str(out), "--quiet"]),
                     ("flatfhir.read", [py, me, "run", "read", str(inp)])]
        if "stream" in only:
            plan += [("flatfhir.iter_batches", [py, me, "run", "stream", str(inp)])]
        if "notebook" in only:
            plan += [("notebook: flatfhir", [py, me, "run", "notebook-flatfhir", str(a.reps)]),
                     ("notebook: flatten_json + json_normalize",
                      [py, me, "run", "notebook-reference", str(a.reps)])]
        shift = r % len(plan)
        for name, cmd in plan[shift:] + plan[:shift]:
            warm(inp if "notebook" not in name else BDS)
            # Each convert writes into an empty directory (the CLI refuses to mix two runs).
            shutil.rmtree(out, ignore_errors=True)
            res = timed(cmd)
            results.setdefault(name, []).append(res)
            print(f"round {r + 1}: {name}: {res['wall']:.2f} s, {res['rss_mb']:.0f} MB peak RSS",
                  file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(x["wall"] for x in v) for k, v in results.items()}
    lines = [f"# Python package benchmark, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Input: {inp} ({nbytes / 1e9:.2f} GB); {a.rounds} rounds, medians; load average at start "
             f"{load[0]:.1f}. Shared 2-core VM: the numbers are noisy.", "",
             "| run | wall (median) | all runs | peak RSS (max) |", "|---|---|---|---|"]
    for k, v in results.items():
        walls = ", ".join("%.2f" % x["wall"] for x in v)
        peak = max(x["rss_mb"] for x in v)
        lines.append(f"| {k} | {med[k]:.2f} s | {walls} | {peak:.0f} MB |")
    lines.append("")
    if "cli convert" in med and "flatfhir.read" in med:
        call = statistics.median(float(x["stdout"].split()[0]) for x in results["flatfhir.read"])
        lines.append(f"- the `flatfhir.read` call (imports done, as in a notebook) / CLI convert (its whole "
                     f"process): {call:.2f} s / {med['cli convert']:.2f} s = {call / med['cli convert']:.2f}x "
                     f"(target <= 1.2x); {nbytes / 1e6 / call:.0f} MB/s")
        lines.append(f"- as whole processes (the Python interpreter's start and imports included): "
                     f"{med['flatfhir.read'] / med['cli convert']:.2f}x")
    if "flatfhir.iter_batches" in results:
        peak = max(x["rss_mb"] for x in results["flatfhir.iter_batches"])
        lines.append(f"- iter_batches peak RSS: {peak:.0f} MB (target < 1024 MiB)")
    nb = "notebook: flatten_json + json_normalize"
    if nb in med:
        ours = "notebook: flatfhir"
        cell = {k: statistics.median(float(x["stdout"].split()[0]) for x in results[k])
                for k in (nb, ours)}
        cpu = {k: statistics.median(float(x["stdout"].split()[3]) for x in results[k])
               for k in (nb, ours)}
        lines.append(f"- notebook job (Patient + Observation of the sample export to pandas), as a "
                     f"notebook cell (imports done, median of {a.reps} in-process runs, then the "
                     f"median over rounds): flatfhir {cell[ours] * 1000:.1f} ms, reference "
                     f"{cell[nb] * 1000:.0f} ms: {cell[nb] / cell[ours]:.1f}x faster (target >= 30x)")
        lines.append(f"- the same in CPU time (all threads; less sensitive to the host's load): "
                     f"flatfhir {cpu[ours] * 1000:.1f} ms, reference {cpu[nb] * 1000:.0f} ms: "
                     f"{cpu[nb] / cpu[ours]:.1f}x")
        lines.append(f"- the same as whole processes (interpreter start and imports included, {a.reps} jobs "
                     f"each): {med[nb] / med['notebook: flatfhir']:.1f}x")
    report = "\n".join(lines)
    print(report)
    dest = ROOT / "target" / "bench-results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"python-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
