//! DescribeUserScramCredentials (key 50): each user's SCRAM mechanisms and iterations
//! (never salts or keys), every user that has any for a null or empty list (as Kafka's
//! broker answers; confluent-kafka's `describe_user_scram_credentials()` sends the empty
//! one). A named user without credentials is RESOURCE_NOT_FOUND; a user named twice is
//! DUPLICATE_RESOURCE, as Kafka answers.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    ApiKey, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::metadata::UserMeta;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::sasl::Mechanism;

fn infos(u: &UserMeta) -> Vec<CredentialInfo> {
    u.scram
        .iter()
        .filter_map(|(m, c)| {
            Mechanism::parse(m).map(|m| {
                CredentialInfo::default()
                    .with_mechanism(m.scram_code())
                    .with_iterations(c.iterations)
            })
        })
        .collect()
}

pub fn handle(ctx: &ShardCtx, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeUserScramCredentialsRequest = protocol::decode_body(req.body.clone(), v)?;
    let image = ctx.broker.image();
    let results = match body.users.filter(|u| !u.is_empty()) {
        None => image
            .users
            .iter()
            .filter(|(_, u)| !u.scram.is_empty())
            .map(|(name, u)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(name.clone()))
                    .with_credential_infos(infos(u))
            })
            .collect(),
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            names
                .iter()
                .map(|name| {
                    let r = DescribeUserScramCredentialsResult::default()
                        .with_user(StrBytes::from_string(name.clone()));
                    if names.iter().filter(|n| *n == name).count() > 1 {
                        return r
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                            ))));
                    }
                    match image.users.get(name) {
                        Some(u) => r.with_credential_infos(infos(u)),
                        None => r
                            .with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Attempt to describe a user credential that does not exist: {name}"
                            )))),
                    }
                })
                .collect()
        }
    };
    let resp = DescribeUserScramCredentialsResponse::default().with_results(results);
    protocol::single(
        ApiKey::DescribeUserScramCredentials,
        v,
        req.correlation_id(),
        &resp,
    )
}
