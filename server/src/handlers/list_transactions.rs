//! ListTransactions (key 66): the transactional ids this broker coordinates, filtered by
//! state, producer id, how long they have been open (v1) and an id pattern (v2); only
//! ids the principal may DESCRIBE. `kafka-transactions list` asks every broker.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::coordinator::transactions::{TxnMetadata, TxnStatus};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};
use crate::storage::now_ms;

const STATES: [TxnStatus; 8] = [
    TxnStatus::Empty,
    TxnStatus::Ongoing,
    TxnStatus::PrepareCommit,
    TxnStatus::PrepareAbort,
    TxnStatus::CompleteCommit,
    TxnStatus::CompleteAbort,
    TxnStatus::Dead,
    TxnStatus::PrepareEpochFence,
];

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: ListTransactionsRequest = protocol::decode_body(req.body.clone(), v)?;
    let pattern = match body
        .transactional_id_pattern
        .as_ref()
        .filter(|p| v >= 2 && !p.is_empty())
    {
        Some(p) => match regex::Regex::new(&format!("^(?:{})$", p.as_str())) {
            Ok(r) => Some(r),
            Err(_) => {
                let resp = ListTransactionsResponse::default()
                    .with_error_code(ResponseError::InvalidRegularExpression.code());
                return protocol::single(ApiKey::ListTransactions, v, req.correlation_id(), &resp);
            }
        },
        None => None,
    };
    let unknown: Vec<StrBytes> = body
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let mut all: Vec<(String, TxnMetadata)> = Vec::new();
    for shard in 0..ctx.shard_count() {
        let ids = ctx
            .on_shard(shard, |c| async move {
                c.txns
                    .borrow()
                    .iter()
                    .map(|(id, e)| (id.clone(), e.meta.clone()))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        all.extend(ids);
    }
    let now = now_ms();
    let states = all
        .into_iter()
        .filter(|(id, m)| {
            (body.state_filters.is_empty()
                || body
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.status.name()))
                && (body.producer_id_filters.is_empty()
                    || body
                        .producer_id_filters
                        .contains(&ProducerId(m.producer_id)))
                && (v < 1
                    || body.duration_filter < 0
                    || (m.status == TxnStatus::Ongoing
                        && m.start_ms >= 0
                        && now - m.start_ms >= body.duration_filter))
                && pattern.as_ref().is_none_or(|r| r.is_match(id))
                && ctx
                    .broker
                    .authorize(&req.session, op::DESCRIBE, resource::TRANSACTIONAL_ID, id)
        })
        .map(|(id, m)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.status.name()))
        })
        .collect();
    let resp = ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states);
    protocol::single(ApiKey::ListTransactions, v, req.correlation_id(), &resp)
}
