//! CreateTopics (key 19): validates each topic (name, partitions, replication factor,
//! configs), creates it or reports the Kafka error per topic.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use super::describe_configs::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use crate::config::topic_config::{self, TOPIC_CONFIG_KEYS};
use crate::handlers::topics::{self, NewTopic};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: CreateTopicsRequest = protocol::decode_body(req.body.clone(), v)?;
    let cfg = &ctx.broker.config;
    // A name given twice is answered once, INVALID_REQUEST, and not created (Kafka's
    // controller does the same; the request's other topics go on).
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = Vec::new();
    for t in &body.topics {
        if !seen.insert(t.name.0.as_str()) && !duplicates.contains(&t.name) {
            duplicates.push(t.name.clone());
        }
    }
    // The topics go to the controller together: their commits follow one another and
    // every shard opens their partitions in the same reconciliations.
    let create_one = async |t: &CreatableTopic| -> CreatableTopicResult {
        let name = t.name.0.as_str().to_owned();
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(value) = &c.value {
                configs.insert(c.name.as_str().to_owned(), value.as_str().to_owned());
            }
        }
        let mut new = NewTopic {
            name: name.clone(),
            partitions: if t.num_partitions == -1 {
                cfg.num_partitions
            } else {
                t.num_partitions
            },
            replication_factor: if t.replication_factor == -1 {
                cfg.default_replication_factor
                    .min(topics::live_brokers(ctx))
            } else {
                t.replication_factor
            },
            configs,
        };
        // Kafka answers a null error_message when there is no error (the codec's default is "").
        let mut result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_error_message(None);
        // CREATE on the cluster or on the topic.
        let may_create = ctx.broker.authorize_cluster(&req.session, op::CREATE)
            || ctx
                .broker
                .authorize(&req.session, op::CREATE, resource::TOPIC, &name);
        let assigned = if !may_create {
            Err((
                ResponseError::TopicAuthorizationFailed,
                // Kafka's controller's text.
                "Authorization failed.".to_owned(),
            ))
        } else if t.assignments.is_empty() {
            Ok(None)
        } else {
            manual_assignment(t, &ctx.broker.image()).map(|(partitions, rf, replicas)| {
                new.partitions = partitions;
                new.replication_factor = rf;
                Some(replicas)
            })
        };
        let (partitions, rf) = (new.partitions, new.replication_factor);
        let assignment = match assigned {
            Ok(a) => Ok(a),
            Err((code, message)) => {
                result = result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
                Err(())
            }
        };
        if let Ok(assignment) = assignment {
            match topics::create(ctx, new, assignment, body.validate_only).await {
                Ok(meta) => {
                    // topic_id exists from v7, the partition counts from v5.
                    if v >= 7 {
                        result = result.with_topic_id(meta.id);
                    }
                    if v >= 5 {
                        result = result
                            .with_num_partitions(partitions)
                            .with_replication_factor(rf)
                            .with_configs(Some(created_configs(ctx, &meta.configs)));
                    }
                }
                Err(e) => {
                    result = result
                        .with_error_code(e.code.code())
                        .with_error_message(Some(StrBytes::from_string(e.message)));
                }
            }
        }
        result
    };
    let mut results = futures_util::future::join_all(
        body.topics
            .iter()
            .filter(|t| !duplicates.contains(&t.name))
            .map(create_one),
    )
    .await;
    results.extend(duplicates.into_iter().map(|name| {
        CreatableTopicResult::default()
            .with_name(name)
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_static_str("Duplicate topic name.")))
    }));
    let resp = CreateTopicsResponse::default().with_topics(results);
    protocol::single(ApiKey::CreateTopics, v, req.correlation_id(), &resp)
}

/// Replicas per partition of an explicit assignment.
type Assignment = Vec<Vec<i32>>;

/// Validates an explicit replica assignment as Kafka does and returns the partition count,
/// replication factor and replicas it implies: partitions numbered 0..n, each with the
/// same number of distinct, registered brokers, and no partition count or replication
/// factor beside it.
fn manual_assignment(
    t: &CreatableTopic,
    image: &crate::metadata::MetadataImage,
) -> Result<(i32, i16, Assignment), (ResponseError, String)> {
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "Both numPartitions or replicationFactor and replicasAssignments were set. \
             Both cannot be used at the same time."
                .into(),
        ));
    }
    let invalid = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
        return invalid(format!(
            "Partitions must be numbered 0 to {} without gaps or repeats",
            t.assignments.len() - 1
        ));
    }
    let rf = t.assignments[0].broker_ids.len();
    for a in &t.assignments {
        let ids = &a.broker_ids;
        if ids.is_empty() || ids.len() != rf {
            return invalid("All partitions should have the same number of replicas".into());
        }
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != ids.len() {
            return invalid(format!(
                "Duplicate replica assignment found: {:?}",
                ids.iter().map(|b| b.0).collect::<Vec<_>>()
            ));
        }
        if let Some(unknown) = ids.iter().find(|b| !image.brokers.contains_key(&b.0)) {
            return invalid(format!(
                "Unknown broker(s) {} in the replica assignment of partition {}",
                unknown.0, a.partition_index
            ));
        }
    }
    let mut sorted: Vec<_> = t.assignments.iter().collect();
    sorted.sort_by_key(|a| a.partition_index);
    let replicas = sorted
        .iter()
        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
        .collect();
    Ok((t.assignments.len() as i32, rf as i16, replicas))
}

/// The created topic's configs as CreateTopics v5+ reports them (as DescribeConfigs
/// would): every topic key with its value and whether it was set for this topic.
fn created_configs(ctx: &ShardCtx, set: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    let Ok(effective) = ctx.broker.config.log_config(set) else {
        return Vec::new();
    };
    TOPIC_CONFIG_KEYS
        .iter()
        .map(|k| {
            let source = if set.contains_key(*k) {
                SOURCE_DYNAMIC_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(k))
                .with_value(Some(StrBytes::from_string(topic_config::describe(
                    &effective, k, set,
                ))))
                .with_read_only(false)
                .with_config_source(source)
                .with_is_sensitive(false)
        })
        .collect()
}
