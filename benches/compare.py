#!/usr/bin/env python3
"""Side-by-side benchmark of flatfhir against its Python peers (driver + peer runners).

Started by `benches/compare` (the bash wrapper makes the venv, installs GNU time
and builds flatfhir); run `benches/compare --help` for the options. Modes:

  compare.py bench [OPTIONS]              the benchmark (what benches/compare runs)
  compare.py make-input SPEC DATA_DIR     build one input, e.g. obs-74mb (idempotent)
  compare.py run-peer TOOL INPUT OUT_DIR  one peer conversion in this process
                                          (TOOL: reference, polars, duckdb, pyarrow)

Every timed run is its own process under `/usr/bin/time -v`; peers run as
`python compare.py run-peer ...`, so their wall time includes the interpreter
start and the imports, as an analyst's script would.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures" / "bds-r4"

# Input kinds: short name -> resource type (the fixture file is <Type>.ndjson).
KINDS = {"obs": "Observation", "eob": "ExplanationOfBenefit"}

DEFAULT_INPUTS = ["obs-74mb", "eob-100mb", "obs-1gb"]
QUICK_INPUTS = ["obs-74mb", "eob-100mb"]
MEMORY_INPUTS = ["obs-0.25gb", "obs-1gb", "obs-4gb"]

# Row order of the table; labels as printed.
TOOLS = {
    "flatfhir": "flatfhir",
    "flatfhir-1t": "flatfhir 1 thread",
    "flatfhir-schema": "flatfhir schema pass",
    "reference": "reference (flatten_json + pandas)",
    "polars": "polars",
    "duckdb": "DuckDB",
    "pyarrow": "pyarrow",
    "view4": "flatfhir view, 4 columns",
    "duckdb-4col": "DuckDB, the same 4 columns",
    "view10": "flatfhir view, 10 columns, forEach component",
    "duckdb-unnest": "DuckDB, the same 10 columns, unnest",
}
PEERS = ("reference", "polars", "duckdb", "pyarrow", "duckdb-4col", "duckdb-unnest")
VIEWS = {"view4": "obs4.json", "view10": "bp10.json"}
# Views only make sense on Observations.
OBS_ONLY = ("view4", "duckdb-4col", "view10", "duckdb-unnest")

# What each tool's output is, for the notes under the table.
TOOL_NOTES = {
    "flatfhir": "flatfhir convert DIR --out OUT --quiet: flat columns exactly like the reference, zstd, one thread per core",
    "flatfhir-1t": "the same with --threads 1",
    "flatfhir-schema": "flatfhir schema -q DIR > /dev/null: the union-schema pass alone, no output written",
    "reference": "flatten_json.flatten(r, \"_\") per line + pandas.json_normalize + to_parquet (zstd); object columns "
    "with mixed value types are cast to str first, since pyarrow cannot write them",
    "polars": "pl.read_ndjson(infer_schema_length=None), structs unnested recursively into _-joined columns, lists stay "
    "list columns (polars cannot index-explode arrays the way flatten_json does: fewer, nested columns), write_parquet zstd",
    "duckdb": "COPY (SELECT * FROM read_ndjson_auto(path, sample_size=-1)) TO out (FORMAT parquet, COMPRESSION zstd): "
    "nested structs/lists, not flattened",
    "pyarrow": "pyarrow.json.read_json + pq.write_table(compression=zstd): nested structs/lists, not flattened",
    "view4": "flatfhir convert DIR --view benches/views/obs4.json --out OUT --quiet (subject.reference, "
    "code.coding[0].code, valueQuantity.value, effectiveDateTime; typed), zstd",
    "duckdb-4col": "COPY (SELECT json_extract_string(json, '$.subject.reference'), json_extract_string(json, "
    "'$.code.coding[0].code'), json_extract(json, '$.valueQuantity.value')::DOUBLE, json_extract_string(json, "
    "'$.effectiveDateTime') FROM read_json_objects(path, format='newline_delimited')) TO out (zstd)",
    "view10": "flatfhir convert DIR --view benches/views/bp10.json: 5 resource columns and 5 per component "
    "(forEach component), zstd",
    "duckdb-unnest": "the same 10 columns with unnest(json_extract(json, '$.component[*]')), zstd",
}


# --------------------------------------------------------------------------------------------
# sizes and inputs

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)(kb|mb|gb)$")
_UNITS = {"kb": 1e3, "mb": 1e6, "gb": 1e9}


def parse_spec(spec: str) -> tuple[str, int]:
    """'obs-74mb' -> ('Observation', 74_000_000). Sizes are decimal (1 MB = 1e6 bytes)."""
    kind, _, size = spec.partition("-")
    if kind not in KINDS:
        raise ValueError(f"input {spec!r}: kind must be one of {', '.join(KINDS)} (e.g. obs-74mb)")
    m = _SIZE_RE.match(size.lower())
    if not m:
        raise ValueError(f"input {spec!r}: size must look like 5mb, 74mb, 0.25gb, 1gb")
    return KINDS[kind], int(float(m.group(1)) * _UNITS[m.group(2)])


# The top-level id is the second key of every line in these fixtures:
#   {"resourceType":"Observation","id":"cdec68f5-...","status":...
# Only that occurrence, anchored at the line start, is rewritten. An id with an escape
# (backslash) would not match; make_input then refuses rather than write a bad file.
_ID_RE = re.compile(rb'^(\{"resourceType":"[A-Za-z]+","id":"[^"\\]*)"', re.M)


def make_input(spec: str, data_dir: Path, fixtures: Path, log=print) -> Path:
    """Build DATA_DIR/<spec>/<Type>.ndjson: the fixture repeated until `size` bytes, cut at a
    line end. Copy 1 is verbatim; in copy K (K >= 2) every top-level "id":"X" becomes
    "id":"X-cK", so all resources stay distinct. Deterministic; rebuilt only when the
    source's content or the recipe changed (not its mtime: a fixture that is touched or
    restored would otherwise rebuild gigabytes, and the writeback of the new files slows
    the first timed runs). Returns the directory."""
    rtype, target = parse_spec(spec)
    src = fixtures / f"{rtype}.ndjson"
    out_dir = data_dir / spec
    out = out_dir / f"{rtype}.ndjson"
    meta_path = data_dir / f"{spec}.meta.json"
    st = src.stat()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    recipe = {"source": str(src), "source_bytes": st.st_size, "source_sha256": digest,
              "target_bytes": target, "recipe": 2}
    if out.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("recipe_key") == recipe and out.stat().st_size == meta.get("bytes"):
                return out_dir
        except (ValueError, OSError):
            pass
    body = src.read_bytes()
    if not body.endswith(b"\n"):
        body += b"\n"
    n_lines = sum(1 for line in body.split(b"\n") if line.strip())
    if len(_ID_RE.findall(body)) != n_lines:
        bad = next(i for i, line in enumerate(body.split(b"\n"), 1) if line.strip() and not _ID_RE.match(line))
        raise SystemExit(f"{src}:{bad}: the top-level id is not the second key (or has an escape); "
                         "refusing to rewrite ids")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.iterdir():  # the directory is given to flatfhir whole: one file only
        if stale.is_file():
            stale.unlink()
    log(f"making {out} (~{target / 1e6:,.0f} MB from {src.name}, {st.st_size / 1e6:.1f} MB)")
    tmp = out.with_suffix(".ndjson.tmp")
    written, copy = 0, 0
    with open(tmp, "wb") as f:
        while written < target:
            copy += 1
            chunk = body if copy == 1 else _ID_RE.sub(rb'\1-c%d"' % copy, body)
            if written + len(chunk) > target:
                cut = chunk.find(b"\n", target - written - 1)  # finish the line that crosses target
                chunk = chunk[: cut + 1] if cut >= 0 else chunk
            f.write(chunk)
            written += len(chunk)
    os.replace(tmp, out)
    meta_path.write_text(json.dumps({"recipe_key": recipe, "bytes": written, "copies": copy}, indent=1))
    # Write the new file out now, so its writeback does not compete with the timed runs.
    os.sync()
    return out_dir


# --------------------------------------------------------------------------------------------
# peer runners (each in its own process)

def _write_stats(out_dir: Path, **stats):
    (out_dir / "_stats.json").write_text(json.dumps(stats))


def run_reference(inp: Path, out_dir: Path):
    import pandas as pd
    from flatten_json import flatten

    with open(inp, encoding="utf-8") as f:
        rows = [flatten(json.loads(line), "_") for line in f if line.strip()]
    df = pd.json_normalize(rows)
    del rows
    # pyarrow cannot write an object column that mixes value kinds (e.g. str and int, or
    # str and the [] / {} that flatten_json leaves for empty arrays/objects): it raises
    # ArrowInvalid/ArrowTypeError. The usual analyst fix is astype(str) on those columns,
    # done here up front so the timing does not include a failed attempt.
    mixed = []
    for c in df.columns:
        if df[c].dtype == object and pd.api.types.infer_dtype(df[c], skipna=True).startswith("mixed"):
            df[c] = df[c].astype(str)
            mixed.append(c)
    try:
        df.to_parquet(out_dir / f"{inp.stem}.parquet", compression="zstd")
        fallback = 0
    except Exception:  # anything pyarrow still cannot convert: cast every remaining object column
        fallback = 0
        for c in df.columns:
            if df[c].dtype == object:
                df[c] = df[c].astype(str)
                fallback += 1
        df.to_parquet(out_dir / f"{inp.stem}.parquet", compression="zstd")
    _write_stats(out_dir, mixed_columns_cast=len(mixed), fallback_columns_cast=fallback)


def run_polars(inp: Path, out_dir: Path):
    import polars as pl

    # infer_schema_length=None: scan every line for the schema (the default, 100 lines,
    # drops or mis-types fields that appear later), as DuckDB's sample_size=-1 does.
    df = pl.read_ndjson(inp, infer_schema_length=None)
    rounds = 0
    while True:
        structs = [n for n, t in df.schema.items() if isinstance(t, pl.Struct)]
        if not structs:
            break
        df = df.unnest(structs, separator="_")
        rounds += 1
    df.write_parquet(out_dir / f"{inp.stem}.parquet", compression="zstd")
    n_list = sum(isinstance(t, pl.List) for t in df.schema.values())
    _write_stats(out_dir, unnest_rounds=rounds, list_columns=n_list)


def run_duckdb(inp: Path, out_dir: Path, threads: int):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={int(threads)}")
    q = lambda p: "'" + str(p).replace("'", "''") + "'"  # noqa: E731
    con.execute(
        f"COPY (SELECT * FROM read_ndjson_auto({q(inp)}, sample_size=-1)) "
        f"TO {q(out_dir / (inp.stem + '.parquet'))} (FORMAT parquet, COMPRESSION zstd)"
    )
    con.close()


DUCKDB_4COL = """SELECT json_extract_string(json, '$.subject.reference') AS subject,
  json_extract_string(json, '$.code.coding[0].code') AS code,
  json_extract(json, '$.valueQuantity.value')::DOUBLE AS value,
  json_extract_string(json, '$.effectiveDateTime') AS effective
