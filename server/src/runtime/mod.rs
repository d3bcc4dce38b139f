//! The runtime room: the shards (one thread and io_uring runtime per core, owning their
//! partitions, groups and offsets; [`shard`]), the state they share ([`state`]), and the
//! panic hook that counts and reports a panic in any of them ([`panic_hook`]).

pub mod panic_hook;
pub mod shard;
pub mod state;

pub use state::{Broker, ConnectionCount, ConnectionSlot, ShardInboxes};
