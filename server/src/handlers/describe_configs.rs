//! DescribeConfigs (key 32): topic configs (effective value, whether overridden) and the
//! broker's static configs, with Kafka's key names and config sources.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::config::kafka_broker_configs::KAFKA_BROKER_CONFIGS;
use crate::config::topic_config::{self, TOPIC_CONFIG_KEYS};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

pub fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeConfigsRequest = protocol::decode_body(req.body.clone(), v)?;
    let results = body
        .resources
        .iter()
        .map(|r| {
            if let Some(code) = denied(
                ctx,
                &req.session,
                r.resource_type,
                r.resource_name.as_str(),
                op::DESCRIBE_CONFIGS,
            ) {
                return DescribeConfigsResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_static_str("not authorized")))
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
            }
            describe(
                ctx,
                v,
                r.resource_type,
                r.resource_name.as_str(),
                r.configuration_keys.as_deref(),
                v >= 1 && body.include_synonyms,
            )
        })
        .collect();
    let resp = DescribeConfigsResponse::default().with_results(results);
    protocol::single(ApiKey::DescribeConfigs, v, req.correlation_id(), &resp)
}

/// The error for a config resource the session may not `operation` (DESCRIBE_CONFIGS
/// or ALTER_CONFIGS): topics by name, brokers through the cluster resource.
pub fn denied(
    ctx: &ShardCtx,
    session: &crate::security::Session,
    kind: i8,
    name: &str,
    operation: i8,
) -> Option<kafka_protocol::ResponseError> {
    use kafka_protocol::ResponseError;
    match kind {
        RESOURCE_TOPIC => (!ctx
            .broker
            .authorize(session, operation, resource::TOPIC, name))
        .then_some(ResponseError::TopicAuthorizationFailed),
        RESOURCE_BROKER => (!ctx.broker.authorize_cluster(session, operation))
            .then_some(ResponseError::ClusterAuthorizationFailed),
        _ => None,
    }
}

fn describe(
    ctx: &ShardCtx,
    v: i16,
    kind: i8,
    name: &str,
    keys: Option<&[StrBytes]>,
    synonyms: bool,
) -> DescribeConfigsResult {
    let wanted = |k: &str| keys.is_none_or(|ks| ks.iter().any(|x| x.as_str() == k));
    // Kafka answers "" (not null) here when there is no error.
    let result = DescribeConfigsResult::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_string(name.to_owned()));
    let entries: Vec<Entry> = match kind {
        RESOURCE_TOPIC => {
            let image = ctx.broker.image();
            let Some(meta) = image.topic(name) else {
                return result
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "topic '{name}' does not exist"
                    ))));
            };
            let effective = match ctx.broker.config.log_config(&meta.configs) {
                Ok(c) => c,
                Err(e) => {
                    return result
                        .with_error_code(ResponseError::InvalidConfig.code())
                        .with_error_message(Some(StrBytes::from_string(e)));
                }
            };
            TOPIC_CONFIG_KEYS
                .iter()
                .filter(|k| wanted(k))
                .map(|k| {
                    let source = if meta.configs.contains_key(*k) {
                        SOURCE_DYNAMIC_TOPIC
                    } else {
                        SOURCE_DEFAULT
                    };
                    Entry {
                        name: k.to_string(),
                        value: Some(topic_config::describe(&effective, k, &meta.configs)),
                        source,
                        read_only: false,
                        config_type: config_type(k),
                        sensitive: false,
                        synonyms: Vec::new(),
                    }
                })
                .collect()
        }
        // The cluster-wide default resource holds only what was set for it.
        RESOURCE_BROKER if name.is_empty() => dynamic_entries(ctx, name),
        RESOURCE_BROKER => broker_entries(ctx)
            .into_iter()
            .chain(dynamic_entries(ctx, name))
            .filter(|e| wanted(&e.name))
            .collect(),
        other => {
            return result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "resource type {other} is not supported"
                ))));
        }
    };
    let configs = entries
        .into_iter()
        .map(|c| {
            let mut e = DescribeConfigsResourceResult::default()
                .with_documentation(None)
                // A sensitive value is never sent (Kafka sends null).
                .with_value(c.value.filter(|_| !c.sensitive).map(StrBytes::from_string))
                .with_read_only(c.read_only)
                .with_is_sensitive(c.sensitive)
                .with_config_source(c.source);
            // config_type exists from v3.
            if v >= 3 {
                e = e.with_config_type(c.config_type);
            }
            if synonyms {
                e = e.with_synonyms(
                    c.synonyms
                        .into_iter()
                        .map(|(value, source)| {
                            DescribeConfigsSynonym::default()
                                .with_name(StrBytes::from_string(c.name.clone()))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_source(source)
                        })
                        .collect(),
                );
            }
            e.with_name(StrBytes::from_string(c.name))
        })
        .collect();
    result.with_configs(configs)
}

