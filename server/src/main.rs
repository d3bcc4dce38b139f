//! `ringmqd`, the ringmq broker daemon.
//!
//! The Kafka protocol front end and the shard runtime arrive with issue 3; until then the
//! binary only reports its version, so packaging and the README's commands already work.

fn main() {
    println!("ringmqd {}", env!("CARGO_PKG_VERSION"));
}
