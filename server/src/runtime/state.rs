//! What every shard shares: [`Broker`] holds the configuration, the metadata image, the
//! cluster handle, the shards' inboxes, the metrics and the connection table. It is the
//! only state shared across threads; everything on the data path lives in a shard.
//! Metadata changes go through the cluster's controller ([`crate::cluster::Cluster`]),
//! which publishes each new image.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures_channel::mpsc;

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::metadata::MetadataImage;
use crate::metrics::Metrics;
use crate::runtime::shard::{ShardGone, ShardTask};

/// The shards' inboxes: a task sent to one runs on that shard's thread with its context.
/// Senders only; each shard drains its own receiver.
#[derive(Clone)]
pub struct ShardInboxes(Vec<mpsc::UnboundedSender<ShardTask>>);

impl ShardInboxes {
    pub fn new(senders: Vec<mpsc::UnboundedSender<ShardTask>>) -> Self {
        ShardInboxes(senders)
    }

    /// Queues `task` on shard `shard`; fails when there is no such shard or it stopped.
    pub fn send(&self, shard: usize, task: ShardTask) -> Result<(), ShardGone> {
        self.0
            .get(shard)
            .ok_or(ShardGone(shard))?
            .unbounded_send(task)
            .map_err(|_| ShardGone(shard))
    }

    /// Queues a task built by `task` on every shard.
    pub fn send_all(&self, task: impl Fn() -> ShardTask) {
        for shard in 0..self.0.len() {
            let _ = self.send(shard, task());
        }
    }
}

pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: Arc<ArcSwap<MetadataImage>>,
    /// The controller quorum member and this broker's registration.
    pub cluster: Arc<Cluster>,
    /// Producer ids this broker may hand out (a block from the controller).
    pub producer_ids: Mutex<std::ops::Range<i64>>,
    /// The only way to reach a shard from another thread.
    pub inboxes: ShardInboxes,
    pub metrics: Arc<Metrics>,
    /// What partitions read from this broker (its id, the metadata, the counters).
    pub local: Arc<crate::storage::partition::LocalBroker>,
    /// Open client connections, in total and per client address (SPEC S5).
    pub connections: Mutex<ConnectionCount>,
    /// Connection ids, broker-wide (for logs).
    pub next_connection_id: AtomicU64,
    /// Replication throttles (leader and follower rates), from the metadata image.
    pub quotas: crate::quota::throttle::ReplicationQuotas,
    /// The Kafka listeners as served (TLS configuration, SASL settings).
    pub listeners: Vec<Arc<crate::security::ListenerRuntime>>,
    /// Failed authentications per client address (SASL back-off).
    pub auth_failures: crate::security::sasl::AuthFailures,
    /// Key for the made-up SCRAM salts of unknown users (random per process).
    pub sasl_secret: Vec<u8>,
    /// How this broker reaches the other brokers' inter-broker listener.
    pub inter_broker: Arc<crate::security::peer_client::PeerSecurity>,
}

#[derive(Debug, Default)]
pub struct ConnectionCount {
    /// Connections under `max.connections` (all but the inter-broker listener's when
    /// there are several listeners, as Kafka protects it).
    pub total: usize,
    /// Per listener (`listener.name.<name>.max.connections`).
    pub per_listener: std::collections::HashMap<String, usize>,
    pub per_ip: std::collections::HashMap<std::net::IpAddr, usize>,
    /// Connections each shard serves.
    pub per_shard: Vec<usize>,
}

/// A connection's place under the limits and on a shard; freed when dropped.
pub struct ConnectionSlot {
    broker: Arc<Broker>,
    ip: std::net::IpAddr,
    listener: String,
    /// Counted in `total` (not on the inter-broker listener).
    counted: bool,
    /// The shard that serves it.
    pub shard: usize,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.broker.connections.lock() {
            if self.counted {
                c.total = c.total.saturating_sub(1);
            }
            if let Some(n) = c.per_listener.get_mut(&self.listener) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = c.per_shard.get_mut(self.shard) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = c.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

impl Broker {
    /// A new connection's id (broker-wide, for logs).
    pub fn connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Admits a new connection from `ip` on `listener` under Kafka's limits, or says
    /// which one it would break: `max.connections` for the broker (the inter-broker
    /// listener is exempt, as in Kafka) and `listener.name.<name>.max.connections` for the
    /// listener; `max.connections.per.ip` (or its entry in
    /// `max.connections.per.ip.overrides`) per address, over all listeners. (Accept path
    /// only; the lock is never taken on the data path.)
    ///
    /// The connection is placed on the shard serving the fewest (`accepted_on` when it
    /// ties): SO_REUSEPORT hashes connections to shards, so a producer and a consumer can
    /// otherwise share one shard while another idles (measured 66 % vs 21 % busy at 260k
    /// msgs/s mixed). Deciding under this lock keeps concurrent accepts exact.
    pub fn admit(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        accepted_on: usize,
        listener: &crate::security::ListenerRuntime,
    ) -> Result<ConnectionSlot, String> {
        let mut c = self
            .connections
            .lock()
            .map_err(|_| "connection table lock poisoned".to_owned())?;
        let name = &listener.listener.name;
        // Kafka's protected listener: the inter-broker one, when there are others.
        let counted = self.config.listeners.len() < 2
            || self
                .config
                .inter_broker_listener()
                .is_none_or(|l| l.name != *name);
        if counted && c.total >= self.config.max_connections {
            return Err(format!(
                "max.connections={} reached",
                self.config.max_connections
            ));
        }
        let on_listener = c.per_listener.get(name).copied().unwrap_or(0);
        if let Some(max) = listener.max_connections
            && on_listener >= max
        {
            return Err(format!(
                "listener.name.{}.max.connections={max} reached",
                name.to_lowercase()
            ));
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        let ip_max = self
            .config
            .max_connections_per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.config.max_connections_per_ip);
        if from_ip >= ip_max {
            return Err(format!("max.connections.per.ip={ip_max} reached for {ip}"));
        }
        if counted {
            c.total += 1;
        }
        c.per_listener.insert(name.clone(), on_listener + 1);
        c.per_ip.insert(ip, from_ip + 1);
        let shard = (0..c.per_shard.len())
            .min_by_key(|s| (c.per_shard[*s], *s != accepted_on))
            .unwrap_or(accepted_on);
        if let Some(n) = c.per_shard.get_mut(shard) {
            *n += 1;
        }
        Ok(ConnectionSlot {
            broker: Arc::clone(self),
            ip,
            listener: name.clone(),
            counted,
            shard,
        })
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.load_full()
    }
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
    pub fn shard_count(&self) -> usize {
        self.inboxes.0.len()
    }
}

impl Broker {
    /// Whether the connection's principal may do `operation` on the resource (ACLs from
    /// this broker's metadata snapshot; always true without an authorizer).
    pub fn authorize(
        &self,
        session: &crate::security::Session,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        let a = &self.config.authorizer;
        if !a.enabled {
            return true;
        }
        a.authorize(
            &self.image().acls,
            &session.principal(),
            session.peer.ip(),
            operation,
            resource_type,
            name,
        )
    }

    /// [`Self::authorize`] on the cluster resource.
    pub fn authorize_cluster(&self, session: &crate::security::Session, operation: i8) -> bool {
        self.authorize(
            session,
            operation,
            crate::security::acl::resource::CLUSTER,
            crate::security::acl::CLUSTER_NAME,
        )
    }
}
