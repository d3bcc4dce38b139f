//! The network room: the shards' accept loops and the placement of a new connection on a
//! shard ([`listener`]), one connection's life: TLS, framing, SASL, request dispatch to
//! the handlers and ordered responses ([`connection`]), and fetch responses sent from the
//! segment files without a user-space copy ([`zero_copy`]).

pub mod connection;
pub mod listener;
pub mod zero_copy;
