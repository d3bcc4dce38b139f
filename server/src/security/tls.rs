//! TLS on SSL and SASL_SSL listeners (SPEC S2), with rustls: the server configuration
//! from Kafka's PEM keys (`ssl.keystore.location` holding key and chain, or the inline
//! `ssl.keystore.certificate.chain` / `ssl.keystore.key`; `ssl.key.password` for an
//! encrypted PKCS#8 key; `ssl.truststore.*` for client certificates), `ssl.client.auth`,
//! `ssl.enabled.protocols` and `ssl.cipher.suites`; the handshake; and the record layer
//! a connection reads frames from and writes responses to. The configuration can be
//! replaced while the listener runs: new connections get the new certificate, open ones
//! keep theirs.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::listener::Listener;
use super::principal::{self, PrincipalRules};

/// Time a client has to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Plaintext bytes encrypted per socket write.
const WRITE_CHUNK: usize = 256 * 1024;

/// Socket bytes read per TLS read.
const READ_CHUNK: usize = 64 * 1024;

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// A TLS listener's server side.
pub struct TlsServer {
    listener: Listener,
    config: ArcSwap<rustls::ServerConfig>,
    pub client_auth: ClientAuth,
    pub rules: PrincipalRules,
    /// Try kernel TLS after each handshake (`ringmq.ssl.ktls`, and the kernel has it).
    pub ktls: bool,
    /// The key and certificate files, with the modification times loaded.
    files: Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl TlsServer {
    pub fn new(l: &Listener) -> Result<Self, String> {
        let config = build(l)?;
        let client_auth = client_auth(Keys::of(l))?;
        let rules = match l.prop("ssl.principal.mapping.rules") {
            Some(r) => PrincipalRules::parse(r)?,
            None => PrincipalRules::default(),
        };
        let files = ["ssl.keystore.location", "ssl.truststore.location"]
            .iter()
            .filter_map(|k| l.prop(k))
            .map(|p| {
                let p = PathBuf::from(p);
                let t = mtime(&p);
                (p, t)
            })
            .collect();
        Ok(TlsServer {
            listener: l.clone(),
            config: ArcSwap::from_pointee(config),
            client_auth,
            rules,
            ktls: wants_ktls(l) && super::ktls::available(),
            files: Mutex::new(files),
        })
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.load_full()
    }

    pub fn listener_name(&self) -> &str {
        &self.listener.name
    }

    /// Loads the key, certificates and trust store again (new connections use them).
    /// On error the running configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.listener)?;
        self.config.store(Arc::new(config));
        if let Ok(mut files) = self.files.lock() {
            for (p, t) in files.iter_mut() {
                *t = mtime(p);
            }
        }
        tracing::info!(listener = %self.listener.name, "TLS certificates loaded");
        Ok(())
    }

    /// Reloads if a key or certificate file changed since it was loaded. A change that
    /// does not load is reported once, not at every check.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let changed = match self.files.lock() {
            Ok(mut files) => {
                let changed = files.iter().any(|(p, t)| mtime(p) != *t);
                if changed {
                    for (p, t) in files.iter_mut() {
                        *t = mtime(p);
                    }
                }
                changed
            }
            Err(_) => false,
        };
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }
}

