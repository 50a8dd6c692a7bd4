"""FHIR Bundles through the Python API: `read`, `iter_batches`, `convert`, `schema` and `plan`
give the tables of the same resources as NDJSON, equal to the CLI's, in every Bundle layout
(pretty `.json`, `.json.gz`, one Bundle per NDJSON line); the Bundle options; bad entries
named by Bundle file, line and entry."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Dict, List

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flatfhir
from flatfhir.errors import BadLineError, InputError, OptionsError
from conftest import FIXTURES

TYPES = ["Observation", "Patient"]


def _resources() -> List[dict]:
    """The basic fixtures' resources, the types interleaved (each type in its file order)."""
    per_type = [
        [json.loads(ln) for ln in (FIXTURES / "basic" / f"{t}.ndjson").read_text().splitlines()
         if ln.strip()]
        for t in ("Patient", "Observation")
    ]
    out = []
    for k in range(max(len(x) for x in per_type)):
        for x in per_type:
            if k < len(x):
                out.append(x[k])
    return out


def _bundle(resources: List[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
             "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources
        ],
    }


def _write_layout(root: Path, layout: str) -> tuple[Path, Dict[str, str]]:
    """The resources as Bundles in `layout` under `root/in`; returns the input directory and
    the reader options the layout needs."""
    d = root / "in"
    d.mkdir()
    res = _resources()
    if layout == "pretty":
        # Two files, as a Synthea folder: one Bundle per "patient".
        (d / "a.json").write_text(json.dumps(_bundle(res[:4]), indent=2))
        (d / "b.json").write_text(json.dumps(_bundle(res[4:]), indent=2))
        return d, {}
    if layout == "gzip":
        with gzip.open(d / "a.json.gz", "wt") as f:
            json.dump(_bundle(res), f, indent=2)
        return d, {}
    assert layout == "ndjson-lines"
    lines = "".join(json.dumps(_bundle([r]), separators=(",", ":")) + "\n" for r in res)
    (d / "bundles.ndjson").write_text(lines)
    return d, {"bundles": "unpack"}


def _same_table(got: pa.Table, want: pa.Table) -> None:
    assert got.column_names == want.column_names
    assert got.schema.remove_metadata() == want.schema.remove_metadata()
    assert got.num_rows == want.num_rows
    assert got.equals(want), "values differ"


@pytest.fixture(scope="module")
def ndjson_tables() -> flatfhir.Tables:
    return flatfhir.read(FIXTURES / "basic", progress=False)


