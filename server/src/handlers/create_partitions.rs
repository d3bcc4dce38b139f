//! CreatePartitions (key 37): grows a topic to `count` partitions (never shrinks, SPEC T3),
//! the controller placing the new ones' replicas as it does a new topic's, or on the
//! brokers the request names for each (`kafka-topics --alter --replica-assignment`).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::handlers::topics;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: CreatePartitionsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut results = Vec::new();
    for t in body.topics {
        let name = t.name.0.as_str().to_owned();
        let outcome = if ctx
            .broker
            .authorize(&req.session, op::ALTER, resource::TOPIC, &name)
        {
            let assignment = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|p| p.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            topics::grow(ctx, &name, t.count, assignment, body.validate_only).await
        } else {
            Err(crate::handlers::topics::TopicError {
                code: ResponseError::TopicAuthorizationFailed,
                message: "not authorized to alter the topic".into(),
            })
        };
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err(e) = outcome {
            r = r
                .with_error_code(e.code.code())
                .with_error_message(Some(StrBytes::from_string(e.message)));
        }
        results.push(r);
    }
    let resp = CreatePartitionsResponse::default().with_results(results);
    protocol::single(ApiKey::CreatePartitions, v, req.correlation_id(), &resp)
}
