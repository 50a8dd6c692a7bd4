//! Criterion benchmarks of the hot paths, per resource type, in bytes of input per second:
//! line splitting, parsing (validating walk), the schema pass, flattening into column
//! builders, and Parquet encoding. Input: `../shared/fixtures/bds-r4` when present (the real
//! sample export), else the project's own `fixtures/basic`.
//!
//! Run: `cargo bench -p flatfhir-benches` (add `-- Observation` to filter).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flatfhir_core::internal::{LineReader, TableWriter};
use flatfhir_core::{ReadOptions, WriteOptions, hot};

fn inputs() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/fixtures/bds-r4");
    let dir = if shared.is_dir() {
        shared
    } else {
        eprintln!("../shared/fixtures/bds-r4 is absent: benchmarking fixtures/basic instead");
        root.join("fixtures/basic")
    };
    let wanted = [
        "Observation",
        "ExplanationOfBenefit",
        "Patient",
        "Claim",
        "Encounter",
    ];
    wanted
        .iter()
        .map(|t| (t.to_string(), dir.join(format!("{t}.ndjson"))))
        .filter(|(_, p)| p.exists())
        .collect()
}

fn bench(c: &mut Criterion) {
    for (rt, path) in inputs() {
        let data = std::fs::read(&path).unwrap();
        let text = std::str::from_utf8(&data).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut g = c.benchmark_group(rt.clone());
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(10);

        g.bench_function(BenchmarkId::new("split_lines", &rt), |b| {
            b.iter(|| {
                let mut r = LineReader::open(&path, &ReadOptions::default()).unwrap();
                let mut n = 0;
                while let Some(chunk) = r.next_chunk().unwrap() {
                    n += chunk.lines().count();
                }
                n
            })
        });
        g.bench_function(BenchmarkId::new("parse", &rt), |b| {
            b.iter(|| hot::parse(&lines))
        });
        g.bench_function(BenchmarkId::new("schema_pass", &rt), |b| {
            b.iter(|| hot::schema(&lines, &rt))
        });
        let prepared = hot::schema(&lines, &rt);
        g.bench_function(BenchmarkId::new("flatten", &rt), |b| {
            b.iter(|| hot::flatten(&prepared, &lines))
        });
        let batch = hot::flatten(&prepared, &lines);
        let dir = tempfile::tempdir().unwrap();
        g.bench_function(BenchmarkId::new("parquet_encode", &rt), |b| {
            b.iter(|| {
                let out = dir.path().join(format!("{rt}.parquet"));
                let mut w = TableWriter::create(
                    &out,
                    Arc::clone(batch.schema_ref()),
                    &WriteOptions::default(),
                    &[],
                )
                .unwrap();
                w.write(&batch, data.len() as u64).unwrap();
                w.finish().unwrap().bytes
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
