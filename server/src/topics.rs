//! Topic administration shared by CreateTopics, Metadata auto-creation, DeleteTopics and
//! CreatePartitions: validation with Kafka's rules and errors, the metadata commit, and
//! opening/closing the partitions on their owner shards.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::metadata::{MetadataRecord, TopicMeta};
use crate::shard::ShardCtx;

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

/// The metadata writer (a poisoned lock is a broker bug, reported as Kafka's unknown error).
pub fn lock_store(
    ctx: &ShardCtx,
) -> Result<std::sync::MutexGuard<'_, crate::metadata::MetadataStore>, TopicError> {
    ctx.broker
        .store
        .lock()
        .map_err(|_| err(ResponseError::UnknownServerError, "metadata lock poisoned"))
}

/// SPEC T7: refuses `adding` partitions when this broker would then host more than
/// `max.broker.partitions` (internal topics do not count). Checked under the metadata
/// lock, so concurrent creations cannot both slip under the limit.
pub fn check_partition_limit(
    ctx: &ShardCtx,
    image: &crate::metadata::MetadataImage,
    adding: i32,
) -> Result<(), TopicError> {
    let Some(limit) = ctx.broker.config.max_broker_partitions else {
        return Ok(());
    };
    let in_use: usize = image
        .topics
        .values()
        .filter(|t| !t.internal)
        .map(|t| t.placement.len())
        .sum();
    if in_use + adding as usize > limit as usize {
        return Err(err(
            ResponseError::PolicyViolation,
            format!(
                "adding {adding} partitions would exceed this broker's partition limit: \
                 {in_use} of max.broker.partitions={limit} are in use; delete topics or \
                 use a larger flavor"
            ),
        ));
    }
    Ok(())
}

/// Brokers in the cluster (one node until the cluster issue).
pub const BROKERS: i16 = 1;

/// Validates, commits to metadata and opens the partitions. With `validate_only`, stops
/// after validation.
pub async fn create(
    ctx: &Rc<ShardCtx>,
    t: NewTopic,
    validate_only: bool,
) -> Result<TopicMeta, TopicError> {
    validate_name(&t.name)?;
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&t.partitions) {
        return Err(err(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be in 1..{PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    if t.replication_factor < 1 || t.replication_factor > BROKERS {
        return Err(err(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} must be in 1..{BROKERS} (brokers available: {BROKERS})",
                t.replication_factor
            ),
        ));
    }
    ctx.broker
        .config
        .log_config(&t.configs)
        .map_err(|m| err(ResponseError::InvalidConfig, m))?;
    let meta = {
        let mut store = lock_store(ctx)?;
        if store.image().topic(&t.name).is_some() {
            return Err(err(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        check_partition_limit(ctx, store.image(), t.partitions)?;
        let placement = store
            .image()
            .place(t.partitions as usize, ctx.broker.shard_count());
        let meta = TopicMeta {
            name: t.name.clone(),
            id: Uuid::new_v4(),
            placement,
            configs: t.configs,
            internal: false,
        };
        if validate_only {
            return Ok(meta);
        }
        store
            .commit(&[MetadataRecord::TopicCreated(meta.clone())])
            .map_err(|e| err(ResponseError::KafkaStorageError, format!("metadata: {e}")))?;
        meta
    };
    open_partitions(ctx, &meta, 0).await?;
    tracing::info!(topic = %meta.name, partitions = meta.placement.len(), "created topic");
    Ok(meta)
}

/// Opens partitions `from..` of `meta` on their owner shards and waits for all.
pub async fn open_partitions(
    ctx: &Rc<ShardCtx>,
    meta: &TopicMeta,
    from: usize,
) -> Result<(), TopicError> {
    let opens = meta
        .placement
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, &shard)| {
            let name = meta.name.clone();
            ctx.on_shard(shard, move |c| async move {
                c.open_partition(&name, i as i32).await.map(|_| ())
            })
        });
    for r in join_all(opens).await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(m)) => return Err(err(ResponseError::KafkaStorageError, m)),
            Err(e) => return Err(err(ResponseError::UnknownServerError, e.to_string())),
        }
    }
    Ok(())
}

/// Deletes a topic: metadata first (clients stop seeing it), then the partitions.
pub async fn delete(ctx: &Rc<ShardCtx>, name: &str) -> Result<TopicMeta, TopicError> {
    let meta = {
        let mut store = lock_store(ctx)?;
        let Some(meta) = store.image().topic(name).cloned() else {
            return Err(err(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        };
        if meta.internal {
            return Err(err(
                ResponseError::InvalidTopicException,
                format!("topic '{name}' is internal"),
            ));
        }
        store
            .commit(&[MetadataRecord::TopicDeleted {
                name: name.to_owned(),
            }])
            .map_err(|e| err(ResponseError::KafkaStorageError, format!("metadata: {e}")))?;
        meta
    };
    let deletes = meta.placement.iter().enumerate().map(|(i, &shard)| {
        let name = meta.name.clone();
        ctx.on_shard(shard, move |c| async move {
            c.delete_partition(&name, i as i32)
        })
    });
    for r in join_all(deletes).await {
        if let Ok(Err(m)) = r {
            tracing::warn!(topic = %name, error = %m, "deleting partition files failed");
        }
    }
    tracing::info!(topic = %name, "deleted topic");
    Ok(meta)
}

/// Replaces a topic's config overrides (AlterConfigs / IncrementalAlterConfigs): validated,
/// committed to metadata, then applied to the open logs on their owner shards.
pub async fn set_configs(
    ctx: &Rc<ShardCtx>,
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), TopicError>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let meta = {
        let mut store = lock_store(ctx)?;
        let Some(mut meta) = store.image().topic(name).cloned() else {
            return Err(err(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        };
        edit(&mut meta.configs)?;
        ctx.broker
            .config
            .log_config(&meta.configs)
            .map_err(|m| err(ResponseError::InvalidConfig, m))?;
        if validate_only {
            return Ok(());
        }
        store
            .commit(&[MetadataRecord::TopicConfigChanged {
                name: name.to_owned(),
                configs: meta.configs.clone(),
            }])
            .map_err(|e| err(ResponseError::KafkaStorageError, format!("metadata: {e}")))?;
        meta
    };
    let updates = meta.placement.iter().enumerate().map(|(i, &shard)| {
        let (name, configs) = (meta.name.clone(), meta.configs.clone());
        ctx.on_shard(shard, move |c| async move {
            if let (Some(p), Ok(cfg)) = (
                c.partition(&name, i as i32),
                c.broker.config.log_config(&configs),
            ) {
                p.log.log_mut().update_config(cfg);
            }
        })
    });
    join_all(updates).await;
    tracing::info!(topic = %name, configs = ?meta.configs, "altered topic configs");
    Ok(())
}
