//! DescribeTransactions (key 65): the coordinator's view of transactional ids it
//! coordinates — state, producer id and epoch, timeout, start time and the partitions of
//! the open transaction (`kafka-transactions describe`). DESCRIBE on each id.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::coordinator::transactions::TxnMetadata;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeTransactionsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut states = Vec::new();
    for id in &body.transactional_ids {
        let key = id.0.as_str().to_owned();
        let found =
            if ctx
                .broker
                .authorize(&req.session, op::DESCRIBE, resource::TRANSACTIONAL_ID, &key)
            {
                let k = key.clone();
                ctx.on_txn_coordinator(&key, move |c| async move {
                    c.txns.borrow().get(&k).map(|e| e.meta.clone())
                })
                .await
                .and_then(|m| m.ok_or(ResponseError::TransactionalIdNotFound))
            } else {
                Err(ResponseError::TransactionalIdAuthorizationFailed)
            };
        let s = TransactionState::default().with_transactional_id(id.clone());
        states.push(match found {
            Ok(m) => describe(s, &m),
            Err(e) => s
                .with_error_code(e.code())
                .with_transaction_state(StrBytes::from_static_str(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1),
        });
    }
    let resp = DescribeTransactionsResponse::default().with_transaction_states(states);
    protocol::single(ApiKey::DescribeTransactions, v, req.correlation_id(), &resp)
}

fn describe(s: TransactionState, m: &TxnMetadata) -> TransactionState {
    let mut topics: Vec<TopicData> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == t => last.partitions.push(*p),
            _ => topics.push(
                TopicData::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    s.with_transaction_state(StrBytes::from_static_str(m.status.name()))
        .with_transaction_timeout_ms(m.timeout_ms)
        .with_transaction_start_time_ms(m.start_ms)
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_topics(topics)
}
