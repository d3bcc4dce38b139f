//! The coordinator room: the group coordinator (classic protocol: membership, rebalances,
//! static members; [`group`]) and the committed offsets it serves from
//! `__consumer_offsets` ([`offsets`]), both on the shard that leads the group's partition;
//! the transaction coordinator's state from `__transaction_state` ([`transactions`]).

pub mod group;
pub mod offsets;
pub mod transactions;
