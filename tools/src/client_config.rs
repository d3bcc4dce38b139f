//! How the CLI connects to a secured broker: `--command-config FILE` (Kafka's tools' flag)
//! with client properties — `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT,
//! SASL_SSL), `sasl.mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the user and password
//! as `sasl.username`/`sasl.password` or inside a Java `sasl.jaas.config`, the CA as
//! `ssl.ca.location` or `ssl.truststore.location` (PEM), and a client certificate as
//! `ssl.certificate.location`/`ssl.key.location`. The same settings go to librdkafka
//! (the commands built on rdkafka) and to the CLI's own Kafka connection ([`connect`]),
//! which runs TLS with rustls and SASL PLAIN/SCRAM itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The client's security settings.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    pub protocol: String,
    pub mechanism: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

static SETTINGS: OnceLock<ClientSecurity> = OnceLock::new();

/// The settings in force (PLAINTEXT unless `--command-config` said otherwise).
pub fn settings() -> ClientSecurity {
    SETTINGS.get().cloned().unwrap_or_else(|| ClientSecurity {
        protocol: "PLAINTEXT".into(),
        ..Default::default()
    })
}

/// Reads a client properties file (Java's format: `key=value`, `#` comments, continued
/// lines).
pub fn load(path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut s = ClientSecurity {
        protocol: "PLAINTEXT".into(),
        ..Default::default()
    };
    // Java's properties format, as Kafka's tools read --command-config (a multi-line
    // `sasl.jaas.config` continued with backslashes, escapes, `:` separators).
    let props = java_properties::read(text.as_bytes())
        .with_context(|| format!("reading {}", path.display()))?;
    for (k, v) in props {
        let v = v.trim().to_owned();
        match k.as_str() {
            "security.protocol" => s.protocol = v.to_ascii_uppercase(),
            "sasl.mechanism" | "sasl.mechanisms" => s.mechanism = Some(v.to_ascii_uppercase()),
            "sasl.username" => s.username = Some(v),
            "sasl.password" => s.password = Some(v),
            "sasl.jaas.config" => {
                s.username = s.username.or_else(|| jaas_option(&v, "username"));
                s.password = s.password.or_else(|| jaas_option(&v, "password"));
            }
            "ssl.ca.location" | "ssl.truststore.location" => s.ca = Some(v),
            "ssl.certificate.location" | "ssl.keystore.location" => s.cert = Some(v),
            "ssl.key.location" => s.key = Some(v),
            _ => {}
        }
    }
    anyhow::ensure!(
        matches!(
            s.protocol.as_str(),
            "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
        ),
        "security.protocol={} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        s.protocol
    );
    if s.protocol.starts_with("SASL") {
        anyhow::ensure!(
            s.username.is_some() && s.password.is_some(),
            "SASL needs a user and password (sasl.username/sasl.password or sasl.jaas.config)"
        );
    }
    let _ = SETTINGS.set(s);
    Ok(())
}

/// `name="value"` from a JAAS login module line.
fn jaas_option(jaas: &str, name: &str) -> Option<String> {
    let at = jaas.find(&format!("{name}="))?;
    let rest = jaas[at + name.len() + 1..].trim_start().strip_prefix('"')?;
    rest.split_once('"').map(|(v, _)| v.to_owned())
}

/// The settings as librdkafka properties.
pub fn apply(config: &mut rdkafka::ClientConfig) -> &mut rdkafka::ClientConfig {
    let s = settings();
    config.set("security.protocol", s.protocol.to_ascii_lowercase());
    let opt = [
        ("sasl.mechanisms", &s.mechanism),
        ("sasl.username", &s.username),
        ("sasl.password", &s.password),
        ("ssl.ca.location", &s.ca),
        ("ssl.certificate.location", &s.cert),
        ("ssl.key.location", &s.key),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            config.set(k, v);
        }
    }
    config
}

/// A connection to a broker: plain TCP or TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

impl Transport {
    /// The plain socket, for the bench's pipelined reader thread.
    pub fn try_clone(&self) -> anyhow::Result<TcpStream> {
        match self {
            Transport::Plain(s) => Ok(s.try_clone()?),
            Transport::Tls(_) => anyhow::bail!(
                "the native bench client speaks PLAINTEXT only; use --client rdkafka for TLS"
            ),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown(how),
            Transport::Tls(s) => s.sock.shutdown(how),
        }
    }
}

/// Opens `tcp` as the settings say: TLS over it for SSL and SASL_SSL.
pub fn wrap(tcp: TcpStream, host: &str) -> anyhow::Result<Transport> {
    let s = settings();
    if !s.protocol.ends_with("SSL") {
        return Ok(Transport::Plain(tcp));
    }
    let mut roots = rustls::RootCertStore::empty();
    let ca = s
        .ca
        .as_deref()
        .context("SSL needs the broker's CA (ssl.ca.location or ssl.truststore.location, PEM)")?;
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {ca}"))? {
        roots.add(c.with_context(|| format!("reading {ca}"))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {cert}"))?
                .collect::<Result<Vec<_>, _>>()?;
            let key =
                PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {key}"))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(host.to_owned()).context("the broker's host name")?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    Ok(Transport::Tls(Box::new(rustls::StreamOwned::new(
        conn, tcp,
    ))))
}