FROM read_json_objects({src}, format='newline_delimited')"""

DUCKDB_UNNEST = """SELECT json_extract_string(json, '$.id') AS id,
  json_extract_string(json, '$.subject.reference') AS subject,
  json_extract_string(json, '$.effectiveDateTime') AS effective,
  json_extract_string(json, '$.status') AS status,
  json_extract_string(json, '$.code.coding[0].code') AS code,
  json_extract_string(c, '$.code.coding[0].code') AS component_code,
  json_extract_string(c, '$.code.coding[0].display') AS component_display,
  json_extract(c, '$.valueQuantity.value')::DOUBLE AS value,
  json_extract_string(c, '$.valueQuantity.unit') AS unit,
  json_extract_string(c, '$.valueQuantity.code') AS unit_code
FROM (SELECT json, unnest(json_extract(json, '$.component[*]')) AS c
      FROM read_json_objects({src}, format='newline_delimited'))"""


def run_duckdb_query(inp: Path, out_dir: Path, threads: int, query: str):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={int(threads)}")
    q = lambda p: "'" + str(p).replace("'", "''") + "'"  # noqa: E731
    con.execute(
        f"COPY ({query.format(src=q(inp))}) "
        f"TO {q(out_dir / (inp.stem + '.parquet'))} (FORMAT parquet, COMPRESSION zstd)"
    )
    con.close()


def run_pyarrow(inp: Path, out_dir: Path):
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    table = pj.read_json(inp)
    pq.write_table(table, out_dir / f"{inp.stem}.parquet", compression="zstd")


def cmd_run_peer(argv):
    ap = argparse.ArgumentParser(prog="compare.py run-peer")
    ap.add_argument("tool", choices=PEERS)
    ap.add_argument("input", type=Path, help="an .ndjson file")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--duckdb-threads", type=int, default=2)
    a = ap.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    if a.tool == "reference":
        run_reference(a.input, a.out_dir)
    elif a.tool == "polars":
        run_polars(a.input, a.out_dir)
    elif a.tool == "duckdb":
        run_duckdb(a.input, a.out_dir, a.duckdb_threads)
    elif a.tool == "duckdb-4col":
        run_duckdb_query(a.input, a.out_dir, a.duckdb_threads, DUCKDB_4COL)
    elif a.tool == "duckdb-unnest":
        run_duckdb_query(a.input, a.out_dir, a.duckdb_threads, DUCKDB_UNNEST)
    else:
        run_pyarrow(a.input, a.out_dir)


# --------------------------------------------------------------------------------------------
# timing one run

def parse_gnu_time(text: str) -> dict:
    r = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size (kbytes):"):
            r["max_rss_kb"] = int(line.rsplit(":", 1)[1])
        elif line.startswith("Elapsed (wall clock) time"):
            v = line.rsplit(": ", 1)[1]
            parts = [float(x) for x in v.split(":")]
            s = 0.0
            for p in parts:
                s = s * 60 + p
            r["gnu_elapsed_s"] = s
        elif line.startswith("User time (seconds):"):
            r["user_s"] = float(line.rsplit(":", 1)[1])
        elif line.startswith("System time (seconds):"):
            r["sys_s"] = float(line.rsplit(":", 1)[1])
        elif line.startswith("Percent of CPU this job got:"):
            r["cpu_pct"] = line.rsplit(":", 1)[1].strip()
        elif line.startswith("Exit status:"):
            r["exit_status"] = int(line.rsplit(":", 1)[1])
        elif line.startswith("Command terminated by signal"):
            r["signal"] = int(line.rsplit(" ", 1)[1])
    return r


def short_reason(stderr: str, rc: int, sig: int | None, timed_out: bool, timeout: float) -> str:
    if timed_out:
        return f"timed out after {timeout:.0f} s"
    if sig == signal.SIGKILL:
        return "killed (SIGKILL: out of memory?)"
    if sig:
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Command exited")]
    # Prefer the exception line of a Python traceback, else the last line.
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Invalid)\b", ln) or ln.startswith("Error"):
            return ln[:160]
    if "MemoryError" in stderr:
        return "MemoryError"
    return (lines[-1][:160] if lines else f"exit status {rc}")


def output_shape(out_dir: Path):
    """(rows, top-level columns) of the Parquet written, or None."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    files = sorted(out_dir.glob("*.parquet"))
    if not files:
        return None
    rows = cols = 0
    for p in files:
        md = pq.read_metadata(p)
        rows += md.num_rows
        cols += len(md.schema.to_arrow_schema())
    return rows, cols


