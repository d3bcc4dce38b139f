//! Kafka ACLs and the authorizer (SPEC S4). ACL bindings live in the metadata log, so
//! every broker holds them in its metadata snapshot and a shard authorizes a request
//! from the snapshot it already has: no lock, no hop. The rules are Kafka's
//! StandardAuthorizer's: `super.users` may do anything; a DENY that matches wins; an
//! ALLOW for the operation (or ALL, or one that implies it: READ, WRITE, DELETE and ALTER
//! imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows; a resource no ACL
//! matches at all follows `allow.everyone.if.no.acl.found`. Literal patterns match the
//! name (or every name when `*`), prefixed ones every name that starts with it; the
//! principal `User:*` and the host `*` match everyone.
//!
//! The seeds' simpler model (per user publish / subscribe on a topic, default
//! permissions for all users, the union, a topic without grants open to all) is this
//! model with `allow.everyone.if.no.acl.found=true`: publish is WRITE, subscribe READ,
//! "all users" the principal `User:*`.

use std::collections::HashSet;
use std::net::IpAddr;

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

/// ResourceType codes.
pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// PatternType codes.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// AclOperation codes.
pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// AclPermissionType codes.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The cluster resource's only name.
pub const CLUSTER_NAME: &str = "kafka-cluster";

pub use crate::metadata::security_records::AclBinding;

/// A DescribeAcls / DeleteAcls filter (`None` and the ANY codes match everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        let code = |want: i8, any: i8, got: i8| want == any || want == got;
        if !code(self.resource_type, resource::ANY, b.resource_type)
            || !code(self.operation, op::ANY, b.operation)
            || !code(self.permission, permission::ANY, b.permission)
        {
            return false;
        }
        if self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
        {
            return false;
        }
        match self.pattern {
            pattern::ANY => self.name.as_ref().is_none_or(|n| *n == b.name),
            // MATCH: the ACLs that apply to the named resource.
            pattern::MATCH => self.name.as_ref().is_none_or(|n| pattern_applies(b, n)),
            p => p == b.pattern && self.name.as_ref().is_none_or(|n| *n == b.name),
        }
    }
}

/// Whether `b`'s resource pattern covers the resource `name`.
fn pattern_applies(b: &AclBinding, name: &str) -> bool {
    match b.pattern {
        pattern::LITERAL => b.name == name || b.name == "*",
        pattern::PREFIXED => name.starts_with(&b.name),
        _ => false,
    }
}

/// Why CreateAcls refuses a binding (Kafka's checks).
pub fn validate(b: &AclBinding) -> Result<(), (ResponseError, String)> {
    let bad = |m: &str| Err((ResponseError::InvalidRequest, m.to_owned()));
    if !matches!(
        b.resource_type,
        resource::TOPIC
            | resource::GROUP
            | resource::CLUSTER
            | resource::TRANSACTIONAL_ID
            | resource::DELEGATION_TOKEN
            | resource::USER
    ) {
        return bad("the resource type must be a concrete type");
    }
    if !matches!(b.pattern, pattern::LITERAL | pattern::PREFIXED) {
        return bad("the pattern type must be LITERAL or PREFIXED");
    }
    if b.name.is_empty() {
        return bad("the resource name must not be empty");
    }
    if b.resource_type == resource::CLUSTER && b.name != CLUSTER_NAME {
        return bad("the cluster resource's name is kafka-cluster");
    }
    if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&b.operation) {
        return bad("the operation must be a concrete operation");
    }
    if !matches!(b.permission, permission::ALLOW | permission::DENY) {
        return bad("the permission type must be ALLOW or DENY");
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => return bad("the principal must be Type:name, e.g. User:alice"),
    }
    if b.host.is_empty() {
        return bad("the host must be an address or *");
    }
    Ok(())
}

