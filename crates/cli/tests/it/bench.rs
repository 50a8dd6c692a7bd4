//! `flatfhir bench`: runs the pipeline and reports throughput, memory and stages.

use serde_json::Value;

use crate::support::{fixture, flatfhir};

#[test]
fn bench_reports_runs_medians_and_stages() {
    let assert = flatfhir()
        .args(["bench", "--quiet", "--json", "--repeat", "2"])
        .arg(fixture("basic"))
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    assert_eq!(v["runs"][0]["rows"], 7);
    assert!(v["median_mb_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["runs"][0]["stages"]["widen"].as_f64().unwrap() > 0.0);
    assert!(v["runs"][0]["output_bytes"].as_u64().unwrap() > 0);
    if cfg!(target_os = "linux") {
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
}
