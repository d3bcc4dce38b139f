//! DeleteTopics (key 20): by name (and by topic id from v6).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::handlers::topics;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DeleteTopicsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = body
        .topic_names
        .iter()
        .map(|n| (Some(n.0.as_str().to_owned()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        body.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.as_str().to_owned()), t.topic_id)),
    );
    let mut results = Vec::new();
    for (name, id) in targets {
        let image = ctx.broker.image();
        let resolved = name
            .clone()
            .or_else(|| image.topic_by_id(id).map(|t| t.name.clone()));
        let mut r = DeletableTopicResult::default().with_name(
            resolved
                .clone()
                .map(|n| TopicName(StrBytes::from_string(n))),
        );
        let may_delete = |n: &str| {
            ctx.broker
                .authorize(&req.session, op::DELETE, resource::TOPIC, n)
        };
        match resolved {
            None => r = r.with_error_code(ResponseError::UnknownTopicId.code()),
            Some(n) if !may_delete(&n) => {
                r = r.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                // error_message exists from v5; Kafka sends its error's own text.
                if v >= 5 {
                    r = r.with_error_message(Some(StrBytes::from_static_str(
                        "Topic authorization failed.",
                    )));
                }
            }
            Some(n) => match topics::delete(ctx, &n).await {
                // topic_id exists from v6.
                Ok(meta) if v >= 6 => r = r.with_topic_id(meta.id),
                Ok(_) => {}
                Err(e) => {
                    r = r.with_error_code(e.code.code());
                    // error_message exists from v5.
                    if v >= 5 {
                        r = r.with_error_message(Some(StrBytes::from_string(e.message)));
                    }
                }
            },
        }
        results.push(r);
    }
    let resp = DeleteTopicsResponse::default().with_responses(results);
    protocol::single(ApiKey::DeleteTopics, v, req.correlation_id(), &resp)
}
