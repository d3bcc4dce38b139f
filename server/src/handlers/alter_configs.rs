//! AlterConfigs (key 33: replaces a resource's overrides) and IncrementalAlterConfigs
//! (key 44: SET, DELETE, APPEND, SUBTRACT per key), on topics and on brokers. A broker
//! resource is a broker id, or "" for the cluster-wide default; its dynamic configs are
//! the replication throttle rates (`replication::throttle::DYNAMIC_BROKER_KEYS`), kept in
//! the metadata log so every broker applies them. Other broker keys are static
//! (server.properties) and refused with a message that says so; deleting one that is not
//! set succeeds, as `kafka-reassign-partitions --verify` clearing throttles needs.

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
use super::describe_configs::{RESOURCE_TOPIC, denied};
use crate::cluster::controller::ControllerRequest;
use crate::handlers::topics::{self, TopicError};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::op;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn not_authorized(code: Option<ResponseError>) -> TopicError {
    TopicError {
        code: code.unwrap_or(ResponseError::TopicAuthorizationFailed),
        message: "not authorized to alter the configs".into(),
    }
}

fn not_topic(kind: i8) -> TopicError {
    TopicError {
        code: ResponseError::InvalidRequest,
        message: format!("altering resource type {kind} is not supported (topics and brokers)"),
    }
}

/// Kafka's ConfigResource.Type.BROKER.
const RESOURCE_BROKER: i8 = 4;

/// Edits broker resource `name`'s dynamic configs (a broker id, or "" for the cluster
/// default) and commits the result through the controller, which validates it.
async fn set_broker_configs(
    ctx: &Rc<ShardCtx>,
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), TopicError>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let mut configs = ctx
        .broker
        .image()
        .broker_configs
        .get(name)
        .cloned()
        .unwrap_or_default();
    let before = configs.clone();
    edit(&mut configs)?;
    for (k, v) in &configs {
        crate::quota::throttle::validate_broker_config(k, v).map_err(|m| TopicError {
            code: ResponseError::InvalidConfig,
            message: m,
        })?;
    }
    if validate_only || configs == before {
        return Ok(());
    }
    let req = ControllerRequest::SetBrokerConfigs {
        resource: name.to_owned(),
        configs: configs.clone(),
    };
    ctx.broker.cluster.submit(req).await?;
    tracing::info!(broker = name, ?configs, "altered dynamic broker configs");
    Ok(())
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
        let new: BTreeMap<String, String> = r
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned()))
            })
            .collect();
        // AlterConfigs replaces the resource's whole set of overrides.
        let replace = |configs: &mut BTreeMap<String, String>| {
            *configs = new;
            Ok(())
        };
        let name = r.resource_name.as_str();
        let denial = denied(ctx, &req.session, r.resource_type, name, op::ALTER_CONFIGS);
        let result = match r.resource_type {
            _ if denial.is_some() => Err(not_authorized(denial)),
            RESOURCE_BROKER => set_broker_configs(ctx, name, replace, body.validate_only).await,
            RESOURCE_TOPIC => topics::set_configs(ctx, name, replace, body.validate_only).await,
            other => Err(not_topic(other)),
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
        let denial = denied(
            ctx,
            &req.session,
            r.resource_type,
            r.resource_name.as_str(),
            op::ALTER_CONFIGS,
        );
        let result = if denial.is_some() {
            Err(not_authorized(denial))
        } else if r.resource_type == RESOURCE_BROKER {
            set_broker_configs(
                ctx,
                r.resource_name.as_str(),
                |configs| apply_ops(configs, ops),
                body.validate_only,
            )
            .await
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
