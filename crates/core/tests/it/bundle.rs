//! FHIR Bundles as input: their `entry[].resource` convert exactly as the same resources as
//! NDJSON (same tables, same column order, same values, in entry order), whatever the
//! Bundle's layout; bad entries are named by file, line and entry index and quarantined one
//! by one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use flatfhir_core::{
    BundleMode, BundleOptions, ConvertOptions, Duplicates, NoProgress, OnError, Plan, ReadOptions,
    convert_group, infer_schema, plan, plan_with,
};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The lines of the NDJSON files, in order. They are put into Bundles as text: parsing and
/// writing them again would change number spellings (serde_json rounds some floats).
fn resources(files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if !line.trim().is_empty() {
                out.push(line.to_string());
            }
        }
    }
    out
}

/// Pretty-prints JSON text without touching any token: a line break and indentation after
/// each `{`, `[` and `,`, and before each `}` and `]`, outside strings.
fn pretty(json: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut depth = indent;
    let (mut in_str, mut esc) = (false, false);
    let nl = |out: &mut String, d: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(d));
    };
    for c in json.chars() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                depth += 1;
                nl(&mut out, depth);
            }
            '}' | ']' => {
                depth -= 1;
                nl(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                nl(&mut out, depth);
            }
            ':' => out.push_str(" : "),
            c => out.push(c),
        }
    }
    out
}

/// A Bundle of `rs` as text, one line or pretty-printed.
fn bundle_text(rs: &[String], pretty_print: bool) -> String {
    let entries: Vec<String> = rs
        .iter()
        .map(|r| {
            let r = if pretty_print {
                pretty(r, 3)
            } else {
                r.clone()
            };
            format!(r#"{{"fullUrl": "urn:uuid:x", "resource": {r}}}"#)
        })
        .collect();
    if pretty_print {
        format!(
            "{{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"collection\",\n  \"entry\": [\n    {}\n  ]\n}}\n",
            entries.join(",\n    ")
        )
    } else {
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[{}]}}"#,
            entries.join(",")
        )
    }
}

fn bundle(rs: &[Value]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": rs.iter().map(|r| json!({"fullUrl": "urn:uuid:x", "resource": r})).collect::<Vec<_>>(),
    })
}

