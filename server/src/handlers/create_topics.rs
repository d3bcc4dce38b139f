//! CreateTopics (key 19): validates each topic (name, partitions, replication factor,
//! configs), creates it or reports the Kafka error per topic.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;
use crate::topics::{self, NewTopic};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: CreateTopicsRequest = protocol::decode_body(req.body.clone(), v)?;
    let cfg = &ctx.broker.config;
    let mut results = Vec::new();
    for t in body.topics {
        let name = t.name.0.as_str().to_owned();
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(value) = &c.value {
                configs.insert(c.name.as_str().to_owned(), value.as_str().to_owned());
            }
        }
        let new = NewTopic {
            name: name.clone(),
            partitions: if t.num_partitions == -1 {
                cfg.num_partitions
            } else {
                t.num_partitions
            },
            replication_factor: if t.replication_factor == -1 {
                cfg.default_replication_factor.min(topics::BROKERS)
            } else {
                t.replication_factor
            },
            configs,
        };
        let (partitions, rf) = (new.partitions, new.replication_factor);
        // Kafka answers a null error_message when there is no error (the codec's default is "").
        let mut result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_error_message(None);
        if !t.assignments.is_empty() {
            result = result
                .with_error_code(kafka_protocol::ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "manual replica assignment is not supported yet",
                )));
        } else {
            match topics::create(ctx, new, body.validate_only).await {
                Ok(meta) => {
                    // topic_id exists from v7, the partition counts from v5.
                    if v >= 7 {
                        result = result.with_topic_id(meta.id);
                    }
                    if v >= 5 {
                        result = result
                            .with_num_partitions(partitions)
                            .with_replication_factor(rf);
                    }
                }
                Err(e) => {
                    result = result
                        .with_error_code(e.code.code())
                        .with_error_message(Some(StrBytes::from_string(e.message)));
                }
            }
        }
        results.push(result);
    }
    let resp = CreateTopicsResponse::default().with_topics(results);
    protocol::single(ApiKey::CreateTopics, v, req.correlation_id(), &resp)
}
