//! Topic administration shared by CreateTopics, Metadata auto-creation, DeleteTopics,
//! CreatePartitions and AlterConfigs: validation with Kafka's rules and errors, then the
//! change through the active controller. Partitions open and close on their owner shards
//! when the shards reconcile the committed change (`cluster::reconcile`); these functions
//! return once this broker has.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;

use crate::cluster::controller::{Answer, ControllerRequest};
use crate::metadata::TopicMeta;
use crate::runtime::shard::ShardCtx;

/// Longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_MAX: usize = 249;
/// Most partitions one request may create for a topic.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ResponseError,
    pub message: String,
}

fn err(code: ResponseError, message: impl Into<String>) -> TopicError {
    TopicError {
        code,
        message: message.into(),
    }
}

/// Kafka's topic name rule: 1..249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(err(
            ResponseError::InvalidTopicException,
            format!("illegal topic name {name:?}"),
        ));
    }
    if name.len() > TOPIC_NAME_MAX {
        return Err(err(
            ResponseError::InvalidTopicException,
            format!("topic name longer than {TOPIC_NAME_MAX}"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(err(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} contains {c:?}"),
        ));
    }
    Ok(())
}

/// What a CreateTopics entry asks for (after defaults).
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

impl From<crate::cluster::SubmitError> for TopicError {
    fn from(e: crate::cluster::SubmitError) -> Self {
        err(e.code, e.message)
    }
}

/// Live brokers (registered, not fenced): caps a defaulted replication factor.
pub fn live_brokers(ctx: &ShardCtx) -> i16 {
    ctx.broker.image().live_brokers().count().max(1) as i16
}

/// Validates and creates a topic (with `validate_only`, stops after validation).
/// `assignment` gives explicit replicas per partition.
/// How long CreateTopics waits, after the commit, for this broker to open the new logs.
const CREATE_APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn create(
    ctx: &Rc<ShardCtx>,
    t: NewTopic,
    assignment: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<TopicMeta, TopicError> {
    validate_name(&t.name)?;
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&t.partitions) {
        return Err(err(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be in 1..{PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    ctx.broker
        .config
        .log_config(&t.configs)
        .map_err(|m| err(ResponseError::InvalidConfig, m))?;
    let req = ControllerRequest::CreateTopic {
        name: t.name.clone(),
        partitions: t.partitions,
        replication_factor: t.replication_factor,
        assignment,
        configs: t.configs,
        validate_only,
        internal: false,
    };
    // Answered at most CREATE_APPLY_WAIT after the commit: a small topic is open here by
    // then; a topic of thousands of partitions goes on opening while clients retry.
    let (_, answer) = ctx
        .broker
        .cluster
        .submit_waiting(req, CREATE_APPLY_WAIT)
        .await?;
    let Answer::Topic(meta) = answer else {
        return Err(err(
            ResponseError::UnknownServerError,
            "controller answered no topic",
        ));
    };
    if !validate_only {
        tracing::info!(topic = %meta.name, partitions = meta.partition_count(), "created topic");
    }
    Ok(meta)
}

/// Deletes a topic: metadata first (clients stop seeing it), then every replica's
/// files as the brokers reconcile.
pub async fn delete(ctx: &Rc<ShardCtx>, name: &str) -> Result<TopicMeta, TopicError> {
    let req = ControllerRequest::DeleteTopic {
        name: name.to_owned(),
    };
    let (_, answer) = ctx.broker.cluster.submit(req).await?;
    let Answer::Topic(meta) = answer else {
        return Err(err(
            ResponseError::UnknownServerError,
            "controller answered no topic",
        ));
    };
    tracing::info!(topic = %name, "deleted topic");
    Ok(meta)
}

/// Replaces a topic's config overrides (AlterConfigs / IncrementalAlterConfigs): validated,
/// committed, then applied to the open logs on their owner shards.
pub async fn set_configs(
    ctx: &Rc<ShardCtx>,
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), TopicError>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let Some(mut meta) = ctx.broker.image().topic(name).cloned() else {
        return Err(err(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        ));
    };
    let before = meta.configs.clone();
    edit(&mut meta.configs)?;
    ctx.broker
        .config
        .log_config(&meta.configs)
        .map_err(|m| err(ResponseError::InvalidConfig, m))?;
    // Nothing changes (e.g. deleting a key that is not set): no metadata record.
    if validate_only || meta.configs == before {
        return Ok(());
    }
    let req = ControllerRequest::SetTopicConfigs {
        name: name.to_owned(),
        configs: meta.configs.clone(),
    };
    ctx.broker.cluster.submit(req).await?;
    let shards = ctx.shard_count();
    let updates = (0..meta.partition_count() as i32).filter_map(|i| {
        let shard = meta.owner_shard(i, shards)?;
        let (name, configs) = (meta.name.clone(), meta.configs.clone());
        Some(ctx.on_shard(shard, move |c| async move {
            if let (Some(p), Ok(cfg)) =
                (c.partition(&name, i), c.broker.config.log_config(&configs))
            {
                p.log.log_mut().update_config(cfg);
            }
        }))
    });
    join_all(updates).await;
    tracing::info!(topic = %name, configs = ?meta.configs, "altered topic configs");
    Ok(())
}

/// Adds partitions to a topic (CreatePartitions).
pub async fn grow(
    ctx: &Rc<ShardCtx>,
    name: &str,
    count: i32,
    assignment: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), TopicError> {
    if count > PARTITIONS_PER_TOPIC_MAX {
        return Err(err(
            ResponseError::InvalidPartitions,
            format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
        ));
    }
    let req = ControllerRequest::CreatePartitions {
        name: name.to_owned(),
        count,
        validate_only,
        assignment,
    };
    ctx.broker.cluster.submit(req).await?;
    Ok(())
}