/// Converts `inputs` into `out` and returns each table's decoded batches by type.
fn convert(
    plan: &Plan,
    out: &Path,
    on_error: OnError,
) -> Vec<(String, Vec<arrow_array::RecordBatch>, u64)> {
    let opts = ConvertOptions::default()
        .out_dir(out.to_path_buf())
        .on_error(on_error)
        .threads(2);
    let mut tables = Vec::new();
    for g in &plan.groups {
        let r = convert_group(g, &opts, &NoProgress).unwrap();
        let batches = match &r.output {
            Some(p) => {
                let f = std::fs::File::open(p).unwrap();
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            None => Vec::new(),
        };
        tables.push((g.resource_type.clone(), batches, r.rejected));
    }
    tables
}

fn with(mode: BundleMode) -> BundleOptions {
    BundleOptions::default().mode(mode)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The golden test: the repository's fixtures (and, when present, a slice of every type of
/// ../shared's bds-r4 export) as Bundles in every layout give the same tables as NDJSON.
#[test]
fn bundles_convert_exactly_as_the_same_resources_as_ndjson() {
    let mut ndjson: Vec<PathBuf> = [
        "basic/Patient.ndjson",
        "basic/Observation.ndjson",
        "decimals/Observation.ndjson",
    ]
    .iter()
    .map(|f| root().join("fixtures").join(f))
    .collect();
    let shared = std::env::var_os("FLATFHIR_SHARED")
        .map_or_else(|| root().join("../shared"), PathBuf::from)
        .join("fixtures/bds-r4");
    let dir = tempfile::tempdir().unwrap();
    if shared.is_dir() {
        // 40 lines of each type keeps the test quick in a debug build.
        for e in std::fs::read_dir(&shared).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "ndjson") {
                let head: String = std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .take(40)
                    .map(|l| format!("{l}\n"))
                    .collect();
                let to = dir.path().join(p.file_name().unwrap());
                std::fs::write(&to, head).unwrap();
                ndjson.push(to);
            }
        }
    } else {
        eprintln!(
            "SKIPPED: (in part) {} is absent (../shared; or set FLATFHIR_SHARED): only the repository's fixtures were compared",
            shared.display()
        );
    }
    // Sorted as the plan orders NDJSON files of one type (file-name order), so that the
    // Bundles hold each type's resources in the order the NDJSON pass reads them.
    ndjson.sort_by(|a, b| {
        flatfhir_core::internal::natural_cmp(
            &a.file_name().unwrap().to_string_lossy(),
            &b.file_name().unwrap().to_string_lossy(),
        )
        .then_with(|| a.cmp(b))
    });
    let all = resources(&ndjson);
    let reference = convert(
        &plan(&ndjson, &ReadOptions::default()).unwrap(),
        &dir.path().join("ref"),
        OnError::Fail,
    );
    assert!(reference.len() >= 2);

    // Layouts: one pretty Bundle; three one-line Bundles in one file; gzip; resources split over
    // several files (order: by file name); NDJSON of Bundles (one per line, `unpack`).
    let b = dir.path().join("b");
    std::fs::create_dir_all(b.join("pretty")).unwrap();
    std::fs::write(b.join("pretty/all.json"), bundle_text(&all, true)).unwrap();
    let third = all.len().div_ceil(3);
    let concatenated: String = all
        .chunks(third)
        .map(|c| bundle_text(c, false) + "\n")
        .collect();
    std::fs::create_dir_all(b.join("lines")).unwrap();
    std::fs::write(b.join("lines/three.json"), &concatenated).unwrap();
    std::fs::create_dir_all(b.join("gz")).unwrap();
    std::fs::write(
        b.join("gz/all.json.gz"),
        gzip(bundle_text(&all, true).as_bytes()),
    )
    .unwrap();
    std::fs::create_dir_all(b.join("split")).unwrap();
    for (i, c) in all.chunks(7).enumerate() {
        std::fs::write(b.join(format!("split/part{i}.json")), bundle_text(c, true)).unwrap();
    }
    std::fs::create_dir_all(b.join("ndjson")).unwrap();
    let per_line: String = all
        .iter()
        .map(|r| bundle_text(std::slice::from_ref(r), false) + "\n")
        .collect();
    std::fs::write(b.join("ndjson/bundles.ndjson"), per_line).unwrap();

    for (input, mode) in [
        ("pretty/all.json", BundleMode::Auto),
        ("lines/three.json", BundleMode::Auto),
        ("gz/all.json.gz", BundleMode::Auto),
        ("split", BundleMode::Auto),
        ("ndjson/bundles.ndjson", BundleMode::Unpack),
    ] {
        let p = plan_with(&[b.join(input)], &ReadOptions::default(), &with(mode)).unwrap();
        assert_eq!(
            p.bundles.as_ref().unwrap().stats().resources,
            all.len() as u64,
            "{input}"
        );
        let got = convert(
            &p,
            &dir.path().join(format!("out-{}", input.replace('/', "-"))),
            OnError::Fail,
        );
        assert_eq!(got.len(), reference.len(), "{input}");
        for (g, r) in got.iter().zip(&reference) {
            assert_eq!(g.0, r.0);
            assert_eq!(g.1.len(), r.1.len(), "{input}: {}", r.0);
            for (gb, rb) in g.1.iter().zip(&r.1) {
                assert_eq!(gb.schema(), rb.schema(), "{input}: {}", r.0);
                for (k, f) in rb.schema().fields().iter().enumerate() {
                    assert_eq!(gb.column(k), rb.column(k), "{input}: {}.{}", r.0, f.name());
                }
            }
            assert_eq!(g, r, "{input}: {}", r.0);
        }
    }
}

/// In `auto` mode an NDJSON file of Bundles is the Bundle table (a Bulk Data export's
/// meaning); `keep` unpacks not even a `*.json` file.
#[test]
fn modes_decide_which_files_are_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let r = json!({"resourceType": "Patient", "id": "a"});
    let line = serde_json::to_string(&bundle(&[r])).unwrap() + "\n";
    std::fs::write(dir.path().join("b.ndjson"), &line).unwrap();
    let p = plan_with(
        &[dir.path().join("b.ndjson")],
        &ReadOptions::default(),
        &with(BundleMode::Auto),
    )
    .unwrap();
    assert_eq!(p.groups[0].resource_type, "Bundle");
    let p = plan_with(
        &[dir.path().join("b.ndjson")],
        &ReadOptions::default(),
        &with(BundleMode::Unpack),
    )
    .unwrap();
    assert_eq!(p.groups[0].resource_type, "Patient");
    std::fs::write(dir.path().join("b.json"), &line).unwrap();
    let p = plan_with(
        &[dir.path().join("b.json")],
        &ReadOptions::default(),
        &with(BundleMode::Keep),
    )
    .unwrap();
    assert_eq!(p.groups[0].resource_type, "Bundle");
    assert!(p.bundles.is_none());
    // In a directory, a `*.json` file is read when it holds a Bundle, and skipped otherwise.
    std::fs::write(dir.path().join("view.json"), r#"{"name": "not FHIR"}"#).unwrap();
    std::fs::remove_file(dir.path().join("b.ndjson")).unwrap();
    let p = plan_with(
        &[dir.path().to_path_buf()],
        &ReadOptions::default(),
        &with(BundleMode::Auto),
    )
    .unwrap();
    assert_eq!(p.groups.len(), 1);
    assert_eq!(p.groups[0].resource_type, "Patient");
    assert_eq!(p.skipped, [dir.path().join("view.json")]);
}

