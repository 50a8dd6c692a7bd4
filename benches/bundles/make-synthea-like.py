#!/usr/bin/env python3
"""Builds a Synthea-like folder of FHIR Bundles and the same resources as NDJSON.

Source: a Bulk Data export in NDJSON (default ../shared/fixtures/bds-r4, which Synthea
generated). Each resource goes to the Bundle of the patient it names (`Patient/<id>` in
`subject`, `patient`, `beneficiary`, ... — the first `"reference": "Patient/..."` of the line;
a Patient to its own), as Synthea writes it: one `transaction` Bundle per patient,
pretty-printed with two-space indentation (`"key": value`), each entry with
`fullUrl: urn:uuid:<id>`, the resource and `request: {method: POST, url: <Type>}`, the
patient first and the other resources in the order of their first dateTime. Resources that
name no patient (Organization, Practitioner, ...) go to `hospitalInformation<N>.json` and
`practitionerInformation<N>.json` Bundles, as Synthea does.

`--one-file` writes every entry into one Bundle (`bundles/all.json`) instead: the one large
Bundle file case (a server's whole search result, a converted export).

`--copies K` repeats the data K times; in copy k >= 2 every id (and the `Patient/<id>`
references and `fullUrl`s) gets the suffix `-c<k>`, so the resources stay distinct.

The NDJSON side (`ndjson/<Type>.ndjson`) holds exactly the resources of the Bundles, each
type's lines in Bundle order then entry order: the order in which flatfhir reads the Bundle
folder (files in natural name order: copy, then patient number). Both sides are written
from the same parsed values, so numbers and strings are the same text in both (Python's
`json` re-encodes floats; it does so on both sides alike), and the per-type tables flatfhir
makes from them must be equal.
"""

import argparse
import json
import os
import re
import sys
from collections import defaultdict

PATIENT_REF = re.compile(r'"reference":\s*"Patient/([^"]+)"')
DATE = re.compile(r'"(\d{4}-\d{2}-\d{2}(?:T[0-9:.+\-Z]+)?)"')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=os.path.join(os.path.dirname(__file__), "../../../shared/fixtures/bds-r4"))
    ap.add_argument("--out", required=True, help="directory to create (bundles/ and ndjson/ inside)")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--gzip", action="store_true", help="write the Bundles as .json.gz")
    ap.add_argument("--one-file", action="store_true", help="one Bundle holding every entry")
    a = ap.parse_args()
    if not os.path.isdir(a.source):
        sys.exit(f"no source directory {a.source} (the bds-r4 fixtures, in ../shared)")

    # patient id -> [(sort key, type, parsed resource)]; None -> resources of no patient.
    by_patient = defaultdict(list)
    order = []  # patient ids in the order their Patient appears
    for name in sorted(os.listdir(a.source)):
        if not name.endswith(".ndjson"):
            continue
        with open(os.path.join(a.source, name), encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                t = r["resourceType"]
                if t == "Patient":
                    pid = r["id"]
                    order.append(pid)
                    key = ""
                else:
                    m = PATIENT_REF.search(line)
                    pid = m.group(1) if m else None
                    d = DATE.search(line)
                    key = d.group(1) if d else "~"
                by_patient[pid].append((key, t, r))

    os.makedirs(os.path.join(a.out, "bundles"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "ndjson"), exist_ok=True)
    nd = {}

    def ndjson(t):
        if t not in nd:
            nd[t] = open(os.path.join(a.out, "ndjson", f"{t}.ndjson"), "w", encoding="utf-8")
        return nd[t]

    def suffixed(r, sfx):
        if not sfx:
            return r
        s = json.dumps(r, ensure_ascii=False)
        s = re.sub(r'("reference":\s*"[A-Za-z]+/)([^"]+)"', lambda m: f'{m.group(1)}{m.group(2)}{sfx}"', s)
        r = json.loads(s)
        r["id"] = r["id"] + sfx
        return r

    opener = open
    ext = ".json"
    if a.gzip:
        import gzip
        opener = gzip.open
        ext = ".json.gz"

    files = resources = 0
    one = None
    if a.one_file:
        one = opener(os.path.join(a.out, "bundles", "all" + ext), "wt", encoding="utf-8")
        one.write('{\n  "resourceType": "Bundle",\n  "type": "transaction",\n  "entry": [')
        files = 1
    sep = "\n    "
    for k in range(1, a.copies + 1):
        sfx = "" if k == 1 else f"-c{k}"
        groups = []
        for n, pid in enumerate(order):
            groups.append((f"c{k:03d}_p{n:05d}_{pid}", by_patient.get(pid, [])))
        rest = by_patient.get(None, [])
        groups.append((f"c{k:03d}_hospitalInformation", [x for x in rest if x[1] != "Practitioner" and x[1] != "PractitionerRole"]))
        groups.append((f"c{k:03d}_practitionerInformation", [x for x in rest if x[1] in ("Practitioner", "PractitionerRole")]))
        # Written in the order flatfhir reads the folder (natural order of the names).
        for name, items in sorted(groups):
            if not items:
                continue
            items = sorted(items, key=lambda x: (x[1] != "Patient", x[0]))
            entries = []
            for _, t, r in items:
                r = suffixed(r, sfx)
                entries.append({"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "request": {"method": "POST", "url": t}})
                ndjson(t).write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            resources += len(entries)
            if one is not None:
                for e in entries:
                    one.write(sep + json.dumps(e, ensure_ascii=False, indent=2).replace("\n", "\n    "))
                    sep = ",\n    "
                continue
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            with opener(os.path.join(a.out, "bundles", name + ext), "wt", encoding="utf-8") as f:
                json.dump(bundle, f, ensure_ascii=False, indent=2)
            files += 1
    if one is not None:
        one.write("\n  ]\n}\n")
        one.close()
    for f in nd.values():
        f.close()
    print(f"{files} Bundle files, {resources} resources, {len(nd)} types in {a.out}")


if __name__ == "__main__":
    main()
