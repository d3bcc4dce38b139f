//! OffsetDelete (key 47): deletes a group's committed offsets for some partitions by
//! writing tombstones to `__consumer_offsets`. While the group has members the broker
//! refuses with GROUP_SUBSCRIBED_TO_TOPIC (Kafka refuses only for subscribed topics;
//! ringmqd does not decode subscriptions, so it refuses for any topic of an active group).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};

use super::Request;
use crate::coordinator::offsets::{self, OFFSETS_TOPIC};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};
use crate::storage::now_ms;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: OffsetDeleteRequest = protocol::decode_body(req.body.clone(), v)?;
    let group = body.group_id.0.as_str().to_owned();
    if !ctx
        .broker
        .authorize(&req.session, op::DELETE, resource::GROUP, &group)
    {
        let resp = OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
        return protocol::single(ApiKey::OffsetDelete, v, req.correlation_id(), &resp);
    }
    let wanted: Vec<(String, i32)> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str().to_owned(), p.partition_index))
        })
        .collect();
    let result = ctx
        .on_coordinator(&group.clone(), move |c| async move {
            if c.groups
                .borrow()
                .group(&group)
                .is_some_and(|g| !g.members.is_empty())
            {
                return Err(ResponseError::GroupSubscribedToTopic);
            }
            let present: Vec<(String, i32)> = {
                let cache = c.offsets.borrow();
                if cache.group(&group).is_none() {
                    return Err(ResponseError::GroupIdNotFound);
                }
                wanted
                    .iter()
                    .filter(|(t, p)| cache.get(&group, t, *p).is_some())
                    .cloned()
                    .collect()
            };
            if !present.is_empty() {
                let part = c
                    .partition(OFFSETS_TOPIC, offsets::partition_for(&group))
                    .ok_or(ResponseError::CoordinatorNotAvailable)?;
                let now = now_ms();
                part.append(offsets::tombstone_batch(&group, &present, now), now)
                    .await
                    .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
                let mut cache = c.offsets.borrow_mut();
                for (t, p) in &present {
                    cache.remove(&group, t, *p);
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(Err);
    let resp = match result {
        Err(e)
            if e == ResponseError::GroupIdNotFound
                || e == ResponseError::CoordinatorNotAvailable =>
        {
            OffsetDeleteResponse::default().with_error_code(e.code())
        }
        outcome => {
            let code = outcome.err().map_or(0, |e| e.code());
            let topics = body
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    };
    protocol::single(ApiKey::OffsetDelete, v, req.correlation_id(), &resp)
}
