//! `run_views` end to end: NDJSON in, Parquet / NDJSON / CSV out.

use std::fs::File;

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, ListArray, StringArray};
use flatfhir_view::{Format, View, run_views};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const PATIENTS: &str = r#"{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1970-01-02","active":true,"identifier":[{"value":"MRN1"}],"name":[{"given":["Ann","B"]}],"multipleBirthInteger":2}
{"resourceType":"Patient","id":"p2","gender":"male","active":false,"name":[{"given":["Carl"]}],"multipleBirthInteger":1}
"#;

fn view() -> View {
    View::from_json_str(
        r#"{"name": "pt", "resource": "Patient", "select": [{"column": [
            {"name": "id", "path": "getResourceKey()"},
            {"name": "mrn", "path": "identifier[0].value", "type": "string"},
            {"name": "active", "path": "active"},
            {"name": "births", "path": "multipleBirth.ofType(integer)"},
            {"name": "ratio", "path": "multipleBirth.ofType(integer) / 2"},
            {"name": "given", "path": "name.given", "collection": true}
        ]}]}"#,
        "fallback",
    )
    .unwrap()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Patient.ndjson");
    std::fs::write(&input, PATIENTS).unwrap();
    (dir, input)
}

#[test]
fn parquet_output_has_inferred_types_and_lists() {
    let (dir, input) = setup();
    let out = dir.path().join("out");
    let report = run_views(&[input], &[view()], &out, Format::Parquet).unwrap();
    assert_eq!(report.views[0].rows, 2);
    assert_eq!(report.views[0].resources, 2);
    let path = out.join("pt.parquet");
    assert_eq!(report.views[0].path, path);
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let b = &batches[0];
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "mrn", "active", "births", "ratio", "given"]);
    let id = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(id.value(1), "p2");
    let mrn = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    assert!(mrn.is_null(1));
    let active = b.column(2).as_any().downcast_ref::<BooleanArray>().unwrap();
    assert!(active.value(0) && !active.value(1));
    let births = b.column(3).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(births.value(0), 2);
    let ratio = b.column(4).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(ratio.value(1), 0.5);
    let given = b.column(5).as_any().downcast_ref::<ListArray>().unwrap();
    let first = given.value(0);
    let first = first.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!((first.value(0), first.value(1)), ("Ann", "B"));
}

#[test]
fn ndjson_and_csv_outputs() {
    let (dir, input) = setup();
    let out = dir.path().join("out");
    run_views(
        std::slice::from_ref(&input),
        &[view()],
        &out,
        Format::Ndjson,
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("pt.ndjson")).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"id":"p1","mrn":"MRN1","active":true,"births":2,"ratio":1,"given":["Ann","B"]}"#
    );
    run_views(&[input], &[view()], &out, Format::Csv).unwrap();
    let text = std::fs::read_to_string(out.join("pt.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,mrn,active,births,ratio,given");
    assert_eq!(lines[2], r#"p2,,false,1,0.5,"[""Carl""]""#);
}

#[test]
fn bad_json_line_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Patient.ndjson");
    std::fs::write(
        &input,
        "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Patient\",\n",
    )
    .unwrap();
    let err = run_views(&[input], &[view()], &dir.path().join("o"), Format::Ndjson).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Patient.ndjson:2"), "{msg}");
    assert!(!dir.path().join("o/pt.ndjson").exists());
}

#[test]
fn lines_over_the_cap_are_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Patient.ndjson");
    let long = format!(
        "{{\"resourceType\":\"Patient\",\"id\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    // One line over the cap inside a chunk, one longer than any chunk (skipped by the reader).
    for (line, text) in [
        (
            2,
            format!(
                "{{\"resourceType\":\"Patient\",\"id\":\"a\"}}\n{}\n",
                "y".repeat(80)
            ),
        ),
        (
            2,
            format!("{{\"resourceType\":\"Patient\",\"id\":\"a\"}}\n{long}\n"),
        ),
    ] {
        std::fs::write(&input, text).unwrap();
        let read = flatfhir_core::ReadOptions::default().max_line_bytes(64);
        let err = flatfhir_view::run_views_with(
            std::slice::from_ref(&input),
            &[view()],
            &dir.path().join("o"),
            &flatfhir_view::RunOptions::default()
                .format(Format::Ndjson)
                .read(read.clone()),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("Patient.ndjson:{line}")), "{msg}");
        assert!(msg.contains("--max-line-bytes"), "{msg}");
        assert!(!dir.path().join("o/pt.ndjson").exists());
    }
}

