//! The Bulk Data completion manifest reader: no panic, no entry dropped, URLs resolved.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flatfhir_fuzz::check_manifest(data);
});