/// Whether an ALLOW of `granted` allows `wanted`.
fn implies(granted: i8, wanted: i8) -> bool {
    granted == wanted
        || granted == op::ALL
        || (wanted == op::DESCRIBE
            && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

/// The broker's authorizer settings.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// `authorizer.class.name` is set: ACLs are enforced.
    pub enabled: bool,
    /// `super.users` (`User:a;User:b`).
    pub super_users: HashSet<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
    /// `ringmq.open.resources` (resource type codes): a resource of one of these types
    /// that no ACL names (by its literal name or a prefix; a `*` ACL does not count) is
    /// open to every authenticated principal. The seeds' open-topic model without
    /// opening the cluster, users and ACLs to everyone as `allow.everyone.if.no.acl.found`
    /// does.
    pub open_resources: Vec<i8>,
}

impl Authorizer {
    /// Whether `principal` connecting from `host` may do `operation` on the resource.
    pub fn authorize(
        &self,
        acls: &[AclBinding],
        principal: &str,
        host: IpAddr,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        let host = host.to_string();
        let mut any_acl = false;
        let mut named = false;
        let mut allowed = false;
        for b in acls {
            if b.resource_type != resource_type || !pattern_applies(b, name) {
                continue;
            }
            any_acl = true;
            named |= b.pattern != pattern::LITERAL || b.name != "*";
            if (b.principal != principal && b.principal != "User:*")
                || (b.host != "*" && b.host != host)
            {
                continue;
            }
            if b.permission == permission::DENY
                && (b.operation == operation || b.operation == op::ALL)
            {
                return false;
            }
            if b.permission == permission::ALLOW && implies(b.operation, operation) {
                allowed = true;
            }
        }
        allowed
            || (!any_acl && self.allow_if_no_acl)
            || (!named
                && principal != super::ANONYMOUS
                && self.open_resources.contains(&resource_type))
    }

    /// Why this configuration is unsafe, if it is: `allow.everyone.if.no.acl.found`
    /// also opens the cluster resource (creating ACLs, changing any user's password) to
    /// every principal, ANONYMOUS included.
    pub fn opens_the_cluster(&self) -> Option<&'static str> {
        (self.enabled && self.allow_if_no_acl).then_some(
            "allow.everyone.if.no.acl.found=true opens every resource without ACLs to every principal, ANONYMOUS included: the cluster too, so anyone may create ACLs and change any user's password. For the open-topic model use ringmq.open.resources=topic,group (ungranted topics and groups open to authenticated users; the cluster, users and ACLs for super users) and set allow.everyone.if.no.acl.found=false",
        )
    }
}

