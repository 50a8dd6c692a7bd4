//! Evaluate one FHIRPath expression against one FHIR JSON resource and print the result, for
//! checking a single case by hand:
//! `cargo run -p flatfhir-view --example fhirpath -- 'name.given.first()' patient.json`
//! (without a file the input is `{"resourceType":"Parameters"}`).

use flatfhir_view::fhirpath::Expression;
use flatfhir_view::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(expr) = args.next() else {
        eprintln!("usage: fhirpath EXPRESSION [RESOURCE.json]");
        std::process::exit(64);
    };
    let text = match args.next() {
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| {
            eprintln!("error: {path}: {e}");
            std::process::exit(1)
        }),
        None => r#"{"resourceType":"Parameters"}"#.to_owned(),
    };
    let resource = json::parse(&text).unwrap_or_else(|e| {
        eprintln!("error: not valid JSON: {e}");
        std::process::exit(1)
    });
    let parsed = Expression::parse(&expr).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    match parsed.evaluate(&resource) {
        Ok(values) => {
            for v in values {
                println!("{}: {}", v.type_name(), v.text());
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