/// Reloads every TLS listener of the broker (the admin API's `POST /v1/tls/reload`);
/// returns how many there are. The first failure is the error; the others still load.
pub fn reload_all(listeners: &[Arc<super::ListenerRuntime>]) -> Result<usize, String> {
    let mut first_error = None;
    let mut n = 0;
    for tls in listeners.iter().filter_map(|l| l.tls.as_ref()) {
        n += 1;
        if let Err(e) = tls.reload() {
            tracing::warn!(listener = %tls.listener_name(), error = %e, "TLS reload failed; keeping the running certificates");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(n), Err)
}

/// Watches the TLS listeners' key and certificate files every `every`, reloading a
/// listener whose files changed (`ringmq.ssl.reload.check.ms`, 0: off).
pub fn watch(listeners: Vec<Arc<super::ListenerRuntime>>, every: Duration) -> std::io::Result<()> {
    if every.is_zero() || listeners.iter().all(|l| l.tls.is_none()) {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("tls-watch".into())
        .spawn(move || {
            loop {
                // Its own thread, never a shard: parking is the sleep here.
                let until = std::time::Instant::now() + every;
                while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                    std::thread::park_timeout(left);
                }
                for tls in listeners.iter().filter_map(|l| l.tls.as_ref()) {
                    if let Err(e) = tls.reload_if_changed() {
                        tracing::warn!(listener = %tls.listener_name(), error = %e, "TLS files changed but do not load; keeping the running certificates");
                    }
                }
            }
        })
        .map(|_| ())
}

/// `ringmq.ssl.ktls` (default true): offload TLS to the kernel where it can be.
fn wants_ktls(l: &Listener) -> bool {
    l.prop("ringmq.ssl.ktls")
        .is_none_or(|v| v.trim() != "false")
}

fn client_auth(l: Keys) -> Result<ClientAuth, String> {
    match l
        .prop("ssl.client.auth")
        .unwrap_or("none")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "none" => Ok(ClientAuth::None),
        "requested" => Ok(ClientAuth::Requested),
        "required" => Ok(ClientAuth::Required),
        other => Err(format!(
            "listener {}: ssl.client.auth={other}: expected required, requested or none",
            l.name
        )),
    }
}

/// A listener's security keys, by its name (the server side of a listener, or the client
/// side this broker uses to reach another broker's or a controller's listener).
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    pub name: &'a str,
    pub props: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> Keys<'a> {
    pub fn of(l: &'a Listener) -> Self {
        Keys {
            name: &l.name,
            props: &l.props,
        }
    }

    fn prop(&self, key: &str) -> Option<&'a str> {
        self.props.get(key).map(String::as_str)
    }
}

fn read_pem(k: Keys, key: &str) -> Result<Option<String>, String> {
    match k.prop(key) {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map(Some)
            .map_err(|e| format!("listener {}: {key}={path}: {e}", k.name)),
    }
}

fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

/// The private key of a PEM text: PKCS#8, PKCS#1 or SEC1, or PKCS#8 encrypted with
/// `password` (`ssl.key.password`).
fn private_key(
    pem: &str,
    password: Option<&str>,
    what: &str,
) -> Result<PrivateKeyDer<'static>, String> {
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let password = password.ok_or_else(|| {
            format!("{what}: the private key is encrypted and ssl.key.password is not set")
        })?;
        let start = pem
            .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            .unwrap_or(0);
        let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
        let end = pem[start..]
            .find(end_marker)
            .map(|i| start + i + end_marker.len())
            .ok_or_else(|| format!("{what}: unterminated encrypted key"))?;
        let (_, der) = pkcs8::der::pem::decode_vec(&pem.as_bytes()[start..end])
            .map_err(|e| format!("{what}: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| format!("{what}: {e}"))?;
        let doc = info
            .decrypt(password)
            .map_err(|_| format!("{what}: cannot decrypt the private key with ssl.key.password"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            doc.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("{what}: no usable private key ({e})"))
}

/// A certificate chain and its private key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// What a JKS or PKCS12 store holds: its private keys with their chains, and its
/// trusted certificates.
#[derive(Default)]
struct JavaStore {
    keys: Vec<Identity>,
    trusted: Vec<CertificateDer<'static>>,
}

/// Reads the JKS or PKCS12 store `<which>.location` (`which`: keystore or truststore)
/// with `<which>.password`; a JKS private key with `ssl.key.password` (else the store's).
fn java_store(k: Keys, which: &str, store_type: &str) -> Result<JavaStore, String> {
    let name = k.name;
    let location_key = format!("ssl.{which}.location");
    let path = k.prop(&location_key).ok_or_else(|| {
        format!("listener {name}: ssl.{which}.type={store_type} needs {location_key}")
    })?;
    let what = format!("listener {name} {which} {path}");
    let bytes = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
    let password = k
        .prop(&format!("ssl.{which}.password"))
        .ok_or_else(|| format!("{what}: a {store_type} store needs ssl.{which}.password"))?;
    let mut out = JavaStore::default();
    if store_type.eq_ignore_ascii_case("JKS") {
        let mut store = jks::KeyStore::with_options(jks::KeyStoreOptions {
            min_password_len: 0,
            ..Default::default()
        });
        store
            .load(bytes.as_slice(), password.as_bytes())
            .map_err(|e| format!("{what}: not a JKS store for this password ({e})"))?;
        let key_password = k.prop("ssl.key.password").unwrap_or(password);
        for alias in store.aliases() {
            if store.is_private_key_entry(&alias) {
                let entry = store
                    .get_private_key_entry(&alias, key_password.as_bytes())
                    .map_err(|e| {
                        format!(
                            "{what}: cannot decrypt the key {alias:?} with ssl.key.password ({e})"
                        )
                    })?;
                let chain = entry
                    .certificate_chain
                    .iter()
                    .map(|c| CertificateDer::from(c.content.clone()))
                    .collect();
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(entry.private_key));
                out.keys.push((chain, key));
            } else if let Ok(t) = store.get_trusted_certificate_entry(&alias) {
                out.trusted
                    .push(CertificateDer::from(t.certificate.content.clone()));
            }
        }
    } else {
        let store = p12_keystore::KeyStore::from_pkcs12(
            &bytes,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| format!("{what}: not a PKCS12 store for this password ({e})"))?;
        for (_, entry) in store.entries() {
            match entry {
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                    let certs = chain
                        .certs()
                        .iter()
                        .map(|c| CertificateDer::from(c.as_der().to_vec()))
                        .collect();
                    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                        chain.key().as_der().to_vec(),
                    ));
                    out.keys.push((certs, key));
                }
                p12_keystore::KeyStoreEntry::Certificate(c) => {
                    out.trusted.push(CertificateDer::from(c.as_der().to_vec()));
                }
                p12_keystore::KeyStoreEntry::Secret(_) => {}
            }
        }
    }
    Ok(out)
}

