//! Record batches as they arrive in Produce and sit in segments: the batch iterator,
//! CRC and client-batch validation, and record decoding (compressed too). Must never
//! panic, whatever the bytes. The checks are the engine's regression test's own.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../../engine/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_record_batches(data));
