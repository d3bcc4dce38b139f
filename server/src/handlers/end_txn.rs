//! EndTxn (key 26): the producer commits or aborts its open transaction. The answer
//! comes once the decision is in `__transaction_state`; the markers follow (requests
//! for the id meanwhile answer CONCURRENT_TRANSACTIONS). WRITE on the transactional id.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: EndTxnRequest = protocol::decode_body(req.body.clone(), v)?;
    let id = body.transactional_id.0.as_str().to_owned();
    let result = if ctx
        .broker
        .authorize(&req.session, op::WRITE, resource::TRANSACTIONAL_ID, &id)
    {
        let (pid, epoch, commit) = (body.producer_id.0, body.producer_epoch, body.committed);
        let key = id.clone();
        ctx.on_txn_coordinator(&id, move |c| async move {
            crate::transactions::end_txn(&c, &key, pid, epoch, commit).await
        })
        .await
        .and_then(|r| r)
    } else {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    };
    let resp = EndTxnResponse::default().with_error_code(result.err().map_or(0, |e| e.code()));
    protocol::single(ApiKey::EndTxn, v, req.correlation_id(), &resp)
}
