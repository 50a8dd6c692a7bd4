//! A whole conversion with `--on-error skip`: every non-blank line is either a row or
//! named (file and line) in `_rejected/`, and the Parquet file reads back to the values of
//! the accepted lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flatfhir_fuzz::check_convert(data);
});
