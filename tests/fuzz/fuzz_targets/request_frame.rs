//! A request frame (after the 4-byte length) as a connection reads it: header, the body
//! of the API and version it names, and for Produce the record batch checks. Must never
//! panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringmq_server::decode_request_frame(bytes::Bytes::copy_from_slice(data));
});
