"""A search crawl's directory (``flatfhir search``) read by the Python reader unchanged."""

from __future__ import annotations

import json
import subprocess

import flatfhir


def test_a_search_crawl_reads_into_the_servers_tables(cli, serve, tmp_path):
    # No $export here: the crawl is the only way out; next links are relative to the page.
    s = serve("--no-export", "--next-links", "relative", "--search-count", "7", "--search-warning",
              patients=8)
    want = flatfhir.read(s.data, progress=False)
    out = tmp_path / "crawl"
    run = subprocess.run(
        [str(cli), "search", "--fhir-url", s.url, "--client-id", s.client_id, "--kid", s.kid,
         "--private-key", str(s.key), "--min-wait", "10ms", "--out", str(out), "--json",
         *sorted(want)],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["export_offered"] is False
    assert summary["pages"] > len(want)
    got = flatfhir.read(out, progress=False)
    # The warning outcome entries are in error/, which the reader leaves out.
    assert set(got) == set(want)
    for t in want:
        assert got[t].equals(want[t]), t
    assert (out / "error" / "1.OperationOutcome.ndjson").exists()
