//! Runs the SQL on FHIR conformance suite (`../shared/sql-on-fhir/tests/*.json`) and writes
//! `test_report.json` in the suite's report format.
//!
//! The report goes to `$SOF_TEST_REPORT` when set, else to
//! `target/tmp/sql-on-fhir/test_report.json`. The test fails if any case fails that is not
//! in [`EXPECTED_FAILURES`]; it is skipped (with a message) when `../shared` is absent.

use std::path::{Path, PathBuf};

use flatfhir_view::{View, json};
use serde_json::{Map, Value, json};

/// `(file, test title)` of cases known to fail. Empty: all cases pass.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

/// `../shared/sql-on-fhir/tests` from the project root, or under `$FLATFHIR_SHARED` when set
/// (a git worktree elsewhere on disk).
fn suite_dir() -> PathBuf {
    std::env::var_os("FLATFHIR_SHARED").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sql-on-fhir/tests"),
        |s| PathBuf::from(s).join("sql-on-fhir/tests"),
    )
}

/// A canonical string for order-insensitive comparison of rows: object keys sorted, numbers
/// compared by value (so `5` equals `5.0`).
fn canon(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            format!("{}", (f * 1e9).round() / 1e9)
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", json!(k), canon(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Runs a view on the resources: the column names and rows as JSON objects.
fn run(
    view: &Value,
    resources: &[String],
    title: &str,
) -> Result<(Vec<String>, Vec<Value>), String> {
    let view = View::from_json(view, title).map_err(|e| e.to_string())?;
    let names: Vec<String> = view.columns().iter().map(|c| c.name.clone()).collect();
    let mut out = Vec::new();
    for text in resources {
        // Parsed and run the way the CLI does: members no path can reach are skipped.
        let mut err = None;
        let before = out.len();
        view.rows_for_line(text, &|| "resource".into(), &mut |rows| {
            for row in rows {
                let obj: Map<String, Value> = names
                    .iter()
                    .cloned()
                    .zip(row.iter().map(|c| c.to_json()))
                    .collect();
                out.push(Value::Object(obj));
            }
        })
        .unwrap_or_else(|e| {
            err = Some(e.to_string());
            false
        });
        if let Some(e) = err {
            return Err(e);
        }
        // The same resource parsed in full must give the same rows.
        let full = json::parse(text).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        view.rows(&full, &mut rows).map_err(|e| e.to_string())?;
        let full_rows: Vec<Value> = rows
            .iter()
            .map(|row| Value::Array(row.iter().map(|c| c.to_json()).collect()))
            .collect();
        let filtered: Vec<Value> = out[before..]
            .iter()
            .map(|o| Value::Array(names.iter().map(|n| o[n].clone()).collect()))
            .collect();
        if filtered != full_rows {
            return Err(format!(
                "skipping unreachable members changed the rows: {filtered:?} vs {full_rows:?}"
            ));
        }
    }
    Ok((names, out))
}

/// Checks one test case; `Err` explains the failure.
fn check(t: &Value, resources: &[String]) -> Result<(), String> {
    let title = t["title"].as_str().unwrap_or("?");
    let result = run(&t["view"], resources, title);
    if t.get("expectError").and_then(Value::as_bool) == Some(true) {
        return match result {
            Err(e) => {
                if std::env::var_os("SOF_VERBOSE").is_some() {
                    eprintln!("{title}: rejected as expected: {e}");
                }
                Ok(())
            }
            Ok((_, rows)) => Err(format!("expected an error, got {} rows", rows.len())),
        };
    }
    let (names, rows) = result?;
    if let Some(cols) = t.get("expectColumns").and_then(Value::as_array) {
        let want: Vec<&str> = cols.iter().filter_map(Value::as_str).collect();
        if names != want {
            return Err(format!("expected columns {want:?}, got {names:?}"));
        }
    }
    if let Some(n) = t.get("expectCount").and_then(Value::as_u64)
        && rows.len() as u64 != n
    {
        return Err(format!("expected {n} rows, got {}", rows.len()));
    }
    if let Some(expect) = t.get("expect").and_then(Value::as_array) {
        let mut want: Vec<String> = expect.iter().map(canon).collect();
        let mut got: Vec<String> = rows.iter().map(canon).collect();
        want.sort();
        got.sort();
        if want != got {
            return Err(format!(
                "rows differ\n  expected: {}\n  got:      {}",
                want.join(" "),
                got.join(" ")
            ));
        }
    }
    Ok(())
}

#[test]
fn sql_on_fhir_conformance() {
    let dir = suite_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "SKIPPED: the SQL on FHIR suite is not at {} (../shared is absent; or set FLATFHIR_SHARED)",
            dir.display()
        );
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut report = Map::new();
    let (mut passed, mut failed, mut expected_failed) = (0, 0, 0);
    let mut unexpected = Vec::new();
    for f in &files {
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let suite: Value = serde_json::from_str(&text).unwrap();
        let resources: Vec<String> = suite["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        let mut results = Vec::new();
        for t in suite["tests"].as_array().unwrap() {
            let title = t["title"].as_str().unwrap_or("?").to_string();
            let outcome = check(t, &resources);
            let known = EXPECTED_FAILURES.contains(&(file.as_str(), title.as_str()));
            let result = match &outcome {
                Ok(()) => {
                    passed += 1;
                    if known {
                        unexpected.push(format!(
                            "{file} / {title}: passes but is listed as an expected failure"
                        ));
                    }
                    json!({"passed": true})
                }
                Err(e) => {
                    failed += 1;
                    if known {
                        expected_failed += 1;
                    } else {
                        unexpected.push(format!("{file} / {title}: {e}"));
                    }
                    json!({"passed": false, "error": e})
                }
            };
            results.push(json!({"name": title, "result": result}));
        }
        report.insert(file, json!({"tests": results}));
    }
    let out = std::env::var_os("SOF_TEST_REPORT").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("sql-on-fhir/test_report.json"),
        PathBuf::from,
    );
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&Value::Object(report)).unwrap(),
    )
    .unwrap();
    eprintln!(
        "SQL on FHIR conformance: {passed} passed, {failed} failed ({expected_failed} expected) of {}; report: {}",
        passed + failed,
        out.display()
    );
    assert!(passed + failed > 0, "the suite has no cases");
    assert!(
        unexpected.is_empty(),
        "{} unexpected results:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}
