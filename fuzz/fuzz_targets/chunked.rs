//! The chunked de-framer of file downloads: the reference's reading of any wire, and any
//! body chunked in any way read back whole, whatever the reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flatfhir_fuzz::check_chunked(data);
});
