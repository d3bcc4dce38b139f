//! Authorized-operation bit sets (KIP-430) for Metadata, DescribeCluster and
//! DescribeGroups. Without an authorizer Kafka reports every operation a resource type
//! supports when the client asks (`include_*_authorized_operations`), and
//! `i32::MIN` ("not provided") when it does not. Bit `i` stands for AclOperation code `i`.

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

/// `all` if the client asked for the operations, else [`NOT_PROVIDED`].
pub fn reported(requested: bool, all: i32) -> i32 {
    if requested { all } else { NOT_PROVIDED }
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
        assert_eq!(reported(false, TOPIC), i32::MIN);
    }
}
