//! Kafka's listener model (SPEC S1): `listeners=NAME://host:port,...`, each name mapped to
//! a security protocol by `listener.security.protocol.map`, advertised to clients as
//! `advertised.listeners` says for that name, with its own security settings
//! (`listener.name.<name>.ssl.keystore.location`, ... override the unprefixed keys).

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// How a listener's clients connect and authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the connection is encrypted with TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether clients authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One Kafka listener, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where it listens.
    pub bind: SocketAddr,
    /// What Metadata tells the clients that came in through it.
    pub advertised: (String, u16),
    /// The security keys that apply to it: the unprefixed ones, then
    /// `listener.name.<name>.*` over them.
    pub props: BTreeMap<String, String>,
}

impl Listener {
    pub fn prop(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }
}

/// Security keys a listener reads (besides the mechanism-prefixed JAAS configs). An
/// unknown `ssl.*` or `sasl.*` key is refused like any unknown key.
pub const SECURITY_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.protocol",
    "ssl.cipher.suites",
    "ssl.principal.mapping.rules",
    "ssl.endpoint.identification.algorithm",
    "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.jaas.config",
    "connections.max.reauth.ms",
    "ringmq.ssl.ktls",
];

/// Whether `key` (without any `listener.name.<name>.` prefix) is a listener security key.
pub fn is_security_key(key: &str) -> bool {
    if SECURITY_KEYS.contains(&key) {
        return true;
    }
    // `plain.sasl.jaas.config`, `scram-sha-512.sasl.jaas.config`, ...
    key.strip_suffix(".sasl.jaas.config")
        .is_some_and(|mech| crate::security::sasl::Mechanism::parse(mech).is_some())
}

/// `listener.name.<name>.<key>` -> (name, key).
pub fn split_listener_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("listener.name.")?.split_once('.')
}

/// The properties of listener `name`: `base` with `listener.name.<name>.*` over it
/// (Kafka matches the name case-insensitively: the prefix is written in lower case).
/// Also takes `max.connections` (the listener's own limit, SPEC S5).
pub fn listener_props(
    name: &str,
    base: &BTreeMap<String, String>,
    prefixed: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut props = base.clone();
    for (k, v) in prefixed {
        if let Some((l, key)) = split_listener_key(k)
            && l.eq_ignore_ascii_case(name)
            && (is_security_key(key) || key == "max.connections")
        {
            props.insert(key.to_owned(), v.clone());
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_prefixed_keys_override_the_base_ones() {
        let base = BTreeMap::from([
            ("ssl.client.auth".to_owned(), "none".to_owned()),
            ("ssl.keystore.type".to_owned(), "PEM".to_owned()),
        ]);
        let prefixed = BTreeMap::from([
            (
                "listener.name.external.ssl.client.auth".to_owned(),
                "required".to_owned(),
            ),
            (
                "listener.name.internal.ssl.client.auth".to_owned(),
                "requested".to_owned(),
            ),
        ]);
        let p = listener_props("EXTERNAL", &base, &prefixed);
        assert_eq!(p["ssl.client.auth"], "required");
        assert_eq!(p["ssl.keystore.type"], "PEM");
        assert!(is_security_key("scram-sha-512.sasl.jaas.config"));
        assert!(!is_security_key("gssapi.sasl.jaas.config"));
        assert!(!is_security_key("ssl.keystore.typo"));
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert!(SecurityProtocol::SaslSsl.tls() && SecurityProtocol::SaslSsl.sasl());
    }
}
