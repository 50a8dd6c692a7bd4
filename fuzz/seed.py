#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into OUT/<target>/, from the repository's
fixtures/ and, when present, ../shared (read at run time, never copied into the project:
OUT is a build directory). Usage: seed.py OUT"""

import glob
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# ../shared next to the project, or FLATFHIR_SHARED (e.g. from a git worktree elsewhere).
SHARED = os.environ.get("FLATFHIR_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
LINES_PER_FILE = 8


def write(out, target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ndjson_files():
    files = sorted(glob.glob(os.path.join(ROOT, "fixtures", "**", "*.ndjson"), recursive=True))
    shared = sorted(glob.glob(os.path.join(SHARED, "fixtures", "bds-r4", "*.ndjson")))
    if not shared:
        print("seed.py: ../shared absent, seeding from fixtures/ only", file=sys.stderr)
    return files + shared


def head_lines(path, n):
    out = []
    with open(path, "rb") as f:
        for line in f:
            out.append(line)
            if len(out) >= n:
                break
    return out


def main():
    out = sys.argv[1]
    for path in ndjson_files():
        lines = head_lines(path, LINES_PER_FILE)
        for line in lines:
            body = line.rstrip(b"\r\n")
            write(out, "walker", body)
            write(out, "view_json", body)
        # Reader and conversion: a mode byte, then a few lines (Basic is the type the
        # conversion target reads; other types are rejected lines, also worth having).
        text = b"".join(lines[:4])
        basic = re.sub(rb'"resourceType":"[A-Za-z]+"', b'"resourceType":"Basic"', text, count=0)
        for mode in (0, 1, 6, 9, 0x2B):
            write(out, "ndjson_reader", bytes([mode]) + text)
        for mode in (0, 1, 2, 5, 8):
            write(out, "convert_roundtrip", bytes([mode]) + basic)
            write(out, "convert_roundtrip", bytes([mode]) + text)

    # FHIRPath: the official test suite's expressions and the SQL on FHIR views' paths.
    exprs = set()
    xml = os.path.join(SHARED, "fhirpath", "tests-fhir-r4.xml")
    if os.path.exists(xml):
        with open(xml, encoding="utf-8") as f:
            for m in re.finditer(r"<expression[^>]*>(.*?)</expression>", f.read(), re.S):
                e = m.group(1)
                for a, b in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
                    e = e.replace(a, b)
                exprs.add(e)

    def paths(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k in ("path", "where") and isinstance(x, str):
                    exprs.add(x)
                paths(x)
        elif isinstance(v, list):
            for x in v:
                paths(x)

    for t in glob.glob(os.path.join(SHARED, "sql-on-fhir", "tests", "*.json")):
        with open(t, encoding="utf-8") as f:
            paths(json.load(f))
    exprs |= {"name.where(use = 'official').family.first()", "identifier[0].value", "gender",
              "extension('http://e/x').value.ofType(decimal)", "(1 + 2.5) * 3 div 2",
              "birthDate < @2000-01-01", "name.given.join(',')", "%resource.id"}
    for e in sorted(exprs):
        write(out, "fhirpath", e)

    # Manifests and OperationOutcomes: the shapes servers send (docs/fetch.md).
    manifests = [
        {"transactionTime": "2024-01-01T00:00:00Z", "request": "https://x/$export",
         "requiresAccessToken": True,
         "output": [{"type": "Patient", "url": "https://x/f/1.ndjson", "count": 10},
                    {"type": "Observation", "url": "f/2.ndjson"}],
         "error": [{"type": "OperationOutcome", "url": "/f/err.ndjson"}]},
        {"transactionTime": "2024-01-01", "output": [], "outcome": [{"url": "e.ndjson"}],
         "deleted": [{"type": "Bundle", "url": "d.ndjson"}],
         "link": [{"relation": "next", "url": "?page=2"}]},
        {"output": [{"url": "https://x/a?b=c&d"}], "requiresAccessToken": False},
    ]
    for m in manifests:
        write(out, "manifest", json.dumps(m))
    outcomes = [
        {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "bad"}]},
        {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "transient", "details": {"text": "later"}}]},
    ]
    write(out, "operation_outcome", "\n".join(json.dumps(o) for o in outcomes) + "\n")
    for o in outcomes:
        write(out, "operation_outcome", json.dumps(o))
    write(out, "operation_outcome", "<html>502 Bad Gateway</html>")

    # Chunked wires (mode 0: a mode byte, four read-size bytes, the wire) and bodies to chunk
    # (mode 1, 3, 5, 7: extensions and trailers); see `check_chunked` in fuzz/src/lib.rs.
    wires = [b"8\r\n{\"a\":1}\n\r\n0\r\n\r\n", b"3;x=y\r\nabc\r\n0\r\nt: 1\r\n\r\n",
             b"00A \r\n0123456789\r\n0\r\n\r\n", b"3\r\nabc\r\n\r\n"]
    for w in wires:
        write(out, "chunked", b"\x00\x00\x01\x06\x80" + w)
    for mode in (1, 3, 5, 7):
        write(out, "chunked", bytes([mode, 2, 0x10, 0x81, 7]) + b'{"resourceType":"Patient"}\n' * 3)


if __name__ == "__main__":
    main()