const BAD: &str = r#"{
  "resourceType": "Bundle",
  "type": "collection",
  "entry": [
    { "fullUrl": "urn:uuid:1", "resource": { "resourceType": "Patient", "id": "p1" } },
    { "fullUrl": "urn:uuid:2", "request": { "method": "GET" } },
    { "resource": { "id": "x" } },
    { "resource": { "resourceType": "Patient", "id": "p2", "active": tru } },
    { "resource": { "resourceType": "Observation", "id": "o1", "subject": { "reference": "urn:uuid:1" }, "performer": [{"reference": "urn:uuid:9"}] } },
    { "resource": { "resourceType": "Patient", "id": "p3", "name": [ { "family": "X" }
"#;

/// Each bad entry is named by file, the line it starts on and its index; `--on-error skip`
/// sets aside the entry (kept in `_rejected/`), not the Bundle.
#[test]
fn bad_entries_are_named_and_quarantined_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, BAD).unwrap();
    let p = plan(std::slice::from_ref(&f), &ReadOptions::default()).unwrap();
    let opts = ConvertOptions::default().out_dir(dir.path().join("out"));
    // Failing: the first bad entry of each type stops it, named by its place in the Bundle.
    let errs: Vec<String> = p
        .groups
        .iter()
        .map(|g| {
            convert_group(g, &opts, &NoProgress)
                .unwrap_err()
                .to_string()
        })
        .collect();
    let name = f.display().to_string();
    assert_eq!(
        errs,
        [
            format!("{name}:6: entry[1]: the entry has no resource"),
            format!(
                "{name}:8: entry[3]: not valid JSON: expected a value (true, false, null, a number, a string, an array or an object), found 't' at byte 45"
            ),
        ]
    );
    let got = convert(&p, &dir.path().join("skip"), OnError::Skip);
    let rows: Vec<(String, usize, u64)> = got
        .iter()
        .map(|(t, b, rej)| (t.clone(), b.iter().map(|b| b.num_rows()).sum(), *rej))
        .collect();
    assert_eq!(
        rows,
        [
            ("Observation".to_string(), 1, 3),
            ("Patient".to_string(), 1, 1)
        ]
    );
    let records: Vec<Value> =
        std::fs::read_to_string(dir.path().join("skip/_rejected/Observation.errors.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let reasons: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (6, "entry[1]: the entry has no resource"),
            (
                7,
                "entry[2]: the resource has no resourceType (a string naming its type)"
            ),
            (
                10,
                "entry[5]: not valid JSON: the Bundle ends inside this entry (truncated?)"
            ),
        ]
    );
    assert!(records.iter().all(|r| r["file"] == name.as_str()));
    let kept =
        std::fs::read_to_string(dir.path().join("skip/_rejected/Observation.ndjson")).unwrap();
    assert_eq!(
        kept,
        "{\"fullUrl\":\"urn:uuid:2\",\"request\":{\"method\":\"GET\"}}\n{\"id\":\"x\"}\n\
         {\"resourceType\":\"Patient\",\"id\":\"p3\",\"name\":[{\"family\":\"X\"}\n"
    );
}

/// Bundles on NDJSON lines: a bad entry is named by the line of its Bundle.
#[test]
fn entries_of_ndjson_bundles_are_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.json");
    let good = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "a"}}]});
    // Line 2: a second entry whose resource is not valid JSON (reported by the walker);
    // line 3: broken beyond the entry (a closing bracket that does not match), so the rest
    // of that line is left and line 4 read again.
    let bad = r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"b"}},{"resource":{"resourceType":"Patient","id":"b2","x":01}}]}"#;
    let broken =
        r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"c"]}]}"#;
    std::fs::write(&f, format!("{good}\n{bad}\n{broken}\n{good}\n")).unwrap();
    let p = plan(std::slice::from_ref(&f), &ReadOptions::default()).unwrap();
    let s = infer_schema(
        &p.groups[0],
        &ConvertOptions::default().on_error(OnError::Skip),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(s.rows, 3);
    let named: Vec<(u64, &str)> = s
        .rejected_sample
        .iter()
        .map(|r| (r.line, &r.reason[..20]))
        .collect();
    assert_eq!(
        named,
        [(2, "entry[1]: not valid "), (3, "entry[0]: not valid ")]
    );
    assert!(
        s.rejected_sample[1]
            .reason
            .ends_with("a closing bracket does not match its opening one")
    );
    // The schema names the Bundle file, not a temporary one.
    assert_eq!(s.files, [f]);
    assert_eq!(s.columns[0].first_seen.line, 1);
}