/// How often a standing authorization problem between brokers is reported at ERROR.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a problem last reported at `last` (ms since the epoch, 0: never) is due to be
/// reported again; if so, records now.
pub fn due_to_report(last: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let before = last.load(Ordering::Relaxed);
    if before != 0 && now.saturating_sub(before) < REPORT_EVERY.as_millis() as u64 {
        return false;
    }
    last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i8, name: &str, pat: i8, who: &str, operation: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern: pat,
            principal: who.into(),
            host: "*".into(),
            operation,
            permission: perm,
        }
    }

    const ANONYMOUS_PRINCIPAL: &str = super::super::ANONYMOUS;

    #[test]
    fn standard_authorizer_rules() {
        let host: IpAddr = "10.0.0.9".parse().unwrap();
        let a = Authorizer {
            enabled: true,
            super_users: ["User:admin".to_owned()].into(),
            allow_if_no_acl: false,
            open_resources: Vec::new(),
        };
        let acls = vec![
            acl(
                resource::TOPIC,
                "orders",
                pattern::LITERAL,
                "User:alice",
                op::WRITE,
                permission::ALLOW,
            ),
            acl(
                resource::TOPIC,
                "logs-",
                pattern::PREFIXED,
                "User:*",
                op::READ,
                permission::ALLOW,
            ),
            acl(
                resource::TOPIC,
                "logs-secret",
                pattern::LITERAL,
                "User:bob",
                op::ALL,
                permission::DENY,
            ),
            acl(
                resource::GROUP,
                "*",
                pattern::LITERAL,
                "User:bob",
                op::READ,
                permission::ALLOW,
            ),
        ];
        let can = |who: &str, o: i8, rt: i8, name: &str| a.authorize(&acls, who, host, o, rt, name);
        assert!(can("User:alice", op::WRITE, resource::TOPIC, "orders"));
        assert!(
            can("User:alice", op::DESCRIBE, resource::TOPIC, "orders"),
            "WRITE implies DESCRIBE"
        );
        assert!(!can("User:alice", op::READ, resource::TOPIC, "orders"));
        assert!(!can("User:bob", op::WRITE, resource::TOPIC, "orders"));
        assert!(
            can("User:bob", op::READ, resource::TOPIC, "logs-app"),
            "prefixed, User:*"
        );
        assert!(
            !can("User:bob", op::READ, resource::TOPIC, "logs-secret"),
            "DENY wins"
        );
        assert!(can("User:carol", op::READ, resource::TOPIC, "logs-secret"));
        assert!(
            can("User:bob", op::READ, resource::GROUP, "any-group"),
            "wildcard name"
        );
        assert!(
            !can("User:bob", op::READ, resource::TOPIC, "unlisted"),
            "no ACL, default deny"
        );
        assert!(
            can("User:admin", op::DELETE, resource::CLUSTER, CLUSTER_NAME),
            "super user"
        );
        let safe = Authorizer {
            open_resources: vec![resource::TOPIC, resource::GROUP],
            ..a.clone()
        };
        let safe_can =
            |who: &str, o: i8, rt: i8, name: &str| safe.authorize(&acls, who, host, o, rt, name);
        assert!(safe_can(
            "User:carol",
            op::WRITE,
            resource::TOPIC,
            "unlisted"
        ));
        assert!(!safe_can(
            "User:carol",
            op::WRITE,
            resource::TOPIC,
            "orders"
        ));
        assert!(
            safe_can("User:carol", op::READ, resource::GROUP, "carols"),
            "bob's Group:* grant closes no one else's group"
        );
        assert!(!safe_can(
            ANONYMOUS_PRINCIPAL,
            op::READ,
            resource::TOPIC,
            "unlisted"
        ));
        assert!(!safe_can(
            "User:carol",
            op::ALTER,
            resource::CLUSTER,
            CLUSTER_NAME
        ));
        assert!(safe.opens_the_cluster().is_none());
        let open = Authorizer {
            allow_if_no_acl: true,
            ..a.clone()
        };
        assert!(open.opens_the_cluster().is_some());
        assert!(open.authorize(
            &acls,
            "User:bob",
            host,
            op::READ,
            resource::TOPIC,
            "unlisted"
        ));
        assert!(
            !open.authorize(
                &acls,
                "User:bob",
                host,
                op::WRITE,
                resource::TOPIC,
                "orders"
            ),
            "a topic with grants is closed to the others"
        );
        let off = Authorizer::default();
        assert!(off.authorize(
            &acls,
            "User:bob",
            host,
            op::WRITE,
            resource::TOPIC,
            "orders"
        ));
    }

    #[test]
    fn filters_match_as_describe_and_delete_acls_do() {
        let b = acl(
            resource::TOPIC,
            "logs-",
            pattern::PREFIXED,
            "User:*",
            op::READ,
            permission::ALLOW,
        );
        let any = AclFilter {
            resource_type: resource::ANY,
            name: None,
            pattern: pattern::ANY,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert!(any.matches(&b));
        let exact = AclFilter {
            resource_type: resource::TOPIC,
            name: Some("logs-".into()),
            pattern: pattern::PREFIXED,
            ..any.clone()
        };
        assert!(exact.matches(&b));
        let literal = AclFilter {
            pattern: pattern::LITERAL,
            ..exact.clone()
        };
        assert!(!literal.matches(&b));
        let applies = AclFilter {
            name: Some("logs-app".into()),
            pattern: pattern::MATCH,
            ..exact.clone()
        };
        assert!(applies.matches(&b));
        assert!(validate(&b).is_ok());
        assert!(
            validate(&AclBinding {
                principal: "alice".into(),
                ..b.clone()
            })
            .is_err()
        );
        assert!(
            validate(&AclBinding {
                resource_type: resource::CLUSTER,
                name: "x".into(),
                ..b
            })
            .is_err()
        );
    }
}
