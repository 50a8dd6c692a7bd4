//! Bundles converted while they are unpacked (`convert_bundles`) give what the
//! unpacked-files route (`plan_with` + `convert_group`) gives: the same tables, refused lines,
//! `_rejected/` files, messages and per-type failures, whatever the chunk size, memory
//! budget or thread count; and a cancelled run leaves no table behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use flatfhir_core::{
    BundleMode, BundleOptions, ConvertOptions, Duplicates, Error, NoProgress, OnError, Progress,
    ReadOptions, TypeReport, convert_bundles, convert_group, plan_packed, plan_with,
};
use serde_json::json;

/// One type's outcome, as compared between the routes.
#[derive(Debug, PartialEq)]
enum Outcome {
    Table {
        /// The whole table as one batch (`None`: no rows, nothing written).
        table: Option<RecordBatch>,
        rows: u64,
        rejected: u64,
        /// `_rejected/<Type>.ndjson` and `.errors.ndjson`, when written.
        rejected_files: Option<(String, String)>,
        /// The files the report names.
        files: Vec<PathBuf>,
        input_bytes: u64,
    },
    Failed(String),
}

fn outcome(r: Result<TypeReport, Error>) -> Outcome {
    let r = match r {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let table = r.output.as_ref().map(|p| {
        let f = std::fs::File::open(p).unwrap();
        let mut batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .with_batch_size(1 << 30)
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
        assert_eq!(batches.len(), 1);
        batches.pop().unwrap()
    });
    let rejected_files = r.rejected_file.as_ref().map(|p| {
        let errors = p.with_file_name(format!("{}.errors.ndjson", r.resource_type));
        (
            std::fs::read_to_string(p).unwrap(),
            std::fs::read_to_string(errors).unwrap(),
        )
    });
    Outcome::Table {
        table,
        rows: r.rows,
        rejected: r.rejected,
        rejected_files,
        files: r.files,
        input_bytes: r.input_bytes,
    }
}

type Outcomes = Vec<(String, Outcome)>;

/// The unpacked-files route, as `flatfhir convert` took it for every Bundle input before.
fn by_files(inputs: &[PathBuf], bundles: &BundleOptions, opts: &ConvertOptions) -> Outcomes {
    let plan = plan_with(inputs, &opts.read, bundles).unwrap();
    plan.groups
        .iter()
        .map(|g| {
            (
                g.resource_type.clone(),
                outcome(convert_group(g, opts, &NoProgress)),
            )
        })
        .collect()
}

/// The streamed route.
fn streamed(inputs: &[PathBuf], bundles: &BundleOptions, opts: &ConvertOptions) -> Outcomes {
    let plan = plan_packed(inputs, &opts.read, bundles).unwrap();
    assert!(plan.groups.is_empty() && !plan.packed.is_empty());
    let mut got = Vec::new();
    let stats = std::cell::RefCell::new(None);
    let returned = convert_bundles(
        &plan.packed,
        bundles,
        opts,
        &NoProgress,
        |s| *stats.borrow_mut() = Some(s.clone()),
        |t, r| {
            // Told before the first report.
            assert!(stats.borrow().is_some());
            got.push((t.to_string(), outcome(r)));
        },
    )
    .unwrap();
    assert_eq!(stats.into_inner(), Some(returned));
    got
}

fn options(out: &Path, on_error: OnError) -> ConvertOptions {
    ConvertOptions::default()
        .out_dir(out.to_path_buf())
        .on_error(on_error)
}

/// Both routes into their own directories; asserts they agree and returns the outcomes.
fn agree(
    inputs: &[PathBuf],
    bundles: &BundleOptions,
    opts: &ConvertOptions,
    what: &str,
) -> Outcomes {
    let base = opts.out_dir.clone();
    let a = by_files(inputs, bundles, &opts.clone().out_dir(base.join("files")));
    let b = streamed(
        inputs,
        bundles,
        &opts.clone().out_dir(base.join("streamed")),
    );
    // The rejected-lines files name the output directory only through `rejected_file`,
    // which `outcome` reads, so the two directories do not show in the comparison.
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>(),
        "{what}: types"
    );
    for ((t, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{what}: {t}");
    }
    a
}

const PATIENTS: usize = 30;

/// A folder of pretty Bundles, one per patient, with three types each and a few columns
/// that appear only late (so the union schema grows across chunks).
fn folder(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in 0..PATIENTS {
        let mut entries = vec![json!({
            "fullUrl": format!("urn:uuid:p{p}"),
            "resource": {"resourceType": "Patient", "id": format!("p{p}"), "gender": if p % 2 == 0 {"female"} else {"male"},
                         "name": [{"family": format!("F{p}"), "given": ["A", "B"]}]},
        })];
        for o in 0..(p % 7 + 1) {
            let mut obs = json!({"resourceType": "Observation", "id": format!("o{p}-{o}"),
                "status": "final", "subject": {"reference": format!("urn:uuid:p{p}")},
                "valueQuantity": {"value": o as f64 * 1.5 + 0.25, "unit": "mg"}});
            if p > 20 {
                obs["note"] = json!([{"text": format!("late {p}")}]);
            }
            entries.push(json!({"fullUrl": format!("urn:uuid:o{p}-{o}"), "resource": obs}));
        }
        if p % 3 == 0 {
            entries.push(
                json!({"resource": {"resourceType": "Encounter", "id": format!("e{p}"),
                "subject": {"reference": format!("urn:uuid:p{p}")}, "class": {"code": "AMB"}}}),
            );
        }
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let f = dir.join(format!("patient{p}.json"));
        std::fs::write(&f, serde_json::to_string_pretty(&b).unwrap()).unwrap();
        files.push(f);
    }
    files
}

/// A temporary directory holding [`folder`] in `in/`: the directory, `in/` and its files.
fn bundle_folder() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let files = folder(&input);
    (dir, input, files)
}

