//! What the `record_batches` fuzz target does to its input, shared with the regression
//! test that replays its past crashes (`engine/tests/fuzz_regressions.rs`; the target
//! includes this file by path): batch iteration, client-batch and CRC validation, and
//! record decoding, compressed included. Must never panic, whatever the bytes.

use ringmq_engine::batch::{
    BatchIter, record_timestamps, records, validate_batch, validate_client_batch,
};

pub fn check_record_batches(data: &[u8]) {
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
}
