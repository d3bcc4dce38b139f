//! ApiVersions (key 18): the API keys and version ranges in [`super::HANDLERS`].
//! A request of a version newer than ours is answered in v0 with UNSUPPORTED_VERSION and
//! our ranges, so the client can retry with one we know (KIP-511).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::{HANDLERS, Request, versions};
use crate::protocol::{self, CloseConnection, Response};

pub fn handle(req: &Request) -> Result<Response, CloseConnection> {
    let range = ApiKey::ApiVersions.valid_versions();
    let (version, error) = if req.version() > range.max || req.version() < range.min {
        (0, ResponseError::UnsupportedVersion.code())
    } else {
        (req.version(), 0)
    };
    let api_keys = HANDLERS
        .iter()
        .filter_map(|k| versions(*k).map(|r| (k, r)))
        .map(|(k, r)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect();
    let body = ApiVersionsResponse::default()
        .with_error_code(error)
        .with_api_keys(api_keys);
    protocol::single(ApiKey::ApiVersions, version, req.correlation_id(), &body)
}
