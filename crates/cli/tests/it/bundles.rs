//! `flatfhir convert` and `schema` on FHIR Bundles: byte-identical tables to the same
//! resources as NDJSON, the counts in the summary, bad entries named on stderr.

use serde_json::Value;

use crate::support::{fixture, flatfhir};

/// The NDJSON lines of the basic fixtures, and the same resources as one Bundle per line.
fn inputs(dir: &std::path::Path) {
    let mut lines = String::new();
    let mut bundles = String::new();
    for f in ["basic/Patient.ndjson", "basic/Observation.ndjson"] {
        for l in std::fs::read_to_string(fixture(f)).unwrap().lines() {
            if l.trim().is_empty() {
                continue;
            }
            lines.push_str(l);
            lines.push('\n');
            bundles.push_str(&format!(
                "{{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[{{\"resource\":{l}}}]}}\n"
            ));
        }
    }
    std::fs::create_dir_all(dir.join("n")).unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    // The same file name in both, run from each directory: the tables' metadata (which names
    // the source files) is the same too, so the files must be equal byte for byte.
    std::fs::write(dir.join("n/in.ndjson"), lines).unwrap();
    std::fs::write(dir.join("b/in.ndjson"), bundles).unwrap();
}

#[test]
fn bundle_lines_give_byte_identical_parquet() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    flatfhir()
        .current_dir(dir.path().join("n"))
        .args(["convert", "-q", "in.ndjson", "--out", "../o1"])
        .assert()
        .success();
    let out = flatfhir()
        .current_dir(dir.path().join("b"))
        .args([
            "convert",
            "--json",
            "--bundles",
            "unpack",
            "in.ndjson",
            "--out",
            "../o2",
        ])
        .assert()
        .success();
    for t in ["Patient", "Observation"] {
        let a = std::fs::read(dir.path().join(format!("o1/{t}.parquet"))).unwrap();
        let b = std::fs::read(dir.path().join(format!("o2/{t}.parquet"))).unwrap();
        assert!(a == b, "{t}.parquet differs");
    }
    let summary: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(summary["bundles"]["bundles"], 7);
    assert_eq!(summary["bundles"]["resources"], 7);
    // Without --bundles unpack, an NDJSON file of Bundles is the Bundle table.
    flatfhir()
        .current_dir(dir.path().join("b"))
        .args(["convert", "-q", "in.ndjson", "--out", "../o3"])
        .assert()
        .success();
    assert!(dir.path().join("o3/Bundle.parquet").is_file());
}

#[test]
fn a_bad_entry_is_named_by_file_line_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.json");
    std::fs::write(
        &f,
        "{\n  \"resourceType\": \"Bundle\",\n  \"entry\": [\n    {\"resource\": {\"resourceType\": \"Patient\", \"id\": \"a\"}},\n    {\"request\": {\"method\": \"GET\"}}\n  ]\n}\n",
    )
    .unwrap();
    let out = flatfhir()
        .args(["convert", "--out"])
        .arg(dir.path().join("o"))
        .arg(&f)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains(&format!(
            "error: Patient: {}:5: entry[1]: the entry has no resource",
            f.display()
        )),
        "{err}"
    );
    assert!(err.contains("note: unpacked 1 Bundle(s) from 1 file(s): 1 resource(s), 1 entry that could not become a resource"), "{err}");
    flatfhir()
        .args(["convert", "-q", "--on-error", "skip", "--out"])
        .arg(dir.path().join("o"))
        .arg(&f)
        .assert()
        .code(2);
    // Views name the entry the same way.
    let view = flatfhir()
        .args([
            "convert",
            "--column",
            "Patient:id=id",
            "--format",
            "csv",
            "--out",
        ])
        .arg(dir.path().join("v"))
        .arg(&f)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&view.get_output().stderr).into_owned();
    assert!(
        err.contains(&format!(
            "{}:5: entry[1]: the entry has no resource",
            f.display()
        )),
        "{err}"
    );
    let schema = flatfhir()
        .args(["schema", "--on-error", "skip"])
        .arg(&f)
        .assert()
        .code(2);
    let text = String::from_utf8_lossy(&schema.get_output().stdout).into_owned();
    assert!(text.contains(&format!("{}:4", f.display())), "{text}");
}

/// A folder of Bundle files converts while it is unpacked; with `--types` (every type) it is
/// unpacked to temporary files first. Both give the same files and counts, and the note on
/// what was unpacked comes before the types' lines either way.
#[test]
fn bundle_folders_convert_the_same_streamed_or_unpacked_first() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (k, f) in ["basic/Patient.ndjson", "basic/Observation.ndjson"]
        .iter()
        .enumerate()
    {
        let entries: Vec<String> = std::fs::read_to_string(fixture(f))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("    {{\"resource\": {l}}}"))
            .collect();
        std::fs::write(
            input.join(format!("b{k}.json")),
            format!(
                "{{\n  \"resourceType\": \"Bundle\",\n  \"entry\": [\n{}\n  ]\n}}\n",
                entries.join(",\n")
            ),
        )
        .unwrap();
    }
    let run = |out: &str, extra: &[&str]| {
        let o = flatfhir()
            .current_dir(dir.path())
            .args(["convert", "--json", "in", "--out", out])
            .args(extra)
            .assert()
            .success();
        let stderr = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
        let summary: Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
        (stderr, summary)
    };
    let (streamed_err, streamed) = run("o1", &[]);
    let (unpacked_err, unpacked) = run("o2", &["--types", "Observation,Patient"]);
    assert_eq!(streamed["bundles"], unpacked["bundles"]);
    assert_eq!(streamed["bundles"]["resources"], 7);
    for key in ["rows", "input_bytes", "rejected"] {
        assert_eq!(streamed[key], unpacked[key], "{key}");
    }
    for t in ["Patient", "Observation"] {
        let a = std::fs::read(dir.path().join(format!("o1/{t}.parquet"))).unwrap();
        let b = std::fs::read(dir.path().join(format!("o2/{t}.parquet"))).unwrap();
        assert!(a == b, "{t}.parquet differs");
    }
    for err in [&streamed_err, &unpacked_err] {
        let note = err.find("note: unpacked 2 Bundle(s)").expect(err);
        let first = err.find("Observation: ").expect(err);
        assert!(note < first, "{err}");
    }
}
