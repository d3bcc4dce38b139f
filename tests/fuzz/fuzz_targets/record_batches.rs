//! Record batches as they arrive in Produce and sit in segments: the batch iterator,
//! CRC and client-batch validation, and record decoding (compressed too). Must never
//! panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_engine::batch::{BatchIter, record_timestamps, records, validate_batch, validate_client_batch};

fuzz_target!(|data: &[u8]| {
    for item in BatchIter::new(data) {
        let Ok((_, header, batch)) = item else { break };
        let _ = validate_client_batch(&header);
        // The checks run on any batch, valid CRC or not: a corrupt one must fail cleanly.
        let _ = validate_batch(batch);
        let _ = record_timestamps(&header, batch);
        if let Ok(it) = records(batch) {
            for r in it {
                if r.is_err() {
                    break;
                }
            }
        }
    }
});
