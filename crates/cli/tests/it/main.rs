//! Integration tests of the `flatfhir` binary: one test binary, one module per subcommand.

mod support;

mod bench;
mod bundles;
mod cli_docs;
mod cloud;
mod convert;
mod convert_view;
mod dates;
mod export;
mod fetch;
mod messages;
mod output;
mod schema;
mod search;
mod secrets;
