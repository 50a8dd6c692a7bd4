//! `read_group` (the table handed over as record batches, for the Python package) gives
//! exactly what `convert_group` writes, and `Progress::cancelled` stops both the pass and
//! the write without leaving output behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use flatfhir_core::{
    ConvertOptions, Error, NoProgress, Progress, ReadOptions, convert_group, plan, read_group,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn read_all(group: &flatfhir_core::TypeGroup, opts: &ConvertOptions) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut schema = None;
    let report = read_group(
        group,
        opts,
        &NoProgress,
        &mut |s| {
            schema = Some(s.clone());
            Ok(())
        },
        &mut |b| {
            out.push(b);
            Ok(())
        },
    )
    .unwrap();
    let schema = schema.expect("the schema comes before the batches");
    assert!(out.iter().all(|b| b.schema() == schema));
    assert_eq!(
        report.rows,
        out.iter().map(|b| b.num_rows() as u64).sum::<u64>()
    );
    out
}

#[test]
fn batches_equal_the_converted_parquet() {
    for dir in ["basic", "multi", "decimals", "hygiene"] {
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions::default().out_dir(out.path());
        let p = plan(&[fixtures(dir)], &ReadOptions::default()).unwrap();
        assert!(!p.groups.is_empty());
        for g in &p.groups {
            let report = convert_group(g, &opts, &NoProgress).unwrap();
            let file = std::fs::File::open(report.output.unwrap()).unwrap();
            let written: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let got = read_all(g, &opts);
            // Small fixtures: the file is one batch; ours is one per chunk (file).
            assert_eq!(written.len(), 1, "{dir}/{}", g.resource_type);
            let want = &written[0];
            let mut row = 0;
            for b in &got {
                assert_eq!(b.schema().fields(), want.schema().fields(), "{dir}");
                let part = want.slice(row, b.num_rows());
                assert_eq!(b.columns(), part.columns(), "{dir}/{}", g.resource_type);
                row += b.num_rows();
            }
            assert_eq!(row, want.num_rows(), "{dir}/{}", g.resource_type);
        }
    }
}

#[test]
fn tiny_chunks_and_spilling_give_the_same_rows() {
    let p = plan(&[fixtures("basic")], &ReadOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let base = ConvertOptions::default().out_dir(out.path());
    let small = base
        .clone()
        .memory_budget(0)
        .threads(2)
        .read(ReadOptions::default().chunk_bytes(64));
    for g in &p.groups {
        let whole = read_all(g, &base);
        let pieces = read_all(g, &small);
        assert!(pieces.len() > 1, "64-byte chunks make several batches");
        assert_eq!(
            pieces.iter().map(RecordBatch::num_rows).sum::<usize>(),
            whole[0].num_rows()
        );
        let mut row = 0;
        for b in &pieces {
            assert_eq!(b.schema(), whole[0].schema());
            assert_eq!(b, &whole[0].slice(row, b.num_rows()));
            row += b.num_rows();
        }
    }
}

/// Cancels as soon as the first input bytes are read.
struct CancelAtOnce(AtomicBool);

impl Progress for CancelAtOnce {
    fn advance(&self, _: u64) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[test]
fn cancelled_work_stops_with_nothing_written() {
    let p = plan(&[fixtures("basic")], &ReadOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = ConvertOptions::default().out_dir(out.path());
    let g = &p.groups[0];
    let (mut schema, mut batches) = (false, 0);
    let r = read_group(
        g,
        &opts,
        &CancelAtOnce(AtomicBool::new(false)),
        &mut |_| {
            schema = true;
            Ok(())
        },
        &mut |_| {
            batches += 1;
            Ok(())
        },
    );
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(
        !schema && batches == 0,
        "the pass stopped before the schema was known"
    );
    let r = convert_group(g, &opts, &CancelAtOnce(AtomicBool::new(false)));
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn an_error_from_the_sink_stops_the_read() {
    let p = plan(&[fixtures("basic")], &ReadOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = ConvertOptions::default().out_dir(out.path());
    let r = read_group(
        &p.groups[0],
        &opts,
        &NoProgress,
        &mut |_| Ok(()),
        &mut |_| Err(Error::Options("enough".into())),
    );
    assert!(matches!(r, Err(Error::Options(m)) if m == "enough"));
}
