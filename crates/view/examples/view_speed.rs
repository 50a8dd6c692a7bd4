//! Measures view throughput: a 10-column Observation view over an NDJSON file, in memory
//! (no disk I/O, no writer), parsing + evaluating + building Arrow batches, on all cores.
//!
//! `cargo run --release -p flatfhir-view --example view_speed -- ../shared/fixtures/bds-r4/Observation.ndjson`

use std::time::Instant;

use flatfhir_view::table::{BatchBuilder, Kinds, ValueType, declared_type, schema};
use flatfhir_view::{View, json};
use rayon::prelude::*;

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
    let reps = 10;
    for threads in [1, rayon::current_num_threads()] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let t = Instant::now();
            for _ in 0..reps {
                let n: usize = chunks
                    .par_iter()
                    .map(|c| c.iter().map(|l| json::parse(l).map(|_| 1).unwrap_or(0)).sum::<usize>())
                    .sum();
                assert_eq!(n, lines.len());
            }
            let parse = bytes * reps as f64 / t.elapsed().as_secs_f64() / 1e6;
            let t = Instant::now();
            let mut total_rows = 0;
            for _ in 0..reps {
                total_rows += chunks
                    .par_iter()
                    .map(|c| {
                        let mut b = BatchBuilder::new(schema.clone(), &types, &collection);
                        for l in *c {
                            let r = json::parse(l).unwrap();
                            let mut rows = Vec::new();
                            view.rows(&r, &mut rows).unwrap();
                            for row in &rows {
                                b.append(row);
                            }
                        }
                        b.finish().unwrap().num_rows()
                    })
                    .sum::<usize>();
            }
            let full = bytes * reps as f64 / t.elapsed().as_secs_f64() / 1e6;
            println!(
                "{threads} thread(s): parse {parse:.0} MB/s; parse + 10-column view + Arrow batches {full:.0} MB/s ({} rows, {:.1} MB input)",
                total_rows / reps,
                bytes / 1e6
            );
        });
    }
}
