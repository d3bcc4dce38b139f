//! ApiVersions (key 18): the API keys and version ranges in [`super::HANDLERS`] (on the
//! controller listener, those of them a Kafka controller serves).
//! A request of a version newer than ours is answered in v0 with UNSUPPORTED_VERSION and
//! our ranges, so the client can retry with one we know (KIP-511).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{HANDLERS, Request, versions_on};
use crate::protocol::{self, CloseConnection, Response};

/// metadata.version feature levels: 3.3-IV3 (the first KRaft production level) to
/// 4.0-IV3, the release whose API version ranges ringmq serves.
const METADATA_VERSION_MIN: i16 = 7;
const METADATA_VERSION: i16 = 25;

pub fn handle(req: &Request) -> Result<Response, CloseConnection> {
    let range = ApiKey::ApiVersions.valid_versions();
    let (version, error) = if req.version() > range.max || req.version() < range.min {
        (0, ResponseError::UnsupportedVersion.code())
    } else {
        (req.version(), 0)
    };
    let controller = req.session.listener.controller;
    let api_keys = HANDLERS
        .iter()
        .filter_map(|k| versions_on(*k, controller).map(|r| (k, r)))
        .map(|(k, r)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect();
    let mut body = ApiVersionsResponse::default()
        .with_error_code(error)
        .with_api_keys(api_keys);
    // Features (v3+, KIP-584), read by `kafka-features describe` and the admin client:
    // the metadata.version levels whose APIs this broker serves, finalized at the
    // highest. No other feature (group.version, transaction.version, ...) is claimed:
    // the protocols they switch on are not served.
    if version >= 3 {
        body = body
            .with_supported_features(vec![
                SupportedFeatureKey::default()
                    .with_name(StrBytes::from_static_str("metadata.version"))
                    .with_min_version(METADATA_VERSION_MIN)
                    .with_max_version(METADATA_VERSION),
            ])
            .with_finalized_features(vec![
                FinalizedFeatureKey::default()
                    .with_name(StrBytes::from_static_str("metadata.version"))
                    .with_min_version_level(METADATA_VERSION)
                    .with_max_version_level(METADATA_VERSION),
            ])
            .with_finalized_features_epoch(1);
    }
    protocol::single(ApiKey::ApiVersions, version, req.correlation_id(), &body)
}
