//! The NDJSON line reader (plain and gzip, any chunk size) hands back exactly the file's
//! non-blank lines with their line numbers, and overlong lines only as numbered skips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flatfhir_fuzz::check_reader(data);
});