/// `urn:uuid:` references to another entry's fullUrl become `Type/id` (also forward
/// references); the others stay and are counted.
#[test]
fn references_resolve_to_type_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.json");
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "id": "o1",
            "subject": {"reference": "urn:uuid:p"}, "performer": [{"reference": "urn:uuid:none"}, {"reference": "Practitioner/x"}]}},
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p1"}},
    ]});
    std::fs::write(&f, serde_json::to_string_pretty(&b).unwrap()).unwrap();
    let opts = BundleOptions::default().resolve_references(true);
    let p = plan_with(std::slice::from_ref(&f), &ReadOptions::default(), &opts).unwrap();
    let stats = p.bundles.as_ref().unwrap().stats().clone();
    assert_eq!(
        (stats.references_resolved, stats.references_unresolved),
        (1, 1)
    );
    let got = convert(&p, &dir.path().join("o"), OnError::Fail);
    let obs = &got[0].1[0];
    let col = |n: &str| {
        let a = obs.column_by_name(n).unwrap();
        arrow_array::cast::AsArray::as_string::<i32>(a)
            .value(0)
            .to_string()
    };
    assert_eq!(col("subject_reference"), "Patient/p1");
    assert_eq!(col("performer_0_reference"), "urn:uuid:none");
    assert_eq!(col("performer_1_reference"), "Practitioner/x");
    // Without the option, references stay as written.
    let p = plan(&[f], &ReadOptions::default()).unwrap();
    let got = convert(&p, &dir.path().join("o2"), OnError::Fail);
    let a = got[0].1[0].column_by_name("subject_reference").unwrap();
    assert_eq!(
        arrow_array::cast::AsArray::as_string::<i32>(a).value(0),
        "urn:uuid:p"
    );
}

/// Duplicates across Bundles: kept by default, the first only when asked (and counted).
#[test]
fn duplicates_are_kept_or_dropped_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let r = json!({"resourceType": "Organization", "id": "h1"});
    for name in ["a.json", "b.json"] {
        std::fs::write(
            dir.path().join(name),
            bundle(std::slice::from_ref(&r)).to_string(),
        )
        .unwrap();
    }
    let p = plan(&[dir.path().to_path_buf()], &ReadOptions::default()).unwrap();
    assert_eq!(
        convert(&p, &dir.path().join("o1"), OnError::Fail)[0].1[0].num_rows(),
        2
    );
    let opts = BundleOptions::default().duplicates(Duplicates::First);
    let p = plan_with(&[dir.path().to_path_buf()], &ReadOptions::default(), &opts).unwrap();
    assert_eq!(p.bundles.as_ref().unwrap().stats().duplicates, 1);
    assert_eq!(
        convert(&p, &dir.path().join("o2"), OnError::Fail)[0].1[0].num_rows(),
        1
    );
}

/// A Bundle whose `resourceType` is not its first member, a stand-alone resource document,
/// and a resource longer than the line cap.
#[test]
fn documents_of_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mixed.json");
    let late = r#"{"type":"collection","entry":[{"resource":{"id":"a","resourceType":"Patient"}}],"resourceType":"Bundle"}"#;
    let lone = "{\n  \"resourceType\": \"Patient\",\n  \"id\": \"b\"\n}";
    let long = format!(
        r#"{{"resourceType":"Bundle","entry":[{{"resource":{{"resourceType":"Patient","id":"c","text":"{}"}}}}]}}"#,
        "x".repeat(300)
    );
    std::fs::write(&f, format!("{late}\n{lone}\n{long}\n")).unwrap();
    let read = ReadOptions::default().max_line_bytes(200);
    let p = plan_with(&[f], &read, &BundleOptions::default()).unwrap();
    let stats = p.bundles.as_ref().unwrap().stats().clone();
    assert_eq!(
        (stats.bundles, stats.resources, stats.bad_entries),
        (2, 2, 1)
    );
    let opts = ConvertOptions::default()
        .out_dir(dir.path().join("o"))
        .on_error(OnError::Skip)
        .read(read);
    let r = convert_group(&p.groups[0], &opts, &NoProgress).unwrap();
    assert_eq!((r.rows, r.rejected), (2, 1));
    let why =
        std::fs::read_to_string(dir.path().join("o/_rejected/Patient.errors.ndjson")).unwrap();
    assert!(
        why.contains(r#""line":6"#)
            && why.contains("entry[0]: the resource is longer than --max-line-bytes"),
        "{why}"
    );
}
