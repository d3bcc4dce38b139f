//! DeleteAcls (key 31): removes every ACL binding each filter matches, through the
//! controller, and answers with the bindings each filter removed. Needs ALTER on the
//! cluster.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{ApiKey, DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use super::describe_acls::NO_AUTHORIZER;
use crate::cluster::controller::{Answer, ControllerRequest};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{self, AclFilter};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DeleteAclsRequest = protocol::decode_body(req.body.clone(), v)?;
    let failed = |code: ResponseError, message: &str| {
        body.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message.to_owned())))
            })
            .collect()
    };
    let results = if !ctx.broker.config.authorizer.enabled {
        failed(ResponseError::SecurityDisabled, NO_AUTHORIZER)
    } else if !ctx.broker.authorize_cluster(&req.session, acl::op::ALTER) {
        failed(
            ResponseError::ClusterAuthorizationFailed,
            "not authorized to alter ACLs",
        )
    } else {
        let filters: Vec<AclFilter> = body
            .filters
            .iter()
            .map(|f| AclFilter {
                resource_type: f.resource_type_filter,
                name: f.resource_name_filter.as_ref().map(|n| n.to_string()),
                pattern: if v == 0 {
                    acl::pattern::LITERAL
                } else {
                    f.pattern_type_filter
                },
                principal: f.principal_filter.as_ref().map(|p| p.to_string()),
                host: f.host_filter.as_ref().map(|h| h.to_string()),
                operation: f.operation,
                permission: f.permission_type,
            })
            .collect();
        match ctx.broker.cluster.submit(ControllerRequest::DeleteAcls { filters }).await {
            Ok((_, Answer::AclsDeleted(matched))) => matched
                .into_iter()
                .map(|acls| {
                    for b in &acls {
                        tracing::info!(target: "ringmq::audit", principal = %req.session.principal(), acl = ?b, "ACL deleted");
                    }
                    DeleteAclsFilterResult::default().with_matching_acls(
                        acls.into_iter()
                            .map(|b| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(b.resource_type)
                                    .with_resource_name(StrBytes::from_string(b.name))
                                    .with_pattern_type(b.pattern)
                                    .with_principal(StrBytes::from_string(b.principal))
                                    .with_host(StrBytes::from_string(b.host))
                                    .with_operation(b.operation)
                                    .with_permission_type(b.permission)
                            })
                            .collect(),
                    )
                })
                .collect(),
            Ok(_) => failed(ResponseError::UnknownServerError, "unexpected controller answer"),
            Err(e) => failed(e.code, &e.message),
        }
    };
    let resp = DeleteAclsResponse::default().with_filter_results(results);
    protocol::single(ApiKey::DeleteAcls, v, req.correlation_id(), &resp)
}