#[test]
fn complex_values_survive_member_skipping() {
    // `code` is output whole, `display` is named by no path: the object must still be complete,
    // and comparing objects must see whole objects.
    let view = View::from_json_str(
        r#"{"resource": "Observation", "select": [{"column": [
            {"name": "code", "path": "code"},
            {"name": "same", "path": "code = code"},
            {"name": "n", "path": "code.coding.count()"}]}]}"#,
        "v",
    )
    .unwrap();
    let line = r#"{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"s","code":"c","display":"D"}],"text":"T"}}"#;
    let mut got = Vec::new();
    let matched = view
        .rows_for_line(line, &|| "line 1".into(), &mut |rows| {
            got.extend(
                rows.iter()
                    .map(|r| r.iter().map(|c| c.to_json()).collect::<Vec<_>>()),
            );
        })
        .unwrap();
    assert!(matched);
    assert_eq!(
        got,
        vec![vec![
            serde_json::json!({"coding":[{"system":"s","code":"c","display":"D"}],"text":"T"}),
            serde_json::json!(true),
            serde_json::json!(1)
        ]]
    );
    let other = r#"{"resourceType":"Patient","id":"p"}"#;
    assert!(
        !view
            .rows_for_line(other, &|| "line 2".into(), &mut |_| {})
            .unwrap()
    );
}

/// Decimals are exact and keep their precision to the text outputs: `0.1 + 0.2` is `0.3`
/// (not `0.30000000000000004`), `1.50` from the resource stays `1.50`.
#[test]
fn decimals_keep_their_precision_in_text_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Observation.ndjson");
    std::fs::write(
        &input,
        r#"{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50,"unit":"mg"},"_status":{"extension":[{"url":"u","valueString":"x"}]},"status":"final"}
"#,
    )
    .unwrap();
    let view = View::from_json_str(
        r#"{"name": "obs", "resource": "Observation", "select": [{"column": [
            {"name": "sum", "path": "0.1 + 0.2"},
            {"name": "eq", "path": "0.1 + 0.2 = 0.3"},
            {"name": "value", "path": "value.ofType(Quantity).value"},
            {"name": "diff", "path": "value.ofType(Quantity).value - 1.2"},
            {"name": "ext", "path": "status.extension('u').value.ofType(string)"}
        ]}]}"#,
        "obs",
    )
    .unwrap();
    let out = dir.path().join("out");
    run_views(
        std::slice::from_ref(&input),
        std::slice::from_ref(&view),
        &out,
        Format::Ndjson,
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("obs.ndjson")).unwrap();
    assert_eq!(
        text.trim_end(),
        r#"{"sum":0.3,"eq":true,"value":1.50,"diff":0.30,"ext":"x"}"#
    );
    run_views(&[input], &[view], &out, Format::Csv).unwrap();
    let text = std::fs::read_to_string(out.join("obs.csv")).unwrap();
    assert_eq!(text.lines().nth(1), Some("0.3,true,1.50,0.30,x"));
}

