//! Authorized-operation bit sets (KIP-430) for Metadata, DescribeCluster, DescribeGroups
//! and DescribeTopicPartitions: when the client asks (`include_*_authorized_operations`),
//! each operation the resource type supports that the connection's principal may do on
//! that resource, checked with the authorizer as Kafka's `authorizedOperations` does (every
//! one without an authorizer); `i32::MIN` ("not provided") when it does not ask. Bit `i`
//! stands for AclOperation code `i`.

use crate::runtime::Broker;
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, op, resource};

/// AclOperation codes (org.apache.kafka.common.acl.AclOperation).
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

/// The value Kafka sends when the operations were not requested.
pub const NOT_PROVIDED: i32 = i32::MIN;

const fn bits(ops: &[u8]) -> i32 {
    let mut set = 0i32;
    let mut i = 0;
    while i < ops.len() {
        set |= 1 << ops[i];
        i += 1;
    }
    set
}

/// Every operation a topic supports.
pub const TOPIC: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DELETE,
    ALTER,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);
/// Every operation the cluster supports.
pub const CLUSTER: i32 = bits(&[
    CREATE,
    ALTER,
    DESCRIBE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
]);
/// Every operation a consumer group supports (group configs since Kafka 4.0).
pub const GROUP: i32 = bits(&[READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);

/// The operations of `supported` the session's principal may do on the resource.
pub fn granted(
    broker: &Broker,
    session: &Session,
    resource_type: i8,
    name: &str,
    supported: i32,
) -> i32 {
    (0..31u8)
        .filter(|op| supported & (1 << op) != 0)
        .filter(|op| broker.authorize(session, *op as i8, resource_type, name))
        .fold(0, |set, op| set | (1 << op))
}

/// A topic's operations for the session, if the client asked (else [`NOT_PROVIDED`]).
pub fn topic(requested: bool, broker: &Broker, session: &Session, name: &str) -> i32 {
    if !requested {
        return NOT_PROVIDED;
    }
    granted(broker, session, resource::TOPIC, name, TOPIC)
}

/// A group's operations for the session, if the client asked.
pub fn group(requested: bool, broker: &Broker, session: &Session, id: &str) -> i32 {
    if !requested {
        return NOT_PROVIDED;
    }
    granted(broker, session, resource::GROUP, id, GROUP)
}

/// The cluster's operations for the session, if the client asked: none without DESCRIBE
/// on the cluster, as Kafka answers.
pub fn cluster(requested: bool, broker: &Broker, session: &Session) -> i32 {
    if !requested {
        return NOT_PROVIDED;
    }
    if !broker.authorize(session, op::DESCRIBE, resource::CLUSTER, CLUSTER_NAME) {
        return 0;
    }
    granted(broker, session, resource::CLUSTER, CLUSTER_NAME, CLUSTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sets Apache Kafka 4.x answers without an authorizer.
    #[test]
    fn sets_match_kafka() {
        assert_eq!(TOPIC, 0b1101_1111_1000);
        assert_eq!(CLUSTER, 0b1_1111_1010_0000);
        assert_eq!(GROUP, 0b1101_0100_1000);
    }
}
