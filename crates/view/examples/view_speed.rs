//! Measures view throughput: a 10-column Observation view over an NDJSON file, in memory
//! (no disk I/O, no writer), parsing + evaluating + building Arrow batches, on all cores.
//!
//! `cargo run --release -p flatfhir-view --example view_speed -- ../shared/fixtures/bds-r4/Observation.ndjson`

use std::time::Instant;

use flatfhir_view::table::{BatchBuilder, Kinds, ValueType, declared_type, schema};
use flatfhir_view::{View, json};
use rayon::prelude::*;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VIEW: &str = r#"{"name": "obs", "resource": "Observation", "select": [{"column": [
    {"name": "id", "path": "id"},
    {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
    {"name": "encounter", "path": "encounter.getReferenceKey(Encounter)"},
    {"name": "status", "path": "status"},
    {"name": "category", "path": "category.coding.code.first()"},
    {"name": "code", "path": "code.coding.first().code"},
    {"name": "display", "path": "code.text"},
    {"name": "effective", "path": "effective.ofType(dateTime)"},
    {"name": "value", "path": "value.ofType(Quantity).value"},
    {"name": "unit", "path": "value.ofType(Quantity).unit"}
]}]}"#;

/// CPU seconds used by this process so far (user + system, from /proc; 0 elsewhere). The
/// machine may be shared, so throughput per CPU-second is the stable number.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields after the command: state(skipped, not numeric) ... utime is field 14 overall.
    f.get(10).copied().unwrap_or(0.0) / 100.0 + f.get(11).copied().unwrap_or(0.0) / 100.0
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/fixtures/bds-r4/Observation.ndjson".into());
    let text = std::fs::read_to_string(&path).expect("read input");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let view = View::from_json_str(VIEW, "obs").unwrap();
    let types: Vec<ValueType> = view
        .columns()
        .iter()
        .map(|c| declared_type(c).unwrap_or(ValueType::Utf8))
        .collect();
    let mut kinds = vec![Kinds::default(); types.len()];
    // Infer once (as the CLI's schema pass would).
    for l in &lines {
        let r = json::parse(l).unwrap();
        let mut rows = Vec::new();
        view.rows(&r, &mut rows).unwrap();
        for row in &rows {
            for (k, c) in kinds.iter_mut().zip(row) {
                k.observe_cell(c);
            }
        }
    }
    let types: Vec<ValueType> = kinds.iter().map(|k| k.value_type()).collect();
    let schema = schema(&view, &types);
    let collection = vec![false; types.len()];
    let chunks: Vec<&[&str]> = lines.chunks(2048).collect();
    let bytes = text.len() as f64;
    let reps = 20;
    // Phase split on one thread, by CPU time.
    for phase in 0..3 {
        let c = cpu_secs();
        let mut n = 0usize;
        for _ in 0..reps {
            let mut b = BatchBuilder::new(schema.clone(), &types, &collection);
            for l in &lines {
                if phase == 0 {
                    n += json::parse(l).map_or(0, |_| 1);
                    continue;
                }
                view.rows_for_line(l, &String::new, &mut |rows| {
                    n += rows.len();
                    if phase == 2 {
                        for row in rows {
                            b.append(row);
                        }
                    }
                })
                .unwrap();
            }
            n += b.finish().unwrap().num_rows();
        }
        let cpu = cpu_secs() - c;
        println!(
            "phase {phase} (0 full parse, 1 view parse + rows, 2 + Arrow batch): {:.0} MB per CPU-second ({n})",
            bytes * reps as f64 / cpu.max(1e-9) / 1e6
        );
    }
    for threads in [1, rayon::current_num_threads()] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let c0 = cpu_secs();
            let t = Instant::now();
            for _ in 0..reps {
                let n: usize = chunks
                    .par_iter()
                    .map(|c| c.iter().map(|l| json::parse(l).map(|_| 1).unwrap_or(0)).sum::<usize>())
                    .sum();
                assert_eq!(n, lines.len());
            }
            let parse = bytes * reps as f64 / t.elapsed().as_secs_f64() / 1e6;
            let _ = c0;
            let c1 = cpu_secs();
            let t = Instant::now();
            let mut total_rows = 0;
            for _ in 0..reps {
                total_rows += chunks
                    .par_iter()
                    .map(|c| {
                        let mut b = BatchBuilder::new(schema.clone(), &types, &collection);
                        for l in *c {
                            view.rows_for_line(l, &String::new, &mut |rows| {
                                for row in rows {
                                    b.append(row);
                                }
                            })
                            .unwrap();
                        }
                        b.finish().unwrap().num_rows()
                    })
                    .sum::<usize>();
            }
            let full = bytes * reps as f64 / t.elapsed().as_secs_f64() / 1e6;
            let cpu = cpu_secs() - c1;
            let per_cpu = bytes * reps as f64 / cpu.max(1e-9) / 1e6;
            println!(
                "{threads} thread(s): full JSON parse {parse:.0} MB/s; view parse + 10-column view + Arrow batches {full:.0} MB/s wall, {per_cpu:.0} MB per CPU-second ({} rows, {:.1} MB input)",
                total_rows / reps,
                bytes / 1e6
            );
        });
    }
}
