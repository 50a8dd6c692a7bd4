//! Integration tests of the `flatfhir` binary: one test binary, one module per subcommand.

mod fetch;
