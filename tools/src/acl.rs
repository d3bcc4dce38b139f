//! `ringmq acl add|list|remove` and `ringmq topic grant`: Kafka ACLs through the standard
//! CreateAcls / DescribeAcls / DeleteAcls APIs (any Kafka broker with an authorizer), and
//! the seeds' simpler model on top: a user (or every user, `*`) may publish, subscribe,
//! or both on a topic — WRITE, READ (with READ on consumer groups), or both, allowed.

use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Resource {
    Topic,
    Group,
    Cluster,
    /// A transactional producer's id (WRITE to use it, DESCRIBE to find its coordinator).
    TransactionalId,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Pattern {
    Literal,
    Prefixed,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// One ACL as the flags give it.
#[derive(Debug, Args)]
pub struct AclSpec {
    /// Resource type.
    #[arg(long, value_enum, default_value = "topic")]
    resource: Resource,
    /// Resource name (`*`: every one); the cluster's is kafka-cluster.
    #[arg(long, default_value = "kafka-cluster")]
    name: String,
    #[arg(long, value_enum, default_value = "literal")]
    pattern: Pattern,
    /// The principal, `User:alice` (or just `alice`); `User:*` is every user.
    #[arg(long)]
    principal: String,
    #[arg(long, value_enum)]
    operation: Operation,
    /// Deny instead of allow.
    #[arg(long)]
    deny: bool,
    /// The client address it applies to.
    #[arg(long, default_value = "*")]
    host: String,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add an ACL.
    Add(AclSpec),
    /// List ACLs (all, or those on --name).
    List {
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove ACLs matching the spec.
    Remove(AclSpec),
}

/// What a user may do with a topic in the seeds' model.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Access {
    Publish,
    Subscribe,
    Both,
}

/// `ringmq topic grant`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The topic.
    pub topic: String,
    /// The user (`*`: default permissions for all users).
    #[arg(long)]
    pub user: String,
    #[arg(long, value_enum)]
    pub access: Access,
    /// Take the grant back instead.
    #[arg(long)]
    pub revoke: bool,
}

fn resource_code(r: Resource) -> i8 {
    match r {
        Resource::Topic => 2,
        Resource::Group => 3,
        Resource::Cluster => 4,
        Resource::TransactionalId => 5,
    }
}

fn resource_name(code: i8) -> &'static str {
    match code {
        2 => "Topic",
        3 => "Group",
        4 => "Cluster",
        5 => "TransactionalId",
        7 => "User",
        _ => "?",
    }
}

fn op_code(o: Operation) -> i8 {
    match o {
        Operation::All => 2,
        Operation::Read => 3,
        Operation::Write => 4,
        Operation::Create => 5,
        Operation::Delete => 6,
        Operation::Alter => 7,
        Operation::Describe => 8,
        Operation::ClusterAction => 9,
        Operation::DescribeConfigs => 10,
        Operation::AlterConfigs => 11,
        Operation::IdempotentWrite => 12,
    }
}

fn op_name(code: i8) -> String {
    Operation::value_variants()
        .iter()
        .find(|o| op_code(**o) == code)
        .and_then(|o| o.to_possible_value())
        .map_or_else(|| code.to_string(), |v| v.get_name().to_uppercase())
}

fn principal(p: &str) -> String {
    if p.contains(':') {
        p.to_owned()
    } else {
        format!("User:{p}")
    }
}

/// (resource type, name, pattern, principal, host, operation, permission).
type Binding = (i8, String, i8, String, String, i8, i8);

fn binding(s: &AclSpec) -> Binding {
    (
        resource_code(s.resource),
        if s.resource == Resource::Cluster {
            "kafka-cluster".into()
        } else {
            s.name.clone()
        },
        if s.pattern == Pattern::Prefixed { 4 } else { 3 },
        principal(&s.principal),
        s.host.clone(),
        op_code(s.operation),
        if s.deny { 2 } else { 3 },
    )
}

fn create(bootstrap: &str, bindings: &[Binding]) -> anyhow::Result<()> {
    let req = CreateAclsRequest::default().with_creations(
        bindings
            .iter()
            .map(|(rt, name, pat, who, host, op, perm)| {
                AclCreation::default()
                    .with_resource_type(*rt)
                    .with_resource_name(StrBytes::from_string(name.clone()))
                    .with_resource_pattern_type(*pat)
                    .with_principal(StrBytes::from_string(who.clone()))
                    .with_host(StrBytes::from_string(host.clone()))
                    .with_operation(*op)
                    .with_permission_type(*perm)
            })
            .collect(),
    );
    let mut wire = crate::bench::Wire::connect(crate::first(bootstrap))?;
    let resp = wire.call(1, &req)?;
    for r in &resp.results {
        anyhow::ensure!(
            r.error_code == 0,
            "{} (error {})",
            r.error_message.as_deref().unwrap_or("the ACL was refused"),
            r.error_code
        );
    }
    Ok(())
}

