//! KIP-951 leader discovery: a Produce (v10+) or Fetch (v12+) answered with
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH carries the partition's current leader
//! and epoch, and (Produce v10+, Fetch v16+) the leader's endpoint, so the client moves
//! to it without a Metadata round trip. Taken from this broker's metadata image.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use crate::metadata::{MetadataImage, NO_LEADER};

/// Leaders named in one response, and their endpoints on the client's listener.
pub struct LeaderHints {
    listener: String,
    endpoints: BTreeMap<i32, (String, u16, Option<String>)>,
}

impl LeaderHints {
    pub fn new(listener: &str) -> Self {
        LeaderHints {
            listener: listener.to_owned(),
            endpoints: BTreeMap::new(),
        }
    }

    /// `(leader, epoch)` to put in the response for a partition that failed with `code`,
    /// if the error is one KIP-951 answers and a live leader is known.
    pub fn hint(
        &mut self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        code: ResponseError,
    ) -> Option<(i32, i32)> {
        if !matches!(
            code,
            ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch
        ) {
            return None;
        }
        let state = image.topic(topic)?.state(partition)?;
        if state.leader == NO_LEADER {
            return None;
        }
        let broker = image.brokers.get(&state.leader).filter(|b| !b.fenced)?;
        let (host, port) = broker.endpoint(&self.listener)?;
        self.endpoints
            .insert(broker.id, (host.to_owned(), port, broker.rack.clone()));
        Some((state.leader, state.leader_epoch))
    }

    /// The endpoints of the leaders hinted at, as `make` builds each one.
    pub fn endpoints<T>(
        &self,
        make: impl Fn(BrokerId, StrBytes, i32, Option<StrBytes>) -> T,
    ) -> Vec<T> {
        self.endpoints
            .iter()
            .map(|(id, (host, port, rack))| {
                make(
                    BrokerId(*id),
                    StrBytes::from_string(host.clone()),
                    i32::from(*port),
                    rack.clone().map(StrBytes::from_string),
                )
            })
            .collect()
    }
}

/// A response's `node_endpoints` from `hints` (each API has its own NodeEndpoint type).
macro_rules! node_endpoints {
    ($hints:expr, $endpoint:ty) => {
        $hints.endpoints(|id, host, port, rack| {
            <$endpoint>::default()
                .with_node_id(id)
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        })
    };
}
pub(crate) use node_endpoints;