/// One described config.
struct Entry {
    name: String,
    value: Option<String>,
    source: i8,
    read_only: bool,
    config_type: i8,
    sensitive: bool,
    /// Where else the value is set, highest precedence first (value, source), for
    /// DescribeConfigs' synonyms.
    synonyms: Vec<(String, i8)>,
}

/// Every broker config Kafka describes ([`KAFKA_BROKER_CONFIGS`]): ringmq's own value
/// (STATIC_BROKER_CONFIG) for the keys it implements, Kafka's default otherwise; then
/// ringmq's own keys.
fn broker_entries(ctx: &ShardCtx) -> Vec<Entry> {
    let c = &ctx.broker.config;
    let listeners = c
        .listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, l.bind))
        .collect::<Vec<_>>()
        .join(",");
    let advertised = c
        .listeners
        .iter()
        .map(|l| format!("{}://{}:{}", l.name, l.advertised.0, l.advertised.1))
        .collect::<Vec<_>>()
        .join(",");
    let protocol_map = c
        .listener_protocols
        .iter()
        .map(|(n, p)| format!("{n}:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let ours: Vec<(&str, String)> = vec![
        ("node.id", c.node_id.to_string()),
        ("broker.id", c.node_id.to_string()),
        ("process.roles", "broker,controller".into()),
        ("listeners", listeners),
        ("advertised.listeners", advertised),
        ("listener.security.protocol.map", protocol_map),
        ("log.dirs", c.data_dir.display().to_string()),
        ("num.partitions", c.num_partitions.to_string()),
        (
            "default.replication.factor",
            c.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        ("message.max.bytes", c.message_max_bytes.to_string()),
        ("log.retention.ms", c.log_retention_ms.to_string()),
        ("log.segment.bytes", c.log_segment_bytes.to_string()),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
        ),
        (
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
        ),
        (
            "offsets.retention.minutes",
            (c.offsets_retention_ms / 60_000).to_string(),
        ),
        (
            "connections.max.idle.ms",
            c.connections_max_idle_ms.to_string(),
        ),
        (
            "queued.max.request.bytes",
            c.queued_max_request_bytes.to_string(),
        ),
        ("min.insync.replicas", c.min_insync_replicas.to_string()),
        (
            "unclean.leader.election.enable",
            c.unclean_leader_election.to_string(),
        ),
        (
            "offsets.topic.replication.factor",
            c.offsets_topic_replication_factor.to_string(),
        ),
        (
            "transaction.state.log.replication.factor",
            c.transaction_state_log_replication_factor.to_string(),
        ),
        (
            "transaction.state.log.min.isr",
            c.transaction_state_log_min_isr.to_string(),
        ),
        (
            "transaction.max.timeout.ms",
            c.transaction_max_timeout_ms.to_string(),
        ),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            c.transaction_abort_timed_out_transaction_cleanup_interval_ms
                .to_string(),
        ),
        (
            "transactional.id.expiration.ms",
            c.transactional_id_expiration_ms.to_string(),
        ),
        (
            "replica.lag.time.max.ms",
            c.replica_lag_time_max_ms.to_string(),
        ),
        (
            "replica.fetch.wait.max.ms",
            c.replica_fetch_wait_max_ms.to_string(),
        ),
        (
            "replica.fetch.max.bytes",
            c.replica_fetch_max_bytes.to_string(),
        ),
        (
            "replica.fetch.response.max.bytes",
            c.replica_fetch_response_max_bytes.to_string(),
        ),
        ("num.replica.fetchers", c.num_replica_fetchers.to_string()),
        (
            "auto.leader.rebalance.enable",
            c.auto_leader_rebalance.to_string(),
        ),
        (
            "leader.imbalance.check.interval.seconds",
            c.leader_imbalance_check_interval_secs.to_string(),
        ),
        (
            "leader.imbalance.per.broker.percentage",
            c.leader_imbalance_per_broker_percentage.to_string(),
        ),
        (
            "broker.heartbeat.interval.ms",
            c.broker_heartbeat_interval_ms.to_string(),
        ),
        (
            "broker.session.timeout.ms",
            c.broker_session_timeout_ms.to_string(),
        ),
    ];
    let mut out: Vec<Entry> = KAFKA_BROKER_CONFIGS
        .iter()
        .map(|k| match ours.iter().find(|(name, _)| *name == k.name) {
            Some((_, value)) => Entry {
                name: k.name.to_owned(),
                value: Some(value.clone()),
                source: SOURCE_STATIC_BROKER,
                read_only: k.read_only,
                config_type: k.config_type,
                sensitive: k.sensitive,
                synonyms: Vec::new(),
            },
            None => Entry {
                name: k.name.to_owned(),
                value: k.default.map(str::to_owned),
                source: SOURCE_DEFAULT,
                read_only: k.read_only,
                config_type: k.config_type,
                sensitive: k.sensitive,
                synonyms: Vec::new(),
            },
        })
        .collect();
    out.extend(
        [
            ("ringmq.shards", c.shards.to_string()),
            ("ringmq.pin.cores", c.pin_cores.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| Entry {
            name: name.to_owned(),
            value: Some(value),
            source: SOURCE_STATIC_BROKER,
            read_only: true,
            config_type: if name == "ringmq.pin.cores" { 1 } else { 3 },
            sensitive: false,
            synonyms: Vec::new(),
        }),
    );
    out
}

