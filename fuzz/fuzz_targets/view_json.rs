//! The view engine's borrowing JSON parser agrees with serde_json on accept/reject and on
//! values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    flatfhir_fuzz::check_view_json(text);
});
