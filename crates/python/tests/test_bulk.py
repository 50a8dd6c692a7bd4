"""The Bulk Data client against the project's test server (`flatfhir-bulk-server serve`):
a full export with an expiring token and transient errors, Ctrl-C then resume, errors with
the server's text, and the one-call notebook form."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

import flatfhir


def client(s, **kw):
    return flatfhir.Client(s.url, client_id=s.client_id, private_key=s.key, kid=s.kid,
                           min_wait=0.01, **kw)


def source(s):
    """The server's data read directly: what the export must deliver."""
    return flatfhir.read(s.data, progress=False)


def test_full_export_with_token_expiry_and_transient_errors(serve, tmp_path):
    s = serve("--token-uses", "3", "--transient-status-errors", "2", "--lines-per-file", "40",
              "--deleted", "--failing-type", "Condition", "--signed-urls")
    events = []
    out = tmp_path / "export"
    r = client(s).export(out, on_event=events.append, progress=False)
    counts = s.stop()
    kinds = [e["event"] for e in events]
    # Two transient status errors were retried; the token was renewed after it expired.
    assert kinds.count("retrying") >= 2
    assert counts["token_calls"] >= 2
    assert r.transaction_time and r.transactionTime == r.transaction_time
    listed = sum(len(r.manifest.get(k, [])) for k in ("output", "error", "deleted"))
    assert r.files == listed == len(list(out.glob("*.*.ndjson"))) + 2
    assert not r.failed
    # The failing type's OperationOutcome is reported as an error issue with its text.
    assert r.errors and all(e["file"].startswith("error/") for e in r.errors)
    assert any(e["severity"] in ("error", "fatal") and e["text"] for e in r.errors)
    assert r.deleted and Path(r.deleted[0]["path"]).exists()
    assert r.manifest["transactionTime"] == r.transaction_time
    # The file URLs are signed (?sig=...): they are in the manifest, never in a repr or event.
    assert "sig=" in json.dumps(r.manifest)
    assert "sig=" not in repr(r) and "sig=" not in repr(events)
    # Every resource arrived, in order: the export reads into the same tables as the source.
    want = source(s)
    got = r.read(progress=False)
    assert set(got) == set(want) - {"Condition"}
    for t in got:
        assert got[t].equals(want[t]), t
    assert sum(r.types.values()) == sum(got[t].num_rows for t in got)
    assert client(s).status(out, poll=False).phase == "complete"


def test_keyboard_interrupt_then_resume_loses_nothing(serve, tmp_path):
    # Slow downloads, one at a time, so the export is still downloading when Ctrl-C comes.
    s = serve("--slow-chunks-ms", "5", "--lines-per-file", "30", patients=40)
    out = tmp_path / "export"
    done = []

    def on_event(e):
        if e["event"] == "file_done":
            done.append(e["path"])
            if len(done) == 1:
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        client(s).export(out, parallel=1, on_event=on_event, progress=False)
    st = client(s).status(out, poll=False)
    assert st.phase == "downloading"
    # Stopped mid-way: some files complete, the others pending (none failed).
    assert st.done >= 1 and st.pending >= 1, st.files
    assert st.done + st.pending == len(st.files)
    # A second export into the same directory without resume is refused.
    with pytest.raises(flatfhir.errors.JobError):
        client(s).export(out, progress=False)
    r = client(s).resume(out, progress=False)
    assert not r.failed
    want = source(s)
    got = r.read(progress=False)
    assert list(got) == list(want)
    for t in got:
        assert got[t].equals(want[t]), t


def test_auth_errors_carry_the_server_text_and_no_secret(serve, tmp_path):
    s = serve()
    secret = "s3cr3t-client-secret-value"
    c = flatfhir.Client(s.url, client_id="nobody", client_secret=secret, min_wait=0.01, retries=1)
    assert secret not in repr(c)
    with pytest.raises(flatfhir.AuthError) as e:
        c.export(tmp_path / "x", progress=False)
    err = e.value
    assert err.status in (400, 401)
    assert err.server_message
    for text in (str(err), repr(err), repr(err.__dict__)):
        assert secret not in text


def test_a_bad_key_is_reported_before_any_request(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(flatfhir.AuthError) as e:
        flatfhir.Client("http://127.0.0.1:9/fhir", client_id="c", private_key=key)
    assert e.value.path == str(key)
    assert "not a key" not in str(e.value)


@pytest.mark.parametrize("fault", ["--kickoff-failure", "--fatal-status-error"])
def test_server_errors_carry_status_and_operation_outcome(fault, serve, tmp_path):
    s = serve(fault)
    with pytest.raises(flatfhir.ServerError) as e:
        client(s).export(tmp_path / "x", progress=False)
    assert e.value.status == 500
    assert e.value.server_message and e.value.server_message in str(e.value)


def test_one_call_export_to_pandas_with_fhirpath_columns(serve, tmp_path):
    s = serve("--token-uses", "5")
    columns = {"Patient": {"id": "id", "gender": "gender"},
               "Observation": {"id": "id", "code": "code.coding[0].code", "subject": "subject.reference"}}
    frames = flatfhir.export_to_pandas(s.url, client_id=s.client_id, private_key=str(s.key), kid=s.kid,
                                       min_wait=0.01, columns=columns, progress=False)
    want = flatfhir.read_views(s.data, columns=columns).to_pandas()
    assert list(frames) == ["Patient", "Observation"]
    for t in frames:
        assert frames[t].equals(want[t]), t


def test_export_progress_fires_tqdm_and_callback(serve, tmp_path, monkeypatch):
    import tqdm.auto

    updates = []

    class Recording(tqdm.auto.tqdm):  # type: ignore[misc, valid-type]
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    s = serve()
    r = client(s).export(tmp_path / "a", progress=True)
    assert sum(updates) == r.bytes
    calls = []
    r2 = client(s).export(tmp_path / "b", progress=lambda done, total: calls.append(done))
    assert calls and calls[-1] == r2.bytes
