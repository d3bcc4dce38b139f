//! Shared fixtures for ringmq's criterion benchmarks (batch builders, temp logs).
