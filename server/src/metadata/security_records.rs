//! The security entries of the metadata log: ACL bindings and SCRAM credentials, as the
//! controller records them and every broker's image holds them. The rules that read them
//! (the authorizer, the SCRAM exchange) live in `security/`, which re-exports these types.

use serde::{Deserialize, Serialize};

/// One ACL: who may (or may not) do what on which resources, from where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub name: String,
    pub pattern: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// A user's SCRAM credential for one mechanism (RFC 5802 section 3), base64 in the
/// metadata log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
    pub iterations: i32,
}