/// A set stop flag stops the run before any chunk and leaves no output; an unset one changes
/// nothing; the flag belongs to the call (a plain run after it works).
#[test]
fn a_cancelled_run_stops_and_writes_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let (dir, input) = setup();
    let out = dir.path().join("out");
    let (w, r) = (
        flatfhir_core::WriteOptions::default(),
        flatfhir_core::ReadOptions::default(),
    );
    let go = |flag: bool| {
        flatfhir_view::run_views_with(
            std::slice::from_ref(&input),
            &[view()],
            &out,
            &flatfhir_view::RunOptions::default()
                .write(w.clone())
                .read(r.clone())
                .cancel(Some(Arc::new(AtomicBool::new(flag)))),
        )
    };
    assert!(matches!(go(true), Err(flatfhir_view::Error::Cancelled)));
    assert!(!out.join("pt.parquet").exists());
    assert_eq!(go(false).unwrap().views[0].rows, 2);
    // The flag belongs to the cancelled call: a plain run on this thread works.
    std::fs::remove_dir_all(&out).unwrap();
    assert_eq!(
        run_views(&[input], &[view()], &out, Format::Parquet)
            .unwrap()
            .views[0]
            .rows,
        2
    );
}

/// A list item that has only an extension (`given: [null, "B"]` with `_given`) keeps its place
/// as a null in Parquet, as NDJSON writes it; it was dropped from the Parquet list, which then
/// held `["B"]` and no longer lined up with the resource.
#[test]
fn a_list_item_without_a_value_stays_a_null_in_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Patient.ndjson");
    std::fs::write(
        &input,
        r#"{"resourceType":"Patient","id":"p1","name":[{"given":[null,"B"],"_given":[{"extension":[{"url":"u","valueString":"x"}]},null]}]}
"#,
    )
    .unwrap();
    let view = View::from_json_str(
        r#"{"name": "pt", "resource": "Patient", "select": [{"column": [
            {"name": "given", "path": "name.given", "collection": true}
        ]}]}"#,
        "pt",
    )
    .unwrap();
    let out = dir.path().join("out");
    run_views(
        std::slice::from_ref(&input),
        std::slice::from_ref(&view),
        &out,
        Format::Ndjson,
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("pt.ndjson")).unwrap();
    assert_eq!(text.trim_end(), r#"{"given":[null,"B"]}"#);
    run_views(&[input], &[view], &out, Format::Parquet).unwrap();
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(File::open(out.join("pt.parquet")).unwrap())
            .unwrap()
            .build()
            .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let given = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    let items = given.value(0);
    let items = items.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.is_null(0));
    assert_eq!(items.value(1), "B");
}

/// An error of reading the input keeps its cause: it is core's error (naming the file) with
/// its I/O source, not a string of it (the cause was lost when the view runner turned core
/// errors into text).
#[test]
fn a_read_error_keeps_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Patient.ndjson.gz");
    // Gzip magic and header, then a body that is not deflate data.
    std::fs::write(
        &input,
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage, not deflate",
    )
    .unwrap();
    let out = dir.path().join("out");
    let err = run_views(&[input], &[view()], &out, Format::Parquet).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Patient.ndjson.gz"), "{text}");
    assert!(
        matches!(
            err,
            flatfhir_view::Error::Core(flatfhir_core::Error::Read { .. })
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("the I/O error is kept as the source");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
    assert!(!out.join("pt.parquet").exists());
}

/// A line over the limit is named by file and line, with the reason, as before.
#[test]
fn an_overlong_line_names_file_line_and_limit() {
    let (dir, input) = setup();
    let out = dir.path().join("out");
    let read = flatfhir_core::ReadOptions::default().max_line_bytes(100);
    let err = flatfhir_view::run_views_with(
        std::slice::from_ref(&input),
        &[view()],
        &out,
        &flatfhir_view::RunOptions::default()
            .format(Format::Csv)
            .read(read.clone()),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:1: line is {} bytes, longer than the limit of 100 (--max-line-bytes)",
            input.display(),
            PATIENTS.lines().next().unwrap().len()
        )
    );
}

/// Views run inside a one-thread pool (the CLI's `--threads 1` installs one): the pipeline
/// then hands out chunks on that pool's only worker, which must run the jobs it waits for.
/// When it only blocked, this run never ended.
#[test]
fn a_view_runs_inside_a_one_thread_pool() {
    let (dir, input) = setup();
    let out = dir.path().join("out");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let r = pool
        .install(|| run_views(&[input], &[view()], &out, Format::Parquet))
        .unwrap();
    assert_eq!(r.views[0].rows, 2);
}
