//! The quota room: rate limits applied on the data path. Today the replication throttles
//! (Kafka's `leader/follower.replication.throttled.rate` and the throttled replica lists;
//! [`throttle`]).

pub mod throttle;
