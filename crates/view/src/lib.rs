//! SQL on FHIR ViewDefinitions with FHIRPath evaluated directly on FHIR JSON.
//!
//! A [`View`] is compiled once (every FHIRPath parsed into an AST, constants resolved, the
//! view validated, its paths gathered into a trie), then run on each resource, which core's
//! validating walker (the parser `convert` uses) turns into a borrowed [`json`] tree holding
//! only the members the view's paths read. No typed object model is involved: choice types are found on the raw JSON
//! (`value.ofType(Quantity)` reads `valueQuantity`), and a compact FHIR R4 model (the `model`
//! module, internal) types the nodes an expression reaches only where its answer depends on
//! types. Decimals are exact, dates keep their precision; [`fhirpath::Expression`] evaluates a
//! single FHIRPath with typed results.
//!
//! ```
//! use flatfhir_view::{View, json};
//!
//! let view = View::from_json_str(r#"{
//!     "resource": "Patient",
//!     "select": [{"column": [
//!         {"name": "id", "path": "id"},
//!         {"name": "family", "path": "name.where(use = 'official').family.first()"}
//!     ]}]
//! }"#, "patients").unwrap();
//! let line = r#"{"resourceType":"Patient","id":"p1","name":[{"use":"official","family":"Smith"}]}"#;
//! let resource = json::parse(line).unwrap();
//! let mut rows = Vec::new();
//! view.rows(&resource, &mut rows).unwrap();
//! assert_eq!(rows.len(), 1);
//! assert_eq!(rows[0][1].to_json(), serde_json::json!("Smith"));
//! ```

mod ast;
mod error;
mod eval;
pub mod fhirpath;
mod functions;
pub mod json;
mod lexer;
mod model;
mod parser;
mod prune;
mod quantity;
mod rows;
mod run;
mod stream;
mod strict;
/// The runner's Arrow batch building (column types, batches from rows), public only for the
/// `view_speed` example that times it. Not part of the API: no semver promise.
#[doc(hidden)]
pub mod table;
mod temporal;
mod view;

pub use error::{Error, Result, SyntaxError};
pub use prune::PathKind;
pub use rows::{Cell, Row, Scalar};
pub use run::{
    Format, Report, RunOptions, ViewReport, output_file_name, run_views, run_views_with,
};
pub use view::{ColumnDef, View};
