//! Integration tests of the `flatfhir` binary: one test binary, one module per subcommand.

mod export;
mod fetch;
