//! DescribeAcls (key 29): the ACL bindings a filter matches, grouped by resource pattern.
//! Needs DESCRIBE on the cluster; SECURITY_DISABLED without an authorizer, as Kafka.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{ApiKey, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{self, AclFilter};

/// Kafka's answer when no authorizer is configured.
pub const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

pub fn handle(ctx: &ShardCtx, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeAclsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut resp = DescribeAclsResponse::default();
    if !ctx.broker.config.authorizer.enabled {
        resp.error_code = ResponseError::SecurityDisabled.code();
        resp.error_message = Some(StrBytes::from_static_str(NO_AUTHORIZER));
    } else if !ctx
        .broker
        .authorize_cluster(&req.session, acl::op::DESCRIBE)
    {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
    } else {
        let filter = AclFilter {
            resource_type: body.resource_type_filter,
            name: body.resource_name_filter.map(|n| n.to_string()),
            // v0 has no pattern type: literal resources only.
            pattern: if v == 0 {
                acl::pattern::LITERAL
            } else {
                body.pattern_type_filter
            },
            principal: body.principal_filter.map(|p| p.to_string()),
            host: body.host_filter.map(|h| h.to_string()),
            operation: body.operation,
            permission: body.permission_type,
        };
        let image = ctx.broker.image();
        let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
        for b in image.acls.iter().filter(|b| filter.matches(b)) {
            by_resource
                .entry((b.resource_type, b.name.clone(), b.pattern))
                .or_default()
                .push(
                    AclDescription::default()
                        .with_principal(StrBytes::from_string(b.principal.clone()))
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_operation(b.operation)
                        .with_permission_type(b.permission),
                );
        }
        resp.resources = by_resource
            .into_iter()
            .map(|((rt, name, pattern), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_pattern_type(pattern)
                    .with_acls(acls)
            })
            .collect();
    }
    protocol::single(ApiKey::DescribeAcls, v, req.correlation_id(), &resp)
}
