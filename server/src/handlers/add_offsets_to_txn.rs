//! AddOffsetsToTxn (key 25): the group's `__consumer_offsets` partition joins the open
//! transaction, so that offsets committed in it (TxnOffsetCommit) are decided with it.
//! WRITE on the transactional id and READ on the group, as Kafka checks.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AddOffsetsToTxnRequest = protocol::decode_body(req.body.clone(), v)?;
    let id = body.transactional_id.0.as_str().to_owned();
    let group = body.group_id.0.as_str().to_owned();
    let result = if !ctx
        .broker
        .authorize(&req.session, op::WRITE, resource::TRANSACTIONAL_ID, &id)
    {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !ctx
        .broker
        .authorize(&req.session, op::READ, resource::GROUP, &group)
    {
        Err(ResponseError::GroupAuthorizationFailed)
    } else {
        let offsets_partition = (
            crate::metadata::OFFSETS_TOPIC.to_owned(),
            crate::coordinator::offsets::partition_for(&group),
        );
        let (pid, epoch) = (body.producer_id.0, body.producer_epoch);
        let key = id.clone();
        ctx.on_txn_coordinator(&id, move |c| async move {
            crate::transactions::add_partitions(&c, &key, pid, epoch, vec![offsets_partition]).await
        })
        .await
        .and_then(|r| r)
    };
    let resp =
        AddOffsetsToTxnResponse::default().with_error_code(result.err().map_or(0, |e| e.code()));
    protocol::single(ApiKey::AddOffsetsToTxn, v, req.correlation_id(), &resp)
}