LAYOUTS = ["pretty", "gzip", "ndjson-lines"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_of_bundles_equals_ndjson_and_the_cli(layout, ndjson_tables, cli, tmp_path):
    src, opts = _write_layout(tmp_path, layout)
    got = flatfhir.read(src, progress=False, **opts)
    assert list(got) == TYPES
    for t in TYPES:
        _same_table(got[t], ndjson_tables[t])
    assert got.bundles is not None
    assert got.bundles["resources"] == 7
    assert got.bundles["bad_entries"] == 0
    # The CLI on the same Bundles writes the same tables.
    out = tmp_path / "cli"
    args = [str(cli), "convert", str(src), "--out", str(out), "--quiet"]
    if opts:
        args += ["--bundles", opts["bundles"]]
    subprocess.run(args, check=True)
    for t in TYPES:
        _same_table(got[t], pq.read_table(out / f"{t}.parquet"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_iter_batches_of_bundles_concatenate_to_the_table(layout, ndjson_tables, tmp_path):
    src, opts = _write_layout(tmp_path, layout)
    for t in TYPES:
        batches = list(flatfhir.iter_batches(src, t, **opts))
        assert batches, t
        _same_table(pa.Table.from_batches(batches), ndjson_tables[t])
    reader = flatfhir.batch_reader(src, "Observation", **opts)
    _same_table(reader.read_all(), ndjson_tables["Observation"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_convert_of_bundles_writes_the_cli_files(layout, cli, tmp_path):
    src, opts = _write_layout(tmp_path, layout)
    result = flatfhir.convert(src, tmp_path / "py", progress=False, **opts)
    assert sorted(t.resource_type for t in result.types) == TYPES
    assert result.bundles is not None and result.bundles["resources"] == 7
    out = tmp_path / "cli"
    args = [str(cli), "convert", str(src), "--out", str(out), "--quiet"]
    if opts:
        args += ["--bundles", opts["bundles"]]
    subprocess.run(args, check=True)
    for t in TYPES:
        # Same engine, same inputs (the metadata names the Bundle files): the same bytes.
        assert (tmp_path / "py" / f"{t}.parquet").read_bytes() == (out / f"{t}.parquet").read_bytes(), t


@pytest.mark.parametrize("layout", LAYOUTS)
def test_convert_streams_bundles_as_the_unpacked_route(layout, ndjson_tables, tmp_path):
    """Without `types`, Bundle inputs convert as they are unpacked (every type at once);
    with `types` they are unpacked to temporary files first. Same tables, counts, reports."""
    src, opts = _write_layout(tmp_path, layout)
    streamed = flatfhir.convert(src, tmp_path / "s", progress=False, **opts)
    unpacked = flatfhir.convert(src, tmp_path / "u", types=TYPES, progress=False, **opts)
    assert streamed.bundles == unpacked.bundles
    assert streamed.bundles is not None and streamed.bundles["resources"] == 7

    def described(r: flatfhir.ConvertResult) -> list:
        return [(t.resource_type, t.rows, t.columns, t.input_bytes, t.files, t.rejected)
                for t in r.types]

    assert described(streamed) == described(unpacked)
    for t in TYPES:
        _same_table(pq.read_table(tmp_path / "s" / f"{t}.parquet"), ndjson_tables[t])
        _same_table(pq.read_table(tmp_path / "u" / f"{t}.parquet"), ndjson_tables[t])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_schema_and_plan_of_bundles_name_the_bundle_files(layout, tmp_path):
    src, opts = _write_layout(tmp_path, layout)
    want = flatfhir.schema(FIXTURES / "basic", progress=False)
    got = flatfhir.schema(src, progress=False, **opts)
    assert list(got) == TYPES
    bundle_files = sorted(str(p) for p in src.iterdir())
    for t in TYPES:
        assert [(c.name, c.type, c.non_null) for c in got[t].columns] == \
            [(c.name, c.type, c.non_null) for c in want[t].columns]
        assert got[t].rows == want[t].rows
        assert sorted(got[t].files) == bundle_files
        assert all(c.first_seen.split(":")[0] in bundle_files for c in got[t].columns)
    p = flatfhir.plan(src, **opts)
    assert sorted(p.groups) == TYPES
    for t in TYPES:
        assert sorted(p.groups[t]) == bundle_files
    assert p.bundles is not None and p.bundles["files"] == len(bundle_files)


def test_bundle_ndjson_lines_are_a_bundle_table_unless_unpacked(tmp_path):
    src, _ = _write_layout(tmp_path, "ndjson-lines")
    assert list(flatfhir.read(src, progress=False)) == ["Bundle"]
    assert list(flatfhir.read(src, progress=False, bundles="auto")) == ["Bundle"]
    (tmp_path / "p").mkdir()
    pretty, _ = _write_layout(tmp_path / "p", "pretty")
    # With "keep", a pretty Bundle folder holds no NDJSON input at all.
    with pytest.raises(InputError):
        flatfhir.read(pretty, progress=False, bundles="keep")


def _refs_bundle(tmp_path: Path) -> Path:
    """A transaction Bundle whose Observation names its patient by the entry's fullUrl, and
    a second file with the same Patient again."""
    d = tmp_path / "refs"
    d.mkdir()
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "subject": {"reference": "urn:uuid:aaaa-1"},
           "performer": [{"reference": "urn:uuid:nowhere"}]}
    b = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:aaaa-1", "resource": patient},
        {"fullUrl": "urn:uuid:bbbb-2", "resource": obs},
    ]}
    (d / "1.json").write_text(json.dumps(b, indent=2))
    again = {"resourceType": "Bundle", "type": "collection",
             "entry": [{"resource": dict(patient, gender="male")}]}
    (d / "2.json").write_text(json.dumps(again, indent=2))
    return d


def test_resolve_references_and_duplicates_options(tmp_path):
    d = _refs_bundle(tmp_path)
    plain = flatfhir.read(d, progress=False)
    assert plain["Observation"]["subject_reference"].to_pylist() == ["urn:uuid:aaaa-1"]
    assert plain["Patient"]["gender"].to_pylist() == ["female", "male"]
    assert plain.bundles["references_resolved"] == 0

    got = flatfhir.read(d, progress=False, resolve_references=True, bundle_duplicates="first")
    assert got["Observation"]["subject_reference"].to_pylist() == ["Patient/p1"]
    # Not the fullUrl of an entry: left as written, and counted.
    assert got["Observation"]["performer_0_reference"].to_pylist() == ["urn:uuid:nowhere"]
    assert got["Patient"]["gender"].to_pylist() == ["female"]
    assert got.bundles["references_resolved"] == 1
    assert got.bundles["references_unresolved"] == 1
    assert got.bundles["duplicates"] == 1

    batches = list(flatfhir.iter_batches(d, "Observation", resolve_references=True))
    assert pa.Table.from_batches(batches)["subject_reference"].to_pylist() == ["Patient/p1"]
    r = flatfhir.convert(d, tmp_path / "out", progress=False, bundle_duplicates="first")
    assert r.bundles["duplicates"] == 1
    assert pq.read_table(tmp_path / "out" / "Patient.parquet").num_rows == 1
    s = flatfhir.schema(d, progress=False, bundle_duplicates="first")
    assert s["Patient"].rows == 1


@pytest.mark.parametrize("kw", [{"bundles": "yes"}, {"bundle_duplicates": "last"}])
def test_bad_bundle_options_are_refused(kw, tmp_path):
    d = _refs_bundle(tmp_path)
    with pytest.raises(OptionsError):
        flatfhir.read(d, progress=False, **kw)


def _bad_entry(tmp_path: Path) -> Path:
    f = tmp_path / "bad.json"
    f.write_text(
        "{\n  \"resourceType\": \"Bundle\",\n  \"entry\": [\n"
        "    {\"resource\": {\"resourceType\": \"Patient\", \"id\": \"a\"}},\n"
        "    {\"request\": {\"method\": \"GET\"}},\n"
        "    {\"resource\": {\"resourceType\": \"Patient\", \"id\": \"b\"}}\n  ]\n}\n"
    )
    return f


def test_a_bad_entry_is_named_by_bundle_file_line_and_entry(tmp_path):
    f = _bad_entry(tmp_path)
    with pytest.raises(BadLineError) as e:
        flatfhir.read(f, progress=False)
    assert e.value.file == str(f)
    assert e.value.line == 5
    assert e.value.reason == "entry[1]: the entry has no resource"

    got = flatfhir.read(f, progress=False, on_error="skip")
    assert got["Patient"]["id"].to_pylist() == ["a", "b"]
    assert [(r.file, r.line, r.reason) for r in got.rejected] == \
        [(str(f), 5, "entry[1]: the entry has no resource")]
    assert got.bundles["bad_entries"] == 1


def test_convert_of_bundles_names_and_quarantines_a_bad_entry(tmp_path):
    f = _bad_entry(tmp_path)
    with pytest.raises(BadLineError) as e:
        flatfhir.convert(f, tmp_path / "fail", progress=False)
    assert (e.value.file, e.value.line) == (str(f), 5)
    assert not (tmp_path / "fail" / "Patient.parquet").exists()
    got = flatfhir.convert(f, tmp_path / "skip", progress=False, on_error="skip")
    assert [(r.file, r.line, r.reason) for r in got.rejected] == \
        [(str(f), 5, "entry[1]: the entry has no resource")]
    assert pq.read_table(tmp_path / "skip" / "Patient.parquet")["id"].to_pylist() == ["a", "b"]
    assert got.bundles is not None and got.bundles["bad_entries"] == 1


def test_shards_refuse_bundle_files(tmp_path):
    from flatfhir import scale

    src, _ = _write_layout(tmp_path, "pretty")
    with pytest.raises(InputError, match="Bundle"):
        scale.plan_shards(src, "Patient")
