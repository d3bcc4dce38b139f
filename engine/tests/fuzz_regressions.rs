//! Inputs that once crashed the `record_batches` fuzz target (tests/fuzz/regressions),
//! run through the same checks in the ordinary test suite (debug build: overflow checks
//! on), so a regression fails `cargo test` even where no fuzzer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fuzz_checks;

#[test]
fn every_record_batches_regression_input_runs_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz/regressions/record_batches");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        fuzz_checks::check_record_batches(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 1, "no regression inputs in {}", dir.display());
}
