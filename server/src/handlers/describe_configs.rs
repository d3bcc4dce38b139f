//! DescribeConfigs (key 32): topic configs (effective value, whether overridden) and the
//! broker's static configs, with Kafka's key names and config sources.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;
use crate::topic_config::{self, TOPIC_CONFIG_KEYS};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeConfigsRequest = protocol::decode_body(req.body.clone(), v)?;
    let results = body
        .resources
        .iter()
        .map(|r| {
            describe(
                ctx,
                v,
                r.resource_type,
                r.resource_name.as_str(),
                r.configuration_keys.as_deref(),
            )
        })
        .collect();
    let resp = DescribeConfigsResponse::default().with_results(results);
    protocol::single(ApiKey::DescribeConfigs, v, req.correlation_id(), &resp)
}

fn describe(
    ctx: &ShardCtx,
    v: i16,
    kind: i8,
    name: &str,
    keys: Option<&[StrBytes]>,
) -> DescribeConfigsResult {
    let wanted = |k: &str| keys.is_none_or(|ks| ks.iter().any(|x| x.as_str() == k));
    // Kafka answers "" (not null) here when there is no error.
    let result = DescribeConfigsResult::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_string(name.to_owned()));
    let entries: Vec<(String, String, i8, bool)> = match kind {
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
                    (
                        k.to_string(),
                        topic_config::describe(&effective, k, &meta.configs),
                        source,
                        false,
                    )
                })
                .collect()
        }
        RESOURCE_BROKER => {
            let c = &ctx.broker.config;
            let all = [
                ("node.id", c.node_id.to_string()),
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
                ("log.dirs", c.data_dir.display().to_string()),
                (
                    "socket.request.max.bytes",
                    c.socket_request_max_bytes.to_string(),
                ),
            ];
            all.into_iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, val)| (k.to_string(), val, SOURCE_STATIC_BROKER, true))
                .collect()
        }
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
        .map(|(k, val, source, read_only)| {
            let mut e = DescribeConfigsResourceResult::default()
                .with_documentation(None)
                .with_value(Some(StrBytes::from_string(val)))
                .with_read_only(read_only)
                .with_config_source(source);
            // config_type exists from v3.
            if v >= 3 {
                e = e.with_config_type(config_type(&k));
            }
            e.with_name(StrBytes::from_string(k))
        })
        .collect();
    result.with_configs(configs)
}

/// Kafka's ConfigType of a key (v3+): BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7.
fn config_type(key: &str) -> i8 {
    match key {
        "unclean.leader.election.enable" | "auto.create.topics.enable" => 1,
        "compression.type" | "message.timestamp.type" | "log.dirs" => 2,
        "segment.bytes"
        | "max.message.bytes"
        | "index.interval.bytes"
        | "min.insync.replicas"
        | "num.partitions"
        | "message.max.bytes"
        | "log.segment.bytes"
        | "node.id"
        | "socket.request.max.bytes" => 3,
        "default.replication.factor" => 4,
        "min.cleanable.dirty.ratio" => 6,
        "cleanup.policy" => 7,
        _ => 5,
    }
}
