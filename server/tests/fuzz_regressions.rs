//! Replays every input the `request_frame` fuzz target ever crashed on
//! (`tests/fuzz/regressions/request_frame/`) through the request decoder, in the plain
//! test run: each must decode or be refused, never panic or abort.

use std::path::Path;

#[test]
fn request_frame_regressions_decode_or_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/regressions/request_frame");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the regression corpus exists") {
        let path = entry.expect("a readable directory entry").path();
        let input = std::fs::read(&path).expect("a readable regression input");
        // The result does not matter; returning at all does.
        let _ = ringmq_server::decode_request_frame(bytes::Bytes::from(input));
        replayed += 1;
    }
    assert!(replayed > 0, "no regression inputs in {}", dir.display());
}