def timed_run(cmd: list[str], scratch: Path, warm: Path, timeout: float, stdout_devnull=False) -> dict:
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    subprocess.run(["cat", str(warm)], stdout=subprocess.DEVNULL, check=False)  # warm the page cache
    tfile = scratch.parent / (scratch.name + ".time")
    full = ["/usr/bin/time", "-v", "-o", str(tfile), *cmd]
    t0 = time.perf_counter()
    timed_out = False
    # own session, so a timeout can end the whole tree it started (time -> python -> threads)
    p = subprocess.Popen(full, stdout=subprocess.DEVNULL if stdout_devnull else subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, err = p.communicate()
    rc = p.returncode
    wall = time.perf_counter() - t0
    gt = parse_gnu_time(tfile.read_text()) if tfile.exists() else {}
    tfile.unlink(missing_ok=True)
    ok = not timed_out and rc == 0 and gt.get("exit_status", 0) == 0 and "signal" not in gt
    run = {"ok": ok, "wall_s": round(wall, 4), **gt}
    if ok:
        shape = output_shape(scratch)
        if shape:
            run["rows"], run["columns"] = shape
        stats = scratch / "_stats.json"
        if stats.exists():
            run["peer_stats"] = json.loads(stats.read_text())
    else:
        run["error"] = short_reason(err, rc, gt.get("signal"), timed_out, timeout)
        run["stderr_tail"] = err[-2000:]
    shutil.rmtree(scratch, ignore_errors=True)
    return run


# --------------------------------------------------------------------------------------------
# the benchmark

def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    load = ""
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "nproc_usable": len(os.sched_getaffinity(0)), "cpu": cpu, "ram": mem,
            "kernel": platform.release(), "loadavg_at_start": load}


