//! The FHIRPath lexer and parser (through a one-column view) never panic, and a compiled
//! expression evaluates on a sample resource without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    flatfhir_fuzz::check_fhirpath(expr);
});