/// `ssl.<which>.type`: PEM (ringmq's default, Kafka's since 2.7), JKS or PKCS12.
fn store_type<'a>(k: Keys<'a>, which: &str) -> Result<&'a str, String> {
    let t = k.prop(&format!("ssl.{which}.type")).unwrap_or("PEM").trim();
    if ["PEM", "JKS", "PKCS12"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(t))
    {
        Ok(t)
    } else {
        Err(format!(
            "listener {}: ssl.{which}.type={t} is not supported (PEM, JKS or PKCS12)",
            k.name
        ))
    }
}

/// The keystore (`ssl.keystore.location`, or the inline `ssl.keystore.certificate.chain`
/// and `ssl.keystore.key`); `None` when neither is set.
fn keystore(k: Keys) -> Result<Option<Identity>, String> {
    let name = k.name;
    let store_type = store_type(k, "keystore")?;
    if !store_type.eq_ignore_ascii_case("PEM") {
        if k.prop("ssl.keystore.location").is_none() {
            return Ok(None);
        }
        let mut store = java_store(k, "keystore", store_type)?;
        if store.keys.len() > 1 {
            tracing::warn!(listener = %name, "the keystore holds several private keys; using the first");
        }
        return match store.keys.drain(..).next() {
            Some(identity) if !identity.0.is_empty() => Ok(Some(identity)),
            _ => Err(format!(
                "listener {name}: the keystore has no private key with its certificate chain"
            )),
        };
    }
    let (chain, key) = match k.prop("ssl.keystore.certificate.chain") {
        Some(chain) => {
            let key = k.prop("ssl.keystore.key").ok_or_else(|| {
                format!("listener {name}: ssl.keystore.certificate.chain needs ssl.keystore.key")
            })?;
            (chain.to_owned(), key.to_owned())
        }
        None => match read_pem(k, "ssl.keystore.location")? {
            Some(text) => (text.clone(), text),
            None => return Ok(None),
        },
    };
    let what = format!("listener {name} keystore");
    let certs = certificates(&chain, &what)?;
    let key = private_key(&key, k.prop("ssl.key.password"), &what)?;
    Ok(Some((certs, key)))
}

