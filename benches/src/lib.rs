//! Holds the criterion benchmarks in `benches/`; run them with `cargo bench -p flatfhir-benches`.
