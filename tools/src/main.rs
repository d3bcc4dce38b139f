//! `ringmq`, the operator CLI (admin commands, bench, tune).
//!
//! Subcommands arrive with their issues; until then the binary only reports its version.

fn main() {
    println!("ringmq {}", env!("CARGO_PKG_VERSION"));
}
