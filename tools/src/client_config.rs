//! How the CLI connects to a secured broker: `--command-config FILE` (Kafka's tools' flag)
//! with client properties — `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT,
//! SASL_SSL), `sasl.mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the user and password
//! as `sasl.username`/`sasl.password` or inside a Java `sasl.jaas.config`, the CA as
//! `ssl.ca.location` or `ssl.truststore.location` (PEM, or JKS/PKCS12 with
//! `ssl.truststore.type` and `ssl.truststore.password`), and a client certificate as
//! `ssl.certificate.location`/`ssl.key.location` or `ssl.keystore.location` (PEM with the
//! key, or JKS/PKCS12 with `ssl.keystore.password` and `ssl.key.password`). Stores are
//! read once into PEM text. The same settings go to librdkafka
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
    /// PEM text of the CA certificates, the client certificate chain and its key.
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
    let prop = |k: &str| props.get(k).map(|v| v.trim().to_owned());
    for (k, v) in &props {
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
            _ => {}
        }
    }
    if let Some(ca) = prop("ssl.ca.location") {
        s.ca = Some(read_text(&ca)?);
    } else if let Some(path) = prop("ssl.truststore.location") {
        s.ca = Some(match prop("ssl.truststore.type") {
            Some(t) if !t.eq_ignore_ascii_case("PEM") => {
                let password = prop("ssl.truststore.password")
                    .context("a JKS or PKCS12 truststore needs ssl.truststore.password")?;
                let store = java_store(&path, &t, &password, None)?;
                let mut pem = store.trusted;
                pem.extend(store.chain);
                anyhow::ensure!(
                    !pem.is_empty(),
                    "{path}: the truststore holds no certificate"
                );
                pem.concat()
            }
            _ => read_text(&path)?,
        });
    }
    if let Some(cert) = prop("ssl.certificate.location") {
        s.cert = Some(read_text(&cert)?);
    } else if let Some(path) = prop("ssl.keystore.location") {
        match prop("ssl.keystore.type") {
            Some(t) if !t.eq_ignore_ascii_case("PEM") => {
                let password = prop("ssl.keystore.password")
                    .context("a JKS or PKCS12 keystore needs ssl.keystore.password")?;
                let key_password = prop("ssl.key.password");
                let store = java_store(&path, &t, &password, key_password.as_deref())?;
                anyhow::ensure!(
                    store.key.is_some(),
                    "{path}: the keystore holds no private key"
                );
                s.cert = Some(store.chain.concat());
                s.key = store.key;
            }
            // A PEM keystore holds the certificate chain and the key.
            _ => {
                let text = read_text(&path)?;
                s.key = Some(text.clone());
                s.cert = Some(text);
            }
        }
    }
    if let Some(key) = prop("ssl.key.location") {
        s.key = Some(read_text(&key)?);
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

fn read_text(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

/// A JKS or PKCS12 store as PEM text: its trusted certificates, the chain of its first
/// private key, and that key (PKCS#8).
#[derive(Default)]
struct JavaStore {
    trusted: Vec<String>,
    chain: Vec<String>,
    key: Option<String>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn java_store(
    path: &str,
    store_type: &str,
    password: &str,
    key_password: Option<&str>,
) -> anyhow::Result<JavaStore> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let mut out = JavaStore::default();
    let add_key = |chain: Vec<&[u8]>, key: &[u8], out: &mut JavaStore| {
        if out.key.is_none() {
            out.chain = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
            out.key = Some(pem("PRIVATE KEY", key));
        }
    };
    if store_type.eq_ignore_ascii_case("JKS") {
        let mut store = jks::KeyStore::with_options(jks::KeyStoreOptions {
            min_password_len: 0,
            ..Default::default()
        });
        store
            .load(bytes.as_slice(), password.as_bytes())
            .map_err(|e| anyhow::anyhow!("{path}: not a JKS store for this password ({e})"))?;
        for alias in store.aliases() {
            if store.is_private_key_entry(&alias) {
                let e = store
                    .get_private_key_entry(&alias, key_password.unwrap_or(password).as_bytes())
                    .map_err(|e| anyhow::anyhow!("{path}: cannot decrypt key {alias:?} ({e})"))?;
                let chain = e.certificate_chain.iter().map(|c| c.content.as_slice());
                add_key(chain.collect(), &e.private_key, &mut out);
            } else if let Ok(t) = store.get_trusted_certificate_entry(&alias) {
                out.trusted.push(pem("CERTIFICATE", &t.certificate.content));
            }
        }
    } else if store_type.eq_ignore_ascii_case("PKCS12") {
        let store = p12_keystore::KeyStore::from_pkcs12(
            &bytes,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| anyhow::anyhow!("{path}: not a PKCS12 store for this password ({e})"))?;
        for (_, entry) in store.entries() {
            match entry {
                p12_keystore::KeyStoreEntry::PrivateKeyChain(c) => {
                    let chain = c.certs().iter().map(|c| c.as_der());
                    add_key(chain.collect(), c.key().as_der(), &mut out);
                }
                p12_keystore::KeyStoreEntry::Certificate(c) => {
                    out.trusted.push(pem("CERTIFICATE", c.as_der()));
                }
                p12_keystore::KeyStoreEntry::Secret(_) => {}
            }
        }
    } else {
        anyhow::bail!("{path}: store type {store_type} is not one of PEM, JKS, PKCS12");
    }
    Ok(out)
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
        ("ssl.ca.pem", &s.ca),
        ("ssl.certificate.pem", &s.cert),
        ("ssl.key.pem", &s.key),
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
    let ca =
        s.ca.as_deref()
            .context("SSL needs the broker's CA (ssl.ca.location or ssl.truststore.location)")?;
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.context("reading the CA certificates")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .context("reading the client certificate")?;
            let key =
                PrivateKeyDer::from_pem_slice(key.as_bytes()).context("reading the client key")?;
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
