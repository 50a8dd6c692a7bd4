//! Integration tests of flatfhir-view.

mod conformance;
mod fhirpath_suite;
mod prune;
mod run;