#[test]
fn streamed_tables_equal_the_unpacked_files_route() {
    let (dir, input, _) = bundle_folder();
    let inputs = [input];
    let bundles = BundleOptions::default();
    // Default chunks; tiny chunks (every few lines a chunk, types interleaved in flight) with
    // a budget so small that the stashes spill; one thread and several.
    for (chunk, budget, threads) in [
        (ReadOptions::default().chunk_bytes, 64 << 20, 0),
        (700, 2048, 2),
        (700, 2048, 1),
        (3000, 0, 3),
    ] {
        let what = format!("chunk {chunk}, budget {budget}, threads {threads}");
        let out = dir.path().join(format!("out-{chunk}-{budget}-{threads}"));
        let mut opts = options(&out, OnError::Fail).threads(threads);
        opts.read = opts.read.clone().chunk_bytes(chunk);
        opts.memory_budget = budget;
        let got = agree(&inputs, &bundles, &opts, &what);
        let rows: Vec<(&str, u64)> = got
            .iter()
            .map(|(t, o)| match o {
                Outcome::Table { rows, .. } => (t.as_str(), *rows),
                Outcome::Failed(e) => panic!("{what}: {t}: {e}"),
            })
            .collect();
        let obs: u64 = (0..PATIENTS as u64).map(|p| p % 7 + 1).sum();
        assert_eq!(
            rows,
            [
                ("Encounter", PATIENTS.div_ceil(3) as u64),
                ("Observation", obs),
                ("Patient", PATIENTS as u64)
            ],
            "{what}"
        );
    }
}

#[test]
fn streamed_options_and_layouts_equal_the_unpacked_files_route() {
    let (dir, _, files) = bundle_folder();
    // The same Bundles gzip-compressed, and a second copy of each (duplicates).
    let gz = dir.path().join("gz");
    std::fs::create_dir_all(&gz).unwrap();
    for (k, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &bytes).unwrap();
        std::fs::write(gz.join(format!("b{k}.json.gz")), e.finish().unwrap()).unwrap();
        std::fs::write(gz.join(format!("c{k}.json")), &bytes).unwrap();
    }
    let mut opts = options(&dir.path().join("o1"), OnError::Fail);
    opts.read = opts.read.clone().chunk_bytes(2000);
    for (k, bundles) in [
        BundleOptions::default().resolve_references(true),
        BundleOptions::default().duplicates(Duplicates::First),
        BundleOptions::default()
            .duplicates(Duplicates::First)
            .resolve_references(true),
    ]
    .into_iter()
    .enumerate()
    {
        let got = agree(
            std::slice::from_ref(&gz),
            &bundles,
            &opts.clone().out_dir(dir.path().join(format!("o{k}"))),
            &format!("{bundles:?}"),
        );
        assert_eq!(got.len(), 3, "{bundles:?}");
    }
    // One Bundle per NDJSON line, unpacked (`unpack` mode).
    let lines: String = files
        .iter()
        .map(|f| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            serde_json::to_string(&v).unwrap() + "\n"
        })
        .collect();
    let nd = dir.path().join("bundles.ndjson");
    std::fs::write(&nd, lines).unwrap();
    agree(
        &[nd],
        &BundleOptions::default().mode(BundleMode::Unpack),
        &opts.clone().out_dir(dir.path().join("nd")),
        "NDJSON of Bundles",
    );
}

