//! DescribeCluster (key 60): the cluster id, the active controller and the live brokers.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;

pub fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeClusterRequest = protocol::decode_body(req.body.clone(), v)?;
    let c = &ctx.broker.config;
    let image = ctx.broker.image();
    let listener = req.session.listener_name();
    let brokers = image
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(host.to_owned()))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect();
    let controller = ctx.broker.cluster.client_controller_id(&ctx.broker.image());
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(c.cluster_id.clone()))
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(crate::authorized_ops::reported(
            body.include_cluster_authorized_operations,
            crate::authorized_ops::CLUSTER,
        ));
    // endpoint_type (1 = brokers) exists from v1.
    if v >= 1 {
        resp = resp.with_endpoint_type(1);
    }
    protocol::single(ApiKey::DescribeCluster, v, req.correlation_id(), &resp)
}
