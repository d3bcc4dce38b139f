//! CreateAcls (key 30): adds ACL bindings through the controller (the metadata log), so
//! every broker enforces them. Needs ALTER on the cluster; each binding is checked as
//! Kafka checks it and answered on its own.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use super::describe_acls::NO_AUTHORIZER;
use crate::cluster::controller::ControllerRequest;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{self, AclBinding};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: CreateAclsRequest = protocol::decode_body(req.body.clone(), v)?;
    let fail = |code: ResponseError, message: String| {
        AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let mut results: Vec<Option<AclCreationResult>> = vec![None; body.creations.len()];
    let mut wanted = Vec::new();
    for (i, c) in body.creations.iter().enumerate() {
        let b = AclBinding {
            resource_type: c.resource_type,
            name: c.resource_name.to_string(),
            // v0 has no pattern type: literal.
            pattern: if v == 0 {
                acl::pattern::LITERAL
            } else {
                c.resource_pattern_type
            },
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        };
        if !ctx.broker.config.authorizer.enabled {
            results[i] = Some(fail(ResponseError::SecurityDisabled, NO_AUTHORIZER.into()));
        } else if !ctx.broker.authorize_cluster(&req.session, acl::op::ALTER) {
            results[i] = Some(fail(
                ResponseError::ClusterAuthorizationFailed,
                "not authorized to alter ACLs".into(),
            ));
        } else if let Err((code, message)) = acl::validate(&b) {
            results[i] = Some(fail(code, message));
        } else {
            wanted.push((i, b));
        }
    }
    if !wanted.is_empty() {
        let request = ControllerRequest::CreateAcls {
            acls: wanted.iter().map(|(_, b)| b.clone()).collect(),
        };
        let outcome = ctx.broker.cluster.submit(request).await;
        for (i, b) in wanted {
            results[i] = Some(match &outcome {
                Ok(_) => {
                    tracing::info!(target: "ringmq::audit", principal = %req.session.principal(), acl = ?b, "ACL created");
                    AclCreationResult::default()
                }
                Err(e) => fail(e.code, e.message.clone()),
            });
        }
    }
    let resp = CreateAclsResponse::default()
        .with_results(results.into_iter().map(Option::unwrap_or_default).collect());
    protocol::single(ApiKey::CreateAcls, v, req.correlation_id(), &resp)
}
