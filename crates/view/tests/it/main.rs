//! Integration tests of flatfhir-view.

mod conformance;
mod run;