/// The trust store (`ssl.truststore.location` or the inline `ssl.truststore.certificates`);
/// `None` when neither is set.
fn truststore(k: Keys) -> Result<Option<rustls::RootCertStore>, String> {
    let name = k.name;
    let store_type = store_type(k, "truststore")?;
    let certs = if !store_type.eq_ignore_ascii_case("PEM") {
        if k.prop("ssl.truststore.location").is_none() {
            return Ok(None);
        }
        let store = java_store(k, "truststore", store_type)?;
        // A keystore used as a trust store trusts the chains of its keys (as Java does).
        let mut certs = store.trusted;
        for (chain, _) in store.keys {
            certs.extend(chain);
        }
        if certs.is_empty() {
            return Err(format!(
                "listener {name}: the truststore holds no certificate"
            ));
        }
        certs
    } else {
        let pem = match k.prop("ssl.truststore.certificates") {
            Some(inline) => inline.to_owned(),
            None => match read_pem(k, "ssl.truststore.location")? {
                Some(pem) => pem,
                None => return Ok(None),
            },
        };
        certificates(&pem, &format!("listener {name} truststore"))?
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("listener {name} truststore: {e}"))?;
    }
    Ok(Some(roots))
}

/// The crypto provider with `ssl.cipher.suites` applied, and `ssl.enabled.protocols`.
fn provider_and_versions(
    k: Keys,
) -> Result<
    (
        Arc<rustls::crypto::CryptoProvider>,
        Vec<&'static rustls::SupportedProtocolVersion>,
    ),
    String,
> {
    let name = k.name;
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(list) = k.prop("ssl.cipher.suites").filter(|s| !s.trim().is_empty()) {
        let wanted: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
        provider.cipher_suites.retain(|s| {
            let rustls_name = format!("{:?}", s.suite());
            let java_name = rustls_name.replacen("TLS13_", "TLS_", 1);
            wanted.iter().any(|w| *w == rustls_name || *w == java_name)
        });
        if provider.cipher_suites.is_empty() {
            return Err(format!(
                "listener {name}: none of ssl.cipher.suites={list} is supported (ringmq offers \
                 the ECDHE AES-GCM and ChaCha20 suites of TLS 1.2 and the TLS 1.3 suites)"
            ));
        }
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    let protocols = k.prop("ssl.enabled.protocols").unwrap_or("TLSv1.2,TLSv1.3");
    for p in protocols
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match p {
            "TLSv1.2" => versions.push(&rustls::version::TLS12),
            "TLSv1.3" => versions.push(&rustls::version::TLS13),
            other => {
                return Err(format!(
                    "listener {name}: ssl.enabled.protocols: {other} is not supported (TLSv1.2, TLSv1.3)"
                ));
            }
        }
    }
    Ok((Arc::new(provider), versions))
}

/// Builds the rustls configuration of a TLS listener from its keys.
fn build(l: &Listener) -> Result<rustls::ServerConfig, String> {
    server_config(Keys::of(l), wants_ktls(l) && super::ktls::available())
}

/// The server side of TLS on listener `k`: its keystore, `ssl.client.auth` against its
/// trust store, its protocols and suites; `ktls`: keep the session keys for the kernel.
pub fn server_config(k: Keys, ktls: bool) -> Result<rustls::ServerConfig, String> {
    let name = k.name;
    let (certs, key) = keystore(k)?.ok_or_else(|| {
        format!(
            "listener {name} uses TLS: set ssl.keystore.location (a PEM file with the \
             private key and the certificate chain) or ssl.keystore.certificate.chain \
             and ssl.keystore.key"
        )
    })?;
    let (provider, versions) = provider_and_versions(k)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("listener {name}: {e}"))?;
    let auth = client_auth(k)?;
    let builder = if auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let roots = truststore(k)?.ok_or_else(|| {
            format!(
                "listener {name}: ssl.client.auth needs a trust store \
                 (ssl.truststore.location or ssl.truststore.certificates, PEM)"
            )
        })?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if auth == ClientAuth::Requested {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| format!("listener {name} truststore: {e}"))?,
        )
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("listener {name} keystore: {e}"))?;
    config.ignore_client_order = true;
    // kTLS needs the session keys once the handshake is done.
    config.enable_secret_extraction = ktls;
    Ok(config)
}