/// The SASL exchange's tokens for the settings' mechanism: the first, then a function
/// from each server message to the next client message.
pub struct SaslClient {
    mechanism: String,
    user: String,
    password: String,
    nonce: String,
    first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl SaslClient {
    pub fn new() -> Option<SaslClient> {
        let s = settings();
        if !s.protocol.starts_with("SASL") {
            return None;
        }
        let nonce = B64.encode(rand_bytes(18));
        let user = s.username.unwrap_or_default();
        let first_bare = format!(
            "n={},r={nonce}",
            user.replace('=', "=3D").replace(',', "=2C")
        );
        Some(SaslClient {
            mechanism: s.mechanism.unwrap_or_else(|| "PLAIN".into()),
            user,
            password: s.password.unwrap_or_default(),
            nonce,
            first_bare,
            server_signature: None,
        })
    }

    pub fn mechanism(&self) -> &str {
        &self.mechanism
    }

    fn scram(
        &self,
    ) -> Option<(
        ring::hmac::Algorithm,
        &'static ring::digest::Algorithm,
        ring::pbkdf2::Algorithm,
    )> {
        match self.mechanism.as_str() {
            "SCRAM-SHA-256" => Some((
                ring::hmac::HMAC_SHA256,
                &ring::digest::SHA256,
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
            )),
            "SCRAM-SHA-512" => Some((
                ring::hmac::HMAC_SHA512,
                &ring::digest::SHA512,
                ring::pbkdf2::PBKDF2_HMAC_SHA512,
            )),
            _ => None,
        }
    }

    pub fn first(&self) -> Vec<u8> {
        match self.scram() {
            None => format!("\0{}\0{}", self.user, self.password).into_bytes(),
            Some(_) => format!("n,,{}", self.first_bare).into_bytes(),
        }
    }

    /// The answer to a server message; `None` when the exchange is over.
    pub fn next(&mut self, server: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let Some((hmac, digest, pbkdf2)) = self.scram() else {
            return Ok(None);
        };
        let msg = std::str::from_utf8(server)?;
        if let Some(expected) = &self.server_signature {
            let v = msg
                .strip_prefix("v=")
                .context("the server's final SCRAM message")?;
            anyhow::ensure!(
                B64.decode(v)? == *expected,
                "the broker's SCRAM signature is wrong"
            );
            return Ok(None);
        }
        let attr = |k: &str| {
            msg.split(',')
                .find_map(|a| a.strip_prefix(&format!("{k}=")))
                .map(str::to_owned)
        };
        let nonce = attr("r").context("no nonce in the server's SCRAM message")?;
        anyhow::ensure!(
            nonce.starts_with(&self.nonce),
            "the broker's SCRAM nonce is wrong"
        );
        let salt = B64.decode(attr("s").context("no salt")?)?;
        let iterations: u32 = attr("i").context("no iterations")?.parse()?;
        let mut salted = vec![0u8; digest.output_len()];
        let rounds = std::num::NonZeroU32::new(iterations).context("zero iterations")?;
        ring::pbkdf2::derive(pbkdf2, rounds, &salt, self.password.as_bytes(), &mut salted);
        let key = |k: &[u8], d: &[u8]| {
            ring::hmac::sign(&ring::hmac::Key::new(hmac, k), d)
                .as_ref()
                .to_vec()
        };
        let client_key = key(&salted, b"Client Key");
        let stored = ring::digest::digest(digest, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{msg},{without_proof}", self.first_bare);
        let signature = key(stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_signature = Some(key(&key(&salted, b"Server Key"), auth.as_bytes()));
        Ok(Some(
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
        ))
    }
}

pub fn rand_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

/// SaltedPassword for AlterUserScramCredentials: Hi(password, salt, iterations).
pub fn salted_password(
    mechanism: &str,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> anyhow::Result<Vec<u8>> {
    let (alg, len) = match mechanism {
        "SCRAM-SHA-256" => (ring::pbkdf2::PBKDF2_HMAC_SHA256, 32),
        "SCRAM-SHA-512" => (ring::pbkdf2::PBKDF2_HMAC_SHA512, 64),
        other => anyhow::bail!("{other} is not a SCRAM mechanism"),
    };
    let mut out = vec![0u8; len];
    let rounds = std::num::NonZeroU32::new(iterations).context("zero iterations")?;
    ring::pbkdf2::derive(alg, rounds, salt, password.as_bytes(), &mut out);
    Ok(out)
}