/// Dynamic broker configs in effect for broker resource `name` (a broker id, or "" for
/// the cluster default): its own (DYNAMIC_BROKER_CONFIG), else the default's.
fn dynamic_entries(ctx: &ShardCtx, name: &str) -> Vec<Entry> {
    let image = ctx.broker.image();
    let own = image.broker_configs.get(name).filter(|_| !name.is_empty());
    let default = image.broker_configs.get("");
    crate::quota::throttle::DYNAMIC_BROKER_KEYS
        .iter()
        .filter_map(|k| {
            let (own, default) = (own.and_then(|c| c.get(*k)), default.and_then(|c| c.get(*k)));
            let (value, source) = match (own, default) {
                (Some(v), _) => (v, SOURCE_DYNAMIC_BROKER),
                (None, Some(v)) => (v, SOURCE_DYNAMIC_DEFAULT_BROKER),
                (None, None) => return None,
            };
            let synonyms = [
                (own, SOURCE_DYNAMIC_BROKER),
                (default, SOURCE_DYNAMIC_DEFAULT_BROKER),
            ]
            .into_iter()
            .filter_map(|(v, s)| v.map(|v| (v.clone(), s)))
            .collect();
            Some(Entry {
                name: (*k).to_owned(),
                value: Some(value.clone()),
                source,
                read_only: false,
                config_type: 5,
                sensitive: false,
                synonyms,
            })
        })
        .collect()
}

/// Kafka's ConfigType of a topic key (v3+): BOOLEAN 1, STRING 2, INT 3, LONG 5,
/// DOUBLE 6, LIST 7.
fn config_type(key: &str) -> i8 {
    match key {
        "unclean.leader.election.enable"
        | "preallocate"
        | "errors.deadletterqueue.group.enable"
        | "remote.storage.enable"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable" => 1,
        "compression.type" | "message.timestamp.type" => 2,
        "segment.bytes"
        | "max.message.bytes"
        | "index.interval.bytes"
        | "min.insync.replicas"
        | "segment.index.bytes"
        | "max.decompressed.message.bytes"
        | "compression.gzip.level"
        | "compression.lz4.level"
        | "compression.zstd.level" => 3,
        "min.cleanable.dirty.ratio" => 6,
        "cleanup.policy"
        | crate::quota::throttle::LEADER_REPLICAS
        | crate::quota::throttle::FOLLOWER_REPLICAS => 7,
        _ => 5,
    }
}