/// The client side of TLS to another node's listener `k` (the inter-broker or controller
/// listener, with that listener's keys, as Kafka's brokers use them): the peer's
/// certificate checked against the trust store, and its host name too unless
/// `ssl.endpoint.identification.algorithm` is empty; the keystore, when set, is this
/// node's client certificate (for `ssl.client.auth`).
pub fn client_config(k: Keys) -> Result<rustls::ClientConfig, String> {
    let name = k.name;
    let roots = truststore(k)?.ok_or_else(|| {
        format!(
            "listener {name}: this node connects to other nodes' {name} listener over TLS and \
             needs a trust store for their certificates (ssl.truststore.location or \
             ssl.truststore.certificates, PEM)"
        )
    })?;
    let (provider, versions) = provider_and_versions(k)?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| format!("listener {name} truststore: {e}"))?;
    let check_host = k
        .prop("ssl.endpoint.identification.algorithm")
        .is_none_or(|a| !a.trim().is_empty());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("listener {name}: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier {
            inner: verifier,
            check_host,
        }));
    match keystore(k)? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("listener {name} keystore: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// WebPKI's verification of a peer's chain, with the host name check Kafka's
/// `ssl.endpoint.identification.algorithm=` (empty) turns off.
#[derive(Debug)]
struct ServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_host: bool,
}

impl rustls::client::danger::ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The principal a node's own certificate maps to on listener `k` (what a peer that
/// requires client certificates sees it as), if it has one.
pub fn own_principal(k: Keys) -> Option<String> {
    let (certs, _) = keystore(k).ok()??;
    let subject = principal::subject_of(certs.first()?)?;
    let rules = match k.prop("ssl.principal.mapping.rules") {
        Some(r) => PrincipalRules::parse(r).ok()?,
        None => PrincipalRules::default(),
    };
    Some(format!("User:{}", rules.map(&subject)))
}

/// Feeds socket bytes to rustls, processes them, and moves the decrypted bytes to
/// `plain` as they come (rustls holds at most 16 KiB of them and refuses more records
/// until they are read). Returns whether the client sent close_notify.
pub(super) fn feed<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    mut data: &[u8],
    plain: &mut BytesMut,
) -> std::io::Result<bool> {
    let mut closed = false;
    while !data.is_empty() {
        conn.read_tls(&mut data)?;
        conn.process_new_packets()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        closed |= drain(conn, plain)?;
    }
    Ok(closed)
}

/// Moves what rustls decrypted to `plain`; true once the peer closed (close_notify).
fn drain<D>(conn: &mut rustls::ConnectionCommon<D>, plain: &mut BytesMut) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(k) => plain.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Writes what rustls has to send.
async fn flush(conn: &RefCell<ServerConnection>, sock: &mut TcpStream) -> std::io::Result<()> {
    loop {
        let out = pending(&mut conn.borrow_mut())?;
        if out.is_empty() {
            return Ok(());
        }
        let BufResult(res, _) = sock.write_all(out).await;
        res?;
    }
}

/// The TLS bytes rustls has queued to send (empty when none).
pub(super) fn pending<D>(conn: &mut rustls::ConnectionCommon<D>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// Runs a TLS handshake (either side) on `sock` to its end; what the peer sent right
/// behind it, decrypted, goes to `early`. On a failure the alert rustls queued is sent
/// (the peer learns why) before giving up.
pub(super) async fn shake<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut TcpStream,
    early: &mut BytesMut,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let out = pending(conn)?;
        if !out.is_empty() {
            let BufResult(res, _) = sock.write_all(out).await;
            res?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        buf.clear();
        let BufResult(res, b) = sock.read(buf).await;
        buf = b;
        if res? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Err(e) = feed(conn, &buf, early) {
            if let Ok(out) = pending(conn) {
                let _ = sock.write_all(out).await;
            }
            return Err(e);
        }
    }
}

/// Runs the server handshake on `sock`. Returns the connection and the principal its
/// client certificate maps to (ANONYMOUS without one).
pub async fn handshake(
    server: &TlsServer,
    sock: &mut TcpStream,
) -> std::io::Result<(Handshaken, String)> {
    let mut conn = ServerConnection::new(server.config()).map_err(std::io::Error::other)?;
    // Requests the client sends right behind its Finished message.
    let mut early = BytesMut::new();
    shake(&mut conn, sock, &mut early).await?;
    conn.set_buffer_limit(None);
    let principal = match conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| principal::subject_of(c))
    {
        Some(subject) => format!("User:{}", server.rules.map(&subject)),
        None => super::ANONYMOUS.to_owned(),
    };
    Ok((Handshaken { conn, early }, principal))
}