const BAD: &str = r#"{
  "resourceType": "Bundle",
  "type": "collection",
  "entry": [
    { "fullUrl": "urn:uuid:1", "resource": { "resourceType": "Patient", "id": "p1" } },
    { "fullUrl": "urn:uuid:2", "request": { "method": "GET" } },
    { "resource": { "id": "x" } },
    { "resource": { "resourceType": "Patient", "id": "p2", "active": tru } },
    { "resource": { "resourceType": "Observation", "id": "o1", "subject": { "reference": "urn:uuid:1" } } },
    { "resource": { "resourceType": "Condition", "id": "c1" } },
    { "resource": { "resourceType": "Patient", "id": "p3", "name": [ { "family": "X" }
"#;

/// Bad entries: with `fail`, each type with a bad line fails with the same message and the
/// others are written; with `skip`, the same lines are set aside with the same records. The
/// entries that could not become a resource are reported by the first type by name.
#[test]
fn streamed_bad_entries_fail_and_skip_as_the_unpacked_files_route() {
    let (dir, input, _) = bundle_folder();
    std::fs::write(input.join("zz-bad.json"), BAD).unwrap();
    let inputs = [input.clone()];
    let bundles = BundleOptions::default();
    let failed = agree(
        &inputs,
        &bundles,
        &options(&dir.path().join("fail"), OnError::Fail),
        "fail",
    );
    let status: Vec<(&str, bool)> = failed
        .iter()
        .map(|(t, o)| (t.as_str(), matches!(o, Outcome::Failed(_))))
        .collect();
    // Condition reports the unplaced entries (first by name); Patient has a bad resource.
    assert_eq!(
        status,
        [
            ("Condition", true),
            ("Encounter", false),
            ("Observation", false),
            ("Patient", true)
        ]
    );
    let Outcome::Failed(e) = &failed[0].1 else {
        unreachable!()
    };
    let bad = input.join("zz-bad.json").display().to_string();
    assert_eq!(e, &format!("{bad}:6: entry[1]: the entry has no resource"));
    let skipped = agree(
        &inputs,
        &bundles,
        &options(&dir.path().join("skip"), OnError::Skip),
        "skip",
    );
    let Outcome::Table {
        rejected,
        rejected_files: Some((lines, records)),
        ..
    } = &skipped[0].1
    else {
        panic!("{:?}", skipped[0]);
    };
    assert_eq!(*rejected, 3);
    assert_eq!(lines.lines().count(), 3);
    assert!(records.contains("entry[6]: not valid JSON: the Bundle ends inside this entry"));
}

/// A [`Progress`] that asks to stop after `after` reports of progress.
struct StopAfter {
    after: u64,
    seen: AtomicU64,
}

impl Progress for StopAfter {
    fn advance(&self, _: u64) {
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    fn cancelled(&self) -> bool {
        self.seen.load(Ordering::Relaxed) >= self.after
    }
}

#[test]
fn a_cancelled_stream_reports_nothing_and_leaves_no_table() {
    let (dir, input, _) = bundle_folder();
    let out = dir.path().join("out");
    let mut opts = options(&out, OnError::Fail);
    opts.read = opts.read.clone().chunk_bytes(500);
    let plan = plan_packed(&[input], &opts.read, &BundleOptions::default()).unwrap();
    let stop = StopAfter {
        after: 5,
        seen: AtomicU64::new(0),
    };
    let reported = std::cell::Cell::new(0u32);
    let r = convert_bundles(
        &plan.packed,
        &BundleOptions::default(),
        &opts,
        &stop,
        |_| reported.set(reported.get() + 1),
        |_, _| reported.set(reported.get() + 1),
    );
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(reported.get(), 0);
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// With NDJSON among the inputs nothing is left packed: the plan is `plan_with`'s.
#[test]
fn inputs_with_ndjson_are_not_left_packed() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    std::fs::write(
        dir.path().join("Patient.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"n\"}\n",
    )
    .unwrap();
    let plan = plan_packed(
        &[dir.path().to_path_buf()],
        &ReadOptions::default(),
        &BundleOptions::default(),
    )
    .unwrap();
    assert!(plan.packed.is_empty());
    assert_eq!(plan.groups.len(), 3);
    assert!(plan.bundles.is_some());
}
