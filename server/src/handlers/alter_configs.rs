//! AlterConfigs (key 33: replaces a topic's overrides) and IncrementalAlterConfigs
//! (key 44: SET, DELETE, APPEND, SUBTRACT per key). Topic resources; dynamic broker
//! configs (SPEC C1) come with their issue: there are none to delete (a DELETE-only
//! request succeeds, as `kafka-reassign-partitions --verify` clearing throttles needs),
//! and setting one is refused with a clear message.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use super::describe_configs::RESOURCE_TOPIC;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;
use crate::topics::{self, TopicError};

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn not_topic(kind: i8) -> TopicError {
    TopicError {
        code: ResponseError::InvalidRequest,
        message: format!("altering resource type {kind} is not supported (topics only)"),
    }
}

/// Kafka's ConfigResource.Type.BROKER.
const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs on a broker: only deleting (what is not set) succeeds.
fn broker_ops(ops: &[(String, i8, Option<String>)]) -> Result<(), TopicError> {
    match ops.iter().find(|(_, op, _)| *op != OP_DELETE) {
        None => Ok(()),
        Some((key, _, _)) => Err(TopicError {
            code: ResponseError::InvalidRequest,
            message: format!(
                "dynamic broker configs are not supported yet: set {key} in server.properties"
            ),
        }),
    }
}

fn outcome(r: Result<(), TopicError>) -> (i16, Option<StrBytes>) {
    match r {
        Ok(()) => (0, None),
        Err(e) => (e.code.code(), Some(StrBytes::from_string(e.message))),
    }
}

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AlterConfigsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut responses = Vec::new();
    for r in body.resources {
        let result = if r.resource_type != RESOURCE_TOPIC {
            Err(not_topic(r.resource_type))
        } else {
            let new: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned()))
                })
                .collect();
            topics::set_configs(
                ctx,
                r.resource_name.as_str(),
                |configs| {
                    *configs = new;
                    Ok(())
                },
                body.validate_only,
            )
            .await
        };
        let (code, message) = outcome(result);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    let resp = AlterConfigsResponse::default().with_responses(responses);
    protocol::single(ApiKey::AlterConfigs, v, req.correlation_id(), &resp)
}

pub async fn handle_incremental(
    ctx: &Rc<ShardCtx>,
    req: Request,
) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: IncrementalAlterConfigsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut responses = Vec::new();
    for r in body.resources {
        let ops: Vec<(String, i8, Option<String>)> = r
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_owned(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.as_str().to_owned()),
                )
            })
            .collect();
        let result = if r.resource_type == RESOURCE_BROKER {
            broker_ops(&ops)
        } else if r.resource_type != RESOURCE_TOPIC {
            Err(not_topic(r.resource_type))
        } else {
            topics::set_configs(
                ctx,
                r.resource_name.as_str(),
                |configs| apply_ops(configs, ops),
                body.validate_only,
            )
            .await
        };
        let (code, message) = outcome(result);
        responses.push(
            IncrementalResult::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    let resp = IncrementalAlterConfigsResponse::default().with_responses(responses);
    protocol::single(
        ApiKey::IncrementalAlterConfigs,
        v,
        req.correlation_id(),
        &resp,
    )
}

fn apply_ops(
    configs: &mut BTreeMap<String, String>,
    ops: Vec<(String, i8, Option<String>)>,
) -> Result<(), TopicError> {
    let invalid = |m: String| TopicError {
        code: ResponseError::InvalidConfig,
        message: m,
    };
    for (key, op, value) in ops {
        match op {
            OP_SET => {
                let value = value.ok_or_else(|| invalid(format!("SET {key} without a value")))?;
                configs.insert(key, value);
            }
            OP_DELETE => {
                configs.remove(&key);
            }
            OP_APPEND | OP_SUBTRACT if key == "cleanup.policy" => {
                let value = value.ok_or_else(|| invalid(format!("{key} without a value")))?;
                let mut list: Vec<String> = configs.get(&key).map_or_else(
                    || vec!["delete".to_string()],
                    |c| c.split(',').map(str::to_owned).collect(),
                );
                for item in value.split(',').map(str::trim) {
                    list.retain(|x| x != item);
                    if op == OP_APPEND {
                        list.push(item.to_owned());
                    }
                }
                configs.insert(key, list.join(","));
            }
            OP_APPEND | OP_SUBTRACT => return Err(invalid(format!("{key} is not a list config"))),
            other => return Err(invalid(format!("unknown config operation {other}"))),
        }
    }
    Ok(())
}