/// A connection past its handshake, with any bytes the client already sent.
pub struct Handshaken {
    conn: ServerConnection,
    early: BytesMut,
}

/// Why a connection was not moved to kernel TLS.
pub enum Fallback {
    /// It goes on in user space (no kernel TLS, or a cipher the kernel does not take).
    UserSpace(Box<Handshaken>, String),
    /// The kernel refused the keys after rustls gave them up: the connection is lost.
    Lost(std::io::Error),
}

impl Handshaken {
    /// Moves the connection to kernel TLS; returns the decrypted bytes the client already
    /// sent, to be read before the socket.
    pub fn offload(self, sock: &TcpStream) -> Result<BytesMut, Fallback> {
        let Handshaken { conn, early } = self;
        match super::ktls::offload(sock, conn) {
            Ok(()) => Ok(early),
            Err(super::ktls::NotOffloaded::Unsupported(conn, why)) => Err(Fallback::UserSpace(
                Box::new(Handshaken { conn: *conn, early }),
                why,
            )),
            Err(super::ktls::NotOffloaded::Failed(e)) => Err(Fallback::Lost(e)),
        }
    }
}

/// Decrypted bytes waiting to be read from a TLS connection, and the buffer socket bytes
/// come in through (the server's reader and the peer client share it).
pub(super) struct Inbox {
    plain: BytesMut,
    buf: Vec<u8>,
    /// The peer sent close_notify.
    closed: bool,
}

impl Inbox {
    pub(super) fn new(early: BytesMut) -> Self {
        Inbox {
            plain: early,
            buf: Vec::with_capacity(READ_CHUNK),
            closed: false,
        }
    }

    /// Reads exactly `n` decrypted bytes from `sock`, handing each read to TLS through
    /// `decrypt` ([`feed`] on the connection); `UnexpectedEof` once the peer is gone.
    pub(super) async fn read_exact(
        &mut self,
        sock: &mut TcpStream,
        mut decrypt: impl FnMut(&[u8], &mut BytesMut) -> std::io::Result<bool>,
        n: usize,
    ) -> std::io::Result<Bytes> {
        loop {
            if self.plain.len() >= n {
                return Ok(self.plain.split_to(n).freeze());
            }
            if self.closed {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.clear();
            let buf = std::mem::take(&mut self.buf);
            let BufResult(res, buf) = sock.read(buf).await;
            self.buf = buf;
            if res? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.closed = decrypt(&self.buf, &mut self.plain)?;
        }
    }
}

/// The read side of a TLS connection: decrypted bytes, frame by frame.
pub struct TlsReader {
    sock: TcpStream,
    conn: Rc<RefCell<ServerConnection>>,
    inbox: Inbox,
}

/// The write side of a TLS connection.
pub struct TlsWriter {
    sock: TcpStream,
    conn: Rc<RefCell<ServerConnection>>,
}

/// Splits a handshaken connection into its reader and writer.
pub fn split(sock: TcpStream, shaken: Handshaken) -> (TlsReader, TlsWriter) {
    let conn = Rc::new(RefCell::new(shaken.conn));
    let reader = TlsReader {
        sock: sock.clone(),
        conn: Rc::clone(&conn),
        inbox: Inbox::new(shaken.early),
    };
    (reader, TlsWriter { sock, conn })
}

impl TlsReader {
    /// Reads exactly `n` decrypted bytes; `UnexpectedEof` when the client is gone.
    pub async fn read_exact(&mut self, n: usize) -> std::io::Result<Bytes> {
        let conn = &self.conn;
        self.inbox
            .read_exact(
                &mut self.sock,
                |data, plain| feed(&mut conn.borrow_mut(), data, plain),
                n,
            )
            .await
    }
}

impl TlsWriter {
    /// Encrypts and sends `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(WRITE_CHUNK) {
            self.conn.borrow_mut().writer().write_all(chunk)?;
            flush(&self.conn, &mut self.sock).await?;
        }
        if data.is_empty() {
            flush(&self.conn, &mut self.sock).await?;
        }
        Ok(())
    }

    /// The socket, to shut it down.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }
}
