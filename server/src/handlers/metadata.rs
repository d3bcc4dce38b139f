//! Metadata (key 3): the live brokers (their advertised listeners), the active
//! controller, and topics with each partition's leader, leader epoch, replicas, ISR and
//! offline replicas (those on fenced brokers). Unknown topics are created with the
//! defaults when both the request and `auto.create.topics.enable` allow it (replication
//! factor capped by the live brokers) and the principal may create them; as in Kafka, the
//! request that creates a topic answers it UNKNOWN_TOPIC_OR_PARTITION without partitions,
//! and one without CREATE rights gets TOPIC_AUTHORIZATION_FAILED.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Request;
use crate::handlers::authorized_ops;
use crate::handlers::topics::{self, NewTopic};
use crate::metadata::TopicMeta;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: MetadataRequest = protocol::decode_body(req.body.clone(), v)?;
    let image = ctx.broker.image();
    let cfg = &ctx.broker.config;
    let mut topics = Vec::new();
    // Topics the principal may not describe are left out of "all topics", and named
    // ones are answered TOPIC_AUTHORIZATION_FAILED whether they exist or not.
    let session = &req.session;
    let may_describe = |name: &str| {
        ctx.broker
            .authorize(session, op::DESCRIBE, resource::TOPIC, name)
    };
    let visible = || {
        image
            .topics
            .values()
            .filter(|t| may_describe(&t.name))
            .map(|t| topic_entry(ctx, t))
    };
    match body.topics {
        // v0: an empty list means all topics; v1+: null means all.
        None => topics.extend(visible()),
        Some(list) if list.is_empty() && v == 0 => topics.extend(visible()),
        Some(list) => {
            let auto = body.allow_auto_topic_creation && cfg.auto_create_topics;
            for requested in list {
                let by_id = requested.name.is_none() && !requested.topic_id.is_nil();
                let entry = match (&requested.name, by_id) {
                    (_, true) => match image.topic_by_id(requested.topic_id) {
                        Some(t) if !may_describe(&t.name) => error_entry(
                            None,
                            requested.topic_id,
                            ResponseError::TopicAuthorizationFailed,
                        ),
                        Some(t) => topic_entry(ctx, t),
                        None => {
                            error_entry(None, requested.topic_id, ResponseError::UnknownTopicId)
                        }
                    },
                    (Some(name), false) if !may_describe(name.as_str()) => error_entry(
                        Some(name.as_str()),
                        Uuid::nil(),
                        ResponseError::TopicAuthorizationFailed,
                    ),
                    // A topic to auto-create needs CREATE on the cluster or on the topic;
                    // without it Kafka answers TOPIC_AUTHORIZATION_FAILED.
                    (Some(name), false)
                        if auto
                            && image.topic(name.as_str()).is_none()
                            && !ctx.broker.authorize_cluster(session, op::CREATE)
                            && !ctx.broker.authorize(
                                session,
                                op::CREATE,
                                resource::TOPIC,
                                name.as_str(),
                            ) =>
                    {
                        error_entry(
                            Some(name.as_str()),
                            Uuid::nil(),
                            ResponseError::TopicAuthorizationFailed,
                        )
                    }
                    (Some(name), false) => named_topic(ctx, name.as_str(), auto, &image).await,
                    (None, false) => error_entry(None, Uuid::nil(), ResponseError::InvalidRequest),
                };
                topics.push(entry);
            }
        }
    }
    let image = ctx.broker.image();
    // Only unfenced brokers, as Kafka: clients wait for a broker until it has caught up.
    // Each with its address on the listener this client came in through.
    let listener = req.session.listener_name();
    let brokers: Vec<MetadataResponseBroker> = image
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(host.to_owned()))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if v >= 1 {
        let controller = ctx.broker.cluster.client_controller_id(&ctx.broker.image());
        resp = resp.with_controller_id(BrokerId(controller));
    }
    // topic_authorized_operations exists from v8 (the cluster's only v8-v10).
    if v >= 8 {
        let asked = body.include_topic_authorized_operations;
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = t.name.as_ref().map_or("", |n| n.0.as_str());
            t.topic_authorized_operations =
                authorized_ops::topic(asked, &ctx.broker, &req.session, name);
        }
    }
    if (8..=10).contains(&v) {
        resp.cluster_authorized_operations = authorized_ops::cluster(
            body.include_cluster_authorized_operations,
            &ctx.broker,
            &req.session,
        );
    }
    if v >= 2 {
        resp = resp.with_cluster_id(Some(StrBytes::from_string(cfg.cluster_id.clone())));
    }
    if v < 7 {
        for t in &mut resp.topics {
            for p in &mut t.partitions {
                p.leader_epoch = -1;
            }
        }
    }
    if v < 10 {
        for t in &mut resp.topics {
            t.topic_id = Uuid::nil();
        }
    }
    protocol::single(ApiKey::Metadata, v, req.correlation_id(), &resp)
}

async fn named_topic(
    ctx: &Rc<ShardCtx>,
    name: &str,
    auto: bool,
    image: &crate::metadata::MetadataImage,
) -> MetadataResponseTopic {
    if let Some(t) = image.topic(name) {
        return topic_entry(ctx, t);
    }
    if let Err(e) = topics::validate_name(name) {
        return error_entry(Some(name), Uuid::nil(), e.code);
    }
    if !auto {
        return error_entry(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    let cfg = &ctx.broker.config;
    let new = NewTopic {
        name: name.to_owned(),
        partitions: cfg.num_partitions,
        replication_factor: cfg
            .default_replication_factor
            .min(topics::live_brokers(ctx)),
        configs: BTreeMap::new(),
    };
    // The request that triggers the creation answers the topic as not there yet, with no
    // partitions, as Kafka does (kafka-go relies on it); the client's next Metadata finds
    // it, created by then.
    match topics::create(ctx, new, None, false).await {
        // Or another request created it meanwhile.
        Ok(_) => error_entry(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        ),
        Err(e) if e.code == ResponseError::TopicAlreadyExists => error_entry(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        ),
        // Clients retry Metadata every few hundred ms: a limit they hit is the client's
        // business (it sees the error code), not a broker fault.
        Err(e) if e.code == ResponseError::PolicyViolation => {
            tracing::info!(topic = name, error = %e.message, "auto-creating topic refused");
            error_entry(Some(name), Uuid::nil(), e.code)
        }
        Err(e) => {
            tracing::warn!(topic = name, error = %e.message, "auto-creating topic failed");
            error_entry(Some(name), Uuid::nil(), e.code)
        }
    }
}

pub fn topic_entry(ctx: &ShardCtx, t: &TopicMeta) -> MetadataResponseTopic {
    let image = ctx.broker.image();
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let offline = image.offline_replicas(s);
            let error = if s.leader == crate::metadata::NO_LEADER {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(s.leader))
                .with_leader_epoch(s.leader_epoch)
                .with_replica_nodes(ids(&s.replicas))
                .with_isr_nodes(ids(&s.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(t.internal)
        .with_partitions(partitions)
}

fn error_entry(name: Option<&str>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_owned()))))
        .with_topic_id(id)
}
