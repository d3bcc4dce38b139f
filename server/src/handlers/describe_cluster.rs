//! DescribeCluster (key 60): the cluster id, the active controller and the live brokers;
//! on the controller listener (`--bootstrap-controller`, KIP-919, endpoint type 2) the
//! controllers instead, with the active one as the controller id. A request for the other
//! kind of endpoint is refused as Kafka refuses it (MISMATCHED_ENDPOINT_TYPE, or
//! INVALID_REQUEST in v0, which cannot name the type).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

/// KIP-919's endpoint types.
const BROKERS: i8 = 1;
const CONTROLLERS: i8 = 2;

fn endpoint_name(t: i8) -> &'static str {
    if t == CONTROLLERS {
        "CONTROLLER"
    } else {
        "BROKER"
    }
}

pub fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeClusterRequest = protocol::decode_body(req.body.clone(), v)?;
    let served = if req.session.listener.controller {
        CONTROLLERS
    } else {
        BROKERS
    };
    let refusal = if body.endpoint_type != BROKERS && body.endpoint_type != CONTROLLERS {
        Some((
            ResponseError::UnsupportedEndpointType,
            format!("Unsupported endpoint type {}", body.endpoint_type),
        ))
    } else if body.endpoint_type != served {
        Some((
            ResponseError::MismatchedEndpointType,
            format!(
                "The request was sent to an endpoint of type {}, but we wanted an endpoint of type {}",
                endpoint_name(served),
                endpoint_name(body.endpoint_type)
            ),
        ))
    } else {
        None
    };
    if let Some((error, message)) = refusal {
        let error = if v == 0 {
            ResponseError::InvalidRequest
        } else {
            error
        };
        let resp = DescribeClusterResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_controller_id(BrokerId(-1));
        return protocol::single(ApiKey::DescribeCluster, v, req.correlation_id(), &resp);
    }
    let (controller, nodes) = if served == CONTROLLERS {
        controllers(ctx)
    } else {
        brokers(ctx, &req)
    };
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(ctx.broker.config.cluster_id.clone()))
        .with_controller_id(BrokerId(controller))
        .with_brokers(nodes)
        .with_cluster_authorized_operations(crate::handlers::authorized_ops::cluster(
            body.include_cluster_authorized_operations,
            &ctx.broker,
            &req.session,
        ));
    // endpoint_type exists from v1.
    if v >= 1 {
        resp = resp.with_endpoint_type(served);
    }
    protocol::single(ApiKey::DescribeCluster, v, req.correlation_id(), &resp)
}

/// The live brokers' endpoints on the listener the request came in on, and the
/// controller id clients are told.
fn brokers(ctx: &ShardCtx, req: &Request) -> (i32, Vec<DescribeClusterBroker>) {
    let image = ctx.broker.image();
    let listener = req.session.listener_name();
    let brokers = image
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some(node(b.id, host, port, b.rack.clone()))
        })
        .collect();
    (ctx.broker.cluster.client_controller_id(&image), brokers)
}

/// The quorum's controllers (voters and observers) at their controller addresses, and
/// the active one (-1 during an election).
fn controllers(ctx: &ShardCtx) -> (i32, Vec<DescribeClusterBroker>) {
    let quorum = ctx.broker.cluster.quorum();
    let nodes = quorum
        .addresses
        .iter()
        .filter_map(|(id, addr)| {
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(node(*id, host, port.parse().ok()?, None))
        })
        .collect();
    (quorum.leader, nodes)
}

fn node(id: i32, host: &str, port: u16, rack: Option<String>) -> DescribeClusterBroker {
    DescribeClusterBroker::default()
        .with_broker_id(BrokerId(id))
        .with_host(StrBytes::from_string(host.to_owned()))
        .with_port(i32::from(port))
        .with_rack(rack.map(StrBytes::from_string))
}
