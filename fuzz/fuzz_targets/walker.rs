//! The flattener's JSON walker agrees with serde_json: it accepts a line exactly when
//! serde_json reads it as an object, and reports the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    flatfhir_fuzz::check_walker(line);
});
