//! OffsetFetch (key 9): committed offsets of a group (v8+: of several groups), read from
//! the cache of the shard that owns each group's `__consumer_offsets` partition. A
//! partition with no commit answers offset -1, as in Kafka. With `require_stable` (v7+,
//! KIP-447) a partition whose offset an open transaction has committed answers
//! UNSTABLE_OFFSET_COMMIT (the client retries until the transaction ends).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::coordinator::offsets::Committed;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

/// `(topic, partition, committed, unstable)` answers for one group.
type Answers = Vec<(String, i32, Option<Committed>, bool)>;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: OffsetFetchRequest = protocol::decode_body(req.body.clone(), v)?;
    let resp = if v >= 8 {
        let image = ctx.broker.image();
        let mut groups = Vec::new();
        for g in &body.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| {
                        let name = if v >= 10 {
                            image
                                .topic_by_id(t.topic_id)
                                .map(|m| m.name.clone())
                                .unwrap_or_default()
                        } else {
                            t.name.0.as_str().to_owned()
                        };
                        (name, t.partition_indexes.clone())
                    })
                    .collect()
            });
            let group = g.group_id.0.as_str().to_owned();
            let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(
                match lookup(ctx, &req.session, &group, wanted, body.require_stable).await {
                    Ok(answers) => r.with_topics(group_topics(v, &image, answers)),
                    Err(e) => r.with_error_code(e.code()),
                },
            );
        }
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let group = body.group_id.0.as_str().to_owned();
        let wanted = body.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                .collect()
        });
        let stable = v >= 7 && body.require_stable;
        match lookup(ctx, &req.session, &group, wanted, stable).await {
            Ok(answers) => OffsetFetchResponse::default().with_topics(legacy_topics(v, answers)),
            // The top-level error_code exists from v2.
            Err(e) if v >= 2 => OffsetFetchResponse::default().with_error_code(e.code()),
            Err(_) => OffsetFetchResponse::default(),
        }
    };
    protocol::single(ApiKey::OffsetFetch, v, req.correlation_id(), &resp)
}

/// The committed offsets asked for (`None`: every partition the group committed).
async fn lookup(
    ctx: &Rc<ShardCtx>,
    session: &crate::security::Session,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Answers, ResponseError> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    // DESCRIBE on the group; the topics a principal may not describe are left out.
    if !ctx
        .broker
        .authorize(session, op::DESCRIBE, resource::GROUP, group)
    {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    let name = group.to_owned();
    ctx.on_coordinator(group, move |c| async move {
        let group = name;
        let cache = c.offsets.borrow();
        match wanted {
            Some(list) => list
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .map(|(t, p)| {
                    let c = cache.get(&group, &t, p).cloned();
                    let unstable = require_stable && cache.has_pending(&group, &t, p);
                    (t, p, c, unstable)
                })
                .collect(),
            None => cache
                .group(&group)
                .map(|g| {
                    g.iter()
                        .map(|((t, p), c)| {
                            let unstable = require_stable && cache.has_pending(&group, t, *p);
                            (t.clone(), *p, Some(c.clone()), unstable)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    })
    .await
    .map(|answers: Answers| {
        answers
            .into_iter()
            .filter(|(t, ..)| {
                ctx.broker
                    .authorize(session, op::DESCRIBE, resource::TOPIC, t)
            })
            .collect()
    })
    .map_err(|_| ResponseError::CoordinatorNotAvailable)
}

fn unstable_code(unstable: bool) -> i16 {
    if unstable {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

fn partition_fields(v: i16, c: Option<&Committed>) -> (i64, i32, String) {
    let epoch = if v >= 5 {
        c.map_or(-1, |c| c.leader_epoch)
    } else {
        -1
    };
    (
        c.map_or(-1, |c| c.offset),
        epoch,
        c.map_or_else(String::new, |c| c.metadata.clone()),
    )
}

fn legacy_topics(v: i16, answers: Answers) -> Vec<OffsetFetchResponseTopic> {
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    for (t, p, c, unstable) in answers {
        let (offset, epoch, metadata) = partition_fields(v, c.as_ref());
        let pr = OffsetFetchResponsePartition::default()
            .with_error_code(unstable_code(unstable))
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(epoch)
            .with_metadata(Some(StrBytes::from_string(metadata)));
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == t => last.partitions.push(pr),
            _ => topics.push(
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t)))
                    .with_partitions(vec![pr]),
            ),
        }
    }
    topics
}

fn group_topics(
    v: i16,
    image: &crate::metadata::MetadataImage,
    answers: Answers,
) -> Vec<OffsetFetchResponseTopics> {
    let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
    for (t, p, c, unstable) in answers {
        let (offset, epoch, metadata) = partition_fields(v, c.as_ref());
        let pr = OffsetFetchResponsePartitions::default()
            .with_error_code(unstable_code(unstable))
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(epoch)
            .with_metadata(Some(StrBytes::from_string(metadata)));
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == t => last.partitions.push(pr),
            _ => {
                let mut entry = OffsetFetchResponseTopics::default().with_partitions(vec![pr]);
                // v10 identifies topics by id only.
                if v >= 10 {
                    entry = entry.with_topic_id(image.topic(&t).map(|m| m.id).unwrap_or_default());
                }
                topics.push(entry.with_name(TopicName(StrBytes::from_string(t))));
            }
        }
    }
    topics
}
