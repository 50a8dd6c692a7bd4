//! The OperationOutcome readers (error bodies and the export's error files): no panic, every
//! issue's text shown, nothing dropped silently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flatfhir_fuzz::check_operation_outcome(data);
});