def tool_versions(flatfhir: Path) -> dict:
    from importlib import metadata

    v = {"flatfhir": sh([str(flatfhir), "--version"]).removeprefix("flatfhir ") or "?", "python": platform.python_version()}
    for pkg in ("pandas", "pyarrow", "flatten_json", "duckdb", "polars", "numpy"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = "not installed"
    return v


def tool_command(tool: str, flatfhir: Path, inp_dir: Path, inp_file: Path, out: Path, a) -> tuple[list[str], bool]:
    """The command for one run, and whether its stdout goes to /dev/null."""
    if tool == "flatfhir":
        return [str(flatfhir), "convert", str(inp_dir), "--out", str(out), "--quiet"], True
    if tool == "flatfhir-1t":
        return [str(flatfhir), "convert", "--threads", "1", str(inp_dir), "--out", str(out), "--quiet"], True
    if tool == "flatfhir-schema":
        return [str(flatfhir), "schema", "-q", str(inp_dir)], True
    if tool in VIEWS:
        view = Path(__file__).resolve().parent / "views" / VIEWS[tool]
        return [str(flatfhir), "convert", str(inp_dir), "--view", str(view), "--out", str(out), "--quiet"], True
    return [sys.executable, str(Path(__file__).resolve()), "run-peer", tool, str(inp_file), str(out),
            "--duckdb-threads", str(a.duckdb_threads)], True


def summarize(runs: list[dict], nbytes: int) -> dict:
    good = [r for r in runs if r["ok"]]
    if not good:
        errs = [r.get("error", "?") for r in runs]
        return {"ok": False, "error": errs[0] if errs else "not run", "failed": len(runs), "runs": len(runs)}
    wall = statistics.median(r["wall_s"] for r in good)
    rss = [r["max_rss_kb"] for r in good if "max_rss_kb" in r]
    s = {"ok": True, "median_wall_s": round(wall, 4), "mb_per_s": round(nbytes / wall / 1e6, 2),
         "median_rss_mb": round(statistics.median(rss) * 1024 / 1e6, 1) if rss else None,
         "failed": len(runs) - len(good), "runs": len(runs)}
    if "columns" in good[-1]:
        s["rows"], s["columns"] = good[-1]["rows"], good[-1]["columns"]
    if len(runs) > len(good):
        s["error"] = next(r["error"] for r in runs if not r["ok"])
    return s


def fmt_rss(mb):
    if mb is None:
        return "?"
    return f"{mb / 1000:.2f} GB" if mb >= 1000 else f"{mb:.0f} MB"


def fmt_cell(s: dict | None) -> str:
    if s is None:
        return "–"
    if s.get("skipped"):
        return f"skipped ({s['skipped']})"
    if not s["ok"]:
        return f"failed: {s['error']}".replace("|", "/")
    cell = f"{s['mb_per_s']:,.1f} MB/s ({fmt_rss(s['median_rss_mb'])})"
    if s["failed"]:
        cell += f" [{s['failed']}/{s['runs']} runs failed]"
    return cell


def ratio_cell(a: dict | None, b: dict | None) -> str:
    if not a or not b or not a.get("ok") or not b.get("ok"):
        return "–"
    speed = a["mb_per_s"] / b["mb_per_s"]
    rss = (a["median_rss_mb"] / b["median_rss_mb"]) if a.get("median_rss_mb") and b.get("median_rss_mb") else None
    return f"{speed:.2f}× speed" + (f", {rss:.2f}× RSS" if rss is not None else "")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def cmd_bench(argv):
    ap = argparse.ArgumentParser(prog="benches/compare", description="see benches/compare --help")
    ap.add_argument("--data", type=Path, default=ROOT / "target" / "bench-data")
    ap.add_argument("--results", type=Path, default=ROOT / "target" / "bench-results")
    ap.add_argument("--fixtures", type=Path, default=SHARED_FIXTURES)
    ap.add_argument("--inputs", "--sizes", dest="inputs", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default=None)
    ap.add_argument("--all-peers", action="store_true")
    ap.add_argument("--flatfhir", type=Path, default=ROOT / "target" / "release" / "flatfhir")
    ap.add_argument("--duckdb-threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0)
    # handled by the bash wrapper; accepted here so the same argv can be passed through
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--venv", default=None)
    ap.add_argument("--upgrade-peers", action="store_true")
    a = ap.parse_args(argv)

    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    if a.inputs:
        specs = [s.strip() for s in a.inputs.split(",") if s.strip()]
    elif a.memory:
        specs = MEMORY_INPUTS
    elif a.quick:
        specs = QUICK_INPUTS
    else:
        specs = DEFAULT_INPUTS
    for s in specs:
        try:
            parse_spec(s)
        except ValueError as e:
            ap.error(str(e))
    if a.tools:
        tools = [t.strip() for t in a.tools.split(",") if t.strip()]
        for t in tools:
            if t not in TOOLS:
                ap.error(f"unknown tool {t!r}; one of {', '.join(TOOLS)}")
    else:
        tools = ["flatfhir"] if a.memory else list(TOOLS)
    tools = [t for t in TOOLS if t in tools]  # table order
    flatfhir = a.flatfhir.resolve()
    if any(t.startswith("flatfhir") for t in tools) and not os.access(flatfhir, os.X_OK):
        sys.exit(f"compare: {flatfhir} is not an executable (build it, or pass --flatfhir PATH)")
    if not Path("/usr/bin/time").exists():
        sys.exit("compare: /usr/bin/time (GNU time) is missing: apt-get install -y time")

    data = a.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    command = os.environ.get("COMPARE_COMMAND") or shlex.join([sys.argv[0], *argv])
    machine = machine_info()
    versions = tool_versions(flatfhir)
    if a.duckdb_threads != machine["nproc_usable"]:
        print(f"note: DuckDB runs with {a.duckdb_threads} threads, this machine has {machine['nproc_usable']} "
              "usable cores (flatfhir uses all of them); see --duckdb-threads", file=sys.stderr)

    # inputs
    inputs = {}
    for s in specs:
        d = make_input(s, data, a.fixtures.resolve(), log=lambda m: print(m, file=sys.stderr))
        f = next(d.glob("*.ndjson"))
        inputs[s] = {"dir": d, "file": f, "bytes": f.stat().st_size,
                     "lines": None}
    for s, i in inputs.items():
        with open(i["file"], "rb") as fh:
            i["lines"] = sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 24), b""))

    def skip_reason(tool, spec):
        if tool in OBS_ONLY and not spec.startswith("obs"):
            return "a view of Observations"
        if tool == "reference" and not a.all_peers and inputs[spec]["bytes"] > 500e6:
            return "needs ~6-7 GB RAM per GB of input; --all-peers runs it"
        return None

    scratch = data / "scratch-out"
    raw = {s: {t: [] for t in tools} for s in specs}
    total = sum(1 for s in specs for t in tools if not skip_reason(t, s)) * a.rounds
    n = 0
    print(f"benchmark: {len(tools)} tools x {len(specs)} inputs x {a.rounds} rounds = {total} runs",
          file=sys.stderr)
    for s in specs:
        inp = inputs[s]
        for rnd in range(1, a.rounds + 1):
            # alternate the tools; rotate the start each round so no tool always runs first
            order = tools[(rnd - 1) % len(tools):] + tools[: (rnd - 1) % len(tools)]
            for t in order:
                if skip_reason(t, s):
                    continue
                n += 1
                cmd, devnull = tool_command(t, flatfhir, inp["dir"], inp["file"], scratch, a)
                r = timed_run(cmd, scratch, inp["file"], a.timeout, devnull)
                r["round"] = rnd
                raw[s][t].append(r)
                what = (f"{inp['bytes'] / r['wall_s'] / 1e6:8.1f} MB/s  {fmt_rss(r.get('max_rss_kb', 0) * 1024 / 1e6):>8}"
                        if r["ok"] else f"failed: {r['error']}")
                print(f"[{n:3}/{total}] {s:<12} round {rnd}  {TOOLS[t]:<34} {r['wall_s']:8.2f} s  {what}",
                      file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)

    summary = {s: {} for s in specs}
    for s in specs:
        for t in tools:
            why = skip_reason(t, s)
            summary[s][t] = {"ok": False, "skipped": why} if why else summarize(raw[s][t], inputs[s]["bytes"])

    # ---- report
    def col_name(s):
        rtype, _ = parse_spec(s)
        return f"{s} ({inputs[s]['bytes'] / 1e6:,.0f} MB, {inputs[s]['lines']:,} {rtype})"

    lines = []
    title = "flatfhir memory vs input size" if a.memory else "flatfhir vs peers: NDJSON → Parquet"
    lines.append(f"# {title}\n")
    lines.append(f"- date: {started.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    lines.append(f"- command: `{command}`")
    lines.append(f"- machine: {machine['nproc']} cores ({machine['nproc_usable']} usable), {machine['cpu']}, "
                 f"{machine['ram']} RAM, Linux {machine['kernel']}, load average at start {machine['loadavg_at_start']}")
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"- {a.rounds} round(s) per cell, tools alternating; cell = median MB/s (median peak RSS); "
                 "MB/s = input bytes / median wall seconds / 1e6; wall time is the whole process "
                 "(Python start and imports included for the peers); page cache warm\n")

    if a.memory:
        rows = []
        for t in tools:
            for s in specs:
                x = summary[s][t]
                rows.append([TOOLS[t], col_name(s),
                             f"{x['mb_per_s']:,.1f}" if x.get("ok") else fmt_cell(x),
                             fmt_rss(x.get("median_rss_mb")) if x.get("ok") else "–",
                             f"{x['median_wall_s']:.2f}" if x.get("ok") else "–"])
        lines.append(md_table(["tool", "input", "MB/s", "peak RSS", "wall s"], rows))
        for t in tools:
            ok = [summary[s][t] for s in specs if summary[s][t].get("ok")]
            if len(ok) >= 2 and ok[0].get("median_rss_mb"):
                lines.append(f"\n{TOOLS[t]}: input grows {inputs[specs[-1]]['bytes'] / inputs[specs[0]]['bytes']:.0f}×, "
                             f"peak RSS grows {ok[-1]['median_rss_mb'] / ok[0]['median_rss_mb']:.2f}×")
    else:
        header = ["tool"] + [col_name(s) for s in specs]
        rows = [[TOOLS[t]] + [fmt_cell(summary[s][t]) for s in specs] for t in tools]
        ratios = []
        if "flatfhir" in tools and "duckdb" in tools:
            ratios.append(["**flatfhir ÷ DuckDB**"] + [ratio_cell(summary[s]["flatfhir"], summary[s]["duckdb"]) for s in specs])
        if "flatfhir" in tools and "reference" in tools:
            ratios.append(["**flatfhir ÷ reference**"] + [ratio_cell(summary[s]["flatfhir"], summary[s]["reference"]) for s in specs])
        for a_, b_, label in (("view4", "duckdb-4col", "view 4 columns ÷ DuckDB 4 columns"),
                              ("view4", "flatfhir", "view 4 columns ÷ flatfhir convert"),
                              ("view10", "duckdb-unnest", "view 10 columns forEach ÷ DuckDB unnest")):
            if a_ in tools and b_ in tools:
                ratios.append([f"**{label}**"] + [ratio_cell(summary[s][a_], summary[s][b_]) for s in specs])
        if "flatfhir" in tools and "flatfhir-1t" in tools:
            ratios.append([f"**flatfhir {machine['nproc_usable']} threads ÷ 1 thread**"]
                          + [ratio_cell(summary[s]["flatfhir"], summary[s]["flatfhir-1t"]) for s in specs])
        lines.append(md_table(header, rows + ratios))
        lines.append("\nRatios: speed = MB/s of the first ÷ MB/s of the second (above 1: flatfhir is faster); "
                     "RSS = peak RSS of the first ÷ the second (below 1: flatfhir uses less memory).")
        # columns written: shows how flat each output is
        shape_rows = []
        for t in tools:
            if t == "flatfhir-schema":
                continue
            shape_rows.append([TOOLS[t]] + [
                f"{summary[s][t]['rows']:,} × {summary[s][t]['columns']:,}" if summary[s][t].get("columns") else "–"
                for s in specs])
        lines.append("\nOutput shape (rows × top-level Parquet columns), from the last good run:\n")
        lines.append(md_table(["tool"] + specs, shape_rows))
    lines.append("\nWhat each row runs:\n")
    for t in tools:
        lines.append(f"- **{TOOLS[t]}**: {TOOL_NOTES[t]}")
    if "duckdb" in tools:
        lines.append(f"- DuckDB threads: {a.duckdb_threads} (`SET threads`)")
    report = "\n".join(lines) + "\n"
    print(report)

    a.results.mkdir(parents=True, exist_ok=True)
    base = a.results / f"compare-{'memory-' if a.memory else ''}{stamp}"
    base.with_suffix(".md").write_text(report)
    base.with_suffix(".json").write_text(json.dumps({
        "date": started.isoformat(), "command": command, "machine": machine, "versions": versions,
        "rounds": a.rounds, "duckdb_threads": a.duckdb_threads, "memory_mode": a.memory,
        "inputs": {s: {"path": str(i["file"]), "bytes": i["bytes"], "lines": i["lines"]} for s, i in inputs.items()},
        "tools": {t: {"label": TOOLS[t], "what": TOOL_NOTES[t]} for t in tools},
        "summary": summary, "runs": raw,
    }, indent=1))
    print(f"written: {base.with_suffix('.md')} and .json", file=sys.stderr)


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "bench":
        cmd_bench(rest)
    elif mode == "run-peer":
        cmd_run_peer(rest)
    elif mode == "make-input":
        ap = argparse.ArgumentParser(prog="compare.py make-input")
        ap.add_argument("spec")
        ap.add_argument("data_dir", type=Path)
        ap.add_argument("--fixtures", type=Path, default=SHARED_FIXTURES)
        x = ap.parse_args(rest)
        print(make_input(x.spec, x.data_dir, x.fixtures))
    else:
        sys.exit(f"compare.py: unknown mode {mode!r} (bench, run-peer, make-input)")


if __name__ == "__main__":
    main()
