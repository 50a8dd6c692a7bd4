"""FHIRPath columns and SQL on FHIR ViewDefinitions: the same tables as `flatfhir convert --view`."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest

import flatfhir
from conftest import BDS, FIXTURES, need_shared

PATIENT_VIEW = {
    "resourceType": "ViewDefinition",
    "name": "patients",
    "resource": "Patient",
    "select": [
        {"column": [
            {"name": "id", "path": "getResourceKey()"},
            {"name": "gender", "path": "gender"},
            {"name": "birth_date", "path": "birthDate"},
        ]},
        {"forEach": "name", "column": [
            {"name": "family", "path": "family"},
            {"name": "given", "path": "given.first()"},
        ]},
    ],
}

NOTEBOOK_COLUMNS = {
    "Patient": {"id": "identifier[0].value", "gender": "gender"},
    "Observation": {"id": "id", "code": "code.coding[0].code", "value": "valueQuantity.value",
                    "subject": "subject.reference"},
}


def _cli_view(cli, inputs, out, args):
    subprocess.run([str(cli), "convert", str(inputs), "--out", str(out), "--quiet", *args], check=True)


def test_columns_equal_the_cli(cli, tmp_path):
    need_shared()
    args = []
    for t, cols in NOTEBOOK_COLUMNS.items():
        for name, path in cols.items():
            args += ["--column", f"{t}:{name}={path}"]
    _cli_view(cli, BDS, tmp_path, args)
    got = flatfhir.read(BDS, columns=NOTEBOOK_COLUMNS)
    assert list(got) == ["Patient", "Observation"]
    for t in got:
        want = pq.read_table(tmp_path / f"{t}.parquet")
        assert got[t].column_names == list(NOTEBOOK_COLUMNS[t])
        assert got[t].schema.remove_metadata() == want.schema.remove_metadata()
        assert got[t].equals(want)


@pytest.mark.parametrize("form", ["dict", "text", "path"])
def test_view_definitions_equal_the_cli(form, cli, tmp_path):
    view_file = tmp_path / "patients.json"
    view_file.write_text(json.dumps(PATIENT_VIEW))
    _cli_view(cli, FIXTURES / "basic", tmp_path / "cli", ["--view", str(view_file)])
    arg = {"dict": PATIENT_VIEW, "text": json.dumps(PATIENT_VIEW), "path": view_file}[form]
    got = flatfhir.read_views(FIXTURES / "basic", views=arg)
    want = pq.read_table(tmp_path / "cli" / "patients.parquet")
    assert list(got) == ["patients"]
    assert got["patients"].equals(want)
    assert got["patients"].num_rows >= 3


def test_an_invalid_fhirpath_raises_a_view_error():
    with pytest.raises(flatfhir.ViewError) as e:
        flatfhir.read(FIXTURES / "basic", columns={"Patient": {"id": "name.where("}})
    assert e.value.view == "Patient"
    assert "name.where(" in str(e.value)


def test_columns_accept_pairs_like_the_notebook():
    got = flatfhir.read_views(FIXTURES / "basic", columns={"Patient": [("id", "id"), ("gender", "gender")]})
    assert got["Patient"].column("id").to_pylist() == ["p1", "p2", "p3"]
    assert got.to_pandas()["Patient"]["gender"].tolist() == ["female", "male", "unknown"]


def test_keyboard_interrupt_stops_a_view_run():
    need_shared()
    import os
    import signal
    import threading

    # SIGINT from another thread while the main thread waits in the view run (the Python
    # handler runs when the waiting thread checks for signals).
    with pytest.raises(KeyboardInterrupt):
        threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()
        for _ in range(50):  # in case the signal comes before the first run starts
            flatfhir.read(BDS, columns=NOTEBOOK_COLUMNS)
    # The runner stopped and its temporary directory is gone (checked by conftest).
    assert flatfhir.read(FIXTURES / "basic", columns={"Patient": {"id": "id"}})["Patient"].num_rows == 3