fn remove(bootstrap: &str, bindings: &[Binding]) -> anyhow::Result<usize> {
    let req = DeleteAclsRequest::default().with_filters(
        bindings
            .iter()
            .map(|(rt, name, pat, who, host, op, perm)| {
                DeleteAclsFilter::default()
                    .with_resource_type_filter(*rt)
                    .with_resource_name_filter(Some(StrBytes::from_string(name.clone())))
                    .with_pattern_type_filter(*pat)
                    .with_principal_filter(Some(StrBytes::from_string(who.clone())))
                    .with_host_filter(Some(StrBytes::from_string(host.clone())))
                    .with_operation(*op)
                    .with_permission_type(*perm)
            })
            .collect(),
    );
    let mut wire = crate::bench::Wire::connect(crate::first(bootstrap))?;
    let resp = wire.call(1, &req)?;
    let mut n = 0;
    for r in &resp.filter_results {
        anyhow::ensure!(
            r.error_code == 0,
            "{} (error {})",
            r.error_message.as_deref().unwrap_or("removing ACLs failed"),
            r.error_code
        );
        n += r.matching_acls.len();
    }
    Ok(n)
}

pub async fn run(bootstrap: &str, cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Add(spec) => {
            create(bootstrap, &[binding(&spec)])?;
            println!("added");
        }
        AclCommand::Remove(spec) => {
            let n = remove(bootstrap, &[binding(&spec)])?;
            println!("removed {n}");
        }
        AclCommand::List { name } => {
            let req = DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1);
            let resp = describe(bootstrap, &req)?;
            println!(
                "{:<8} {:<24} {:<9} {:<20} {:<8} {:<16} PERMISSION",
                "TYPE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION"
            );
            for r in &resp.resources {
                for a in &r.acls {
                    println!(
                        "{:<8} {:<24} {:<9} {:<20} {:<8} {:<16} {}",
                        resource_name(r.resource_type),
                        r.resource_name.as_str(),
                        if r.pattern_type == 4 {
                            "PREFIXED"
                        } else {
                            "LITERAL"
                        },
                        a.principal.as_str(),
                        a.host.as_str(),
                        op_name(a.operation),
                        if a.permission_type == 2 {
                            "DENY"
                        } else {
                            "ALLOW"
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

/// Whether `who` still has an ALLOW READ on some topic.
fn reads_any_topic(bootstrap: &str, who: &str) -> anyhow::Result<bool> {
    let req = DescribeAclsRequest::default()
        .with_resource_type_filter(2)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(Some(StrBytes::from_string(who.to_owned())))
        .with_host_filter(None)
        .with_operation(3)
        .with_permission_type(3);
    Ok(describe(bootstrap, &req)?
        .resources
        .iter()
        .any(|r| !r.acls.is_empty()))
}

/// DescribeAcls, its error as the command's.
fn describe(bootstrap: &str, req: &DescribeAclsRequest) -> anyhow::Result<DescribeAclsResponse> {
    let mut wire = crate::bench::Wire::connect(crate::first(bootstrap))?;
    let resp: DescribeAclsResponse = wire.call(1, req)?;
    anyhow::ensure!(
        resp.error_code == 0,
        "{} (error {})",
        resp.error_message
            .as_deref()
            .unwrap_or("listing ACLs failed"),
        resp.error_code
    );
    Ok(resp)
}

/// `ringmq topic grant TOPIC --user U --access publish|subscribe|both [--revoke]`.
pub fn grant(bootstrap: &str, args: GrantArgs) -> anyhow::Result<()> {
    let who = principal(&args.user);
    let topic = |op: i8| (2, args.topic.clone(), 3, who.clone(), "*".to_owned(), op, 3);
    let mut bindings = Vec::new();
    if matches!(args.access, Access::Publish | Access::Both) {
        bindings.push(topic(4));
    }
    if matches!(args.access, Access::Subscribe | Access::Both) {
        bindings.push(topic(3));
        // Subscribers commit offsets under their consumer group.
        bindings.push((3, "*".to_owned(), 3, who.clone(), "*".to_owned(), 3, 3));
    }
    if args.revoke {
        // The group grant serves every topic the user subscribes to: it goes with the
        // last topic READ grant of that user.
        let (topics, group): (Vec<_>, Vec<_>) = bindings.into_iter().partition(|b| b.0 == 2);
        let mut n = remove(bootstrap, &topics)?;
        if !group.is_empty() && !reads_any_topic(bootstrap, &who)? {
            n += remove(bootstrap, &group)?;
        }
        println!("revoked {n} grant(s) of {who} on {}", args.topic);
    } else {
        create(bootstrap, &bindings)?;
        println!("granted {:?} on {} to {who}", args.access, args.topic);
    }
    Ok(())
}
