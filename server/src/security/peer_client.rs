//! This node as a client of other nodes: how replica fetchers, transaction markers and
//! verification reach other brokers' inter-broker listener, and how the quorum reaches
//! the controllers' listener, with that listener's security as Kafka's brokers use it
//! (its trust store and keystore for TLS, `sasl.mechanism.inter.broker.protocol` and the
//! `username`/`password` of its JAAS config for SASL); the client halves of PLAIN and
//! SCRAM; and TLS over a compio socket for the shards' connections.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use super::listener::SecurityProtocol;
use super::sasl::Mechanism;
use super::scram;
use super::tls::{self, Keys};

/// How this node connects to one listener of its peers.
pub struct PeerSecurity {
    pub listener: String,
    pub protocol: SecurityProtocol,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslLogin>,
    /// The principal the peers see this node as.
    pub principal: String,
    /// Why this node cannot connect to that listener (a one-node broker whose listener
    /// lacks a client side: it has no peers until one joins, and then says so).
    pub unusable: Option<String>,
}

/// A SCRAM salted password with the salt and iterations it was derived with.
struct Salted {
    salt: Vec<u8>,
    iterations: i32,
    password: Vec<u8>,
}

/// The credentials this node authenticates with.
pub struct SaslLogin {
    pub mechanism: Mechanism,
    pub username: String,
    password: String,
    /// The last SCRAM salted password (salt, iterations, result): PBKDF2 runs once per
    /// credential, not at every reconnection of a fetcher.
    salted: Mutex<Option<Salted>>,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl PeerSecurity {
    /// Plaintext, as ANONYMOUS.
    pub fn plaintext(listener: &str) -> Self {
        PeerSecurity {
            listener: listener.to_owned(),
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            sasl: None,
            principal: super::ANONYMOUS.to_owned(),
            unusable: None,
        }
    }

    /// A listener this node cannot connect to, for `why`.
    pub fn unusable(listener: &str, why: String) -> Self {
        PeerSecurity {
            unusable: Some(why),
            ..Self::plaintext(listener)
        }
    }

    /// The client side of listener `k` speaking `protocol`. SASL takes its mechanism from
    /// `sasl.mechanism.inter.broker.protocol` (`mechanism_key`; Kafka's default GSSAPI is
    /// not served, so it must be set) and the credentials from the `username` and
    /// `password` options of `<mechanism>.sasl.jaas.config` or `sasl.jaas.config`.
    pub fn new(k: Keys, protocol: SecurityProtocol, mechanism_key: &str) -> Result<Self, String> {
        let name = k.name;
        let tls = if protocol.tls() {
            Some(Arc::new(tls::client_config(k)?))
        } else {
            None
        };
        let sasl = if protocol.sasl() {
            let m = k
                .props
                .get(mechanism_key)
                .map(String::as_str)
                .unwrap_or("GSSAPI");
            let mechanism = Mechanism::parse(m)
                .filter(|p| p.name() == m.trim())
                .ok_or_else(|| {
                    format!(
                        "listener {name} is {}: {mechanism_key}={m} is not served (set it to \
                         PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                        protocol.name()
                    )
                })?;
            let prefixed = format!("{}.sasl.jaas.config", mechanism.name().to_lowercase());
            let jaas = k
                .props
                .get(&prefixed)
                .or_else(|| k.props.get("sasl.jaas.config"))
                .ok_or_else(|| {
                    format!(
                        "listener {name}: this node logs in to its peers with {} and needs \
                         listener.name.{}.{prefixed} with username and password",
                        mechanism.name(),
                        name.to_lowercase()
                    )
                })?;
            let (Some(username), Some(password)) =
                (jaas_option(jaas, "username"), jaas_option(jaas, "password"))
            else {
                return Err(format!(
                    "listener {name}: the JAAS config of {} has no username and password for \
                     this node's own login",
                    mechanism.name()
                ));
            };
            Some(SaslLogin {
                mechanism,
                username,
                password,
                salted: Mutex::new(None),
            })
        } else {
            None
        };
        let principal = match (&sasl, &tls) {
            (Some(s), _) => format!("User:{}", s.username),
            (None, Some(_)) => tls::own_principal(k).unwrap_or_else(|| super::ANONYMOUS.into()),
            (None, None) => super::ANONYMOUS.to_owned(),
        };
        Ok(PeerSecurity {
            listener: name.to_owned(),
            protocol,
            tls,
            sasl,
            principal,
            unusable: None,
        })
    }
}

/// The value of option `key` in a JAAS login module line (`Module required a="x" b=y;`).
pub fn jaas_option(jaas: &str, key: &str) -> Option<String> {
    let mut rest = jaas.trim();
    // The module's class and its control flag come first.
    for _ in 0..2 {
        rest = rest.split_once(char::is_whitespace)?.1.trim_start();
    }
    while !rest.is_empty() && !rest.starts_with(';') {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end?..])
        } else {
            let end = after
                .find(|c: char| c.is_whitespace() || c == ';')
                .unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        if k.trim() == key {
            return Some(value);
        }
        rest = tail.trim_start();
    }
    None
}

/// PLAIN's token: `authzid NUL user NUL password` with an empty authzid.
pub fn plain_token(login: &SaslLogin) -> Vec<u8> {
    format!("\0{}\0{}", login.username, login.password).into_bytes()
}

/// The client of a SCRAM exchange (RFC 5802) between its first and final messages.
pub struct ScramClient {
    mechanism: Mechanism,
    nonce: String,
    first_bare: String,
    server_signature: Vec<u8>,
}

/// `saslname`: `,` and `=` escaped.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// Starts an exchange; returns the client-first message to send.
    pub fn start(login: &SaslLogin) -> (ScramClient, Vec<u8>) {
        let nonce = B64.encode(scram::random_bytes(24));
        let first_bare = format!("n={},r={nonce}", sasl_name(&login.username));
        let msg = format!("n,,{first_bare}").into_bytes();
        let client = ScramClient {
            mechanism: login.mechanism,
            nonce,
            first_bare,
            server_signature: Vec::new(),
        };
        (client, msg)
    }

    /// Answers the server-first message with the client-final one (the proof).
    pub fn respond(&mut self, login: &SaslLogin, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first message is not UTF-8".to_owned())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = B64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<i32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed server-first message {server_first:?}"));
        };
        if !nonce.starts_with(&self.nonce) || !(1..=1 << 20).contains(&iterations) {
            return Err("server-first message with a foreign nonce or bad iterations".into());
        }
        let m = self.mechanism;
        let salted = {
            let mut cache = login.salted.lock().unwrap_or_else(|e| e.into_inner());
            match cache.as_ref() {
                Some(s) if s.salt == salt && s.iterations == iterations => s.password.clone(),
                _ => {
                    let password = scram::salted_password(m, &login.password, &salt, iterations);
                    *cache = Some(Salted {
                        salt: salt.clone(),
                        iterations,
                        password: password.clone(),
                    });
                    password
                }
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let client_key = scram::mac(m, &salted, b"Client Key");
        let stored_key = ring::digest::digest(scram::digest_alg(m), &client_key);
        let signature = scram::mac(m, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = scram::mac(m, &salted, b"Server Key");
        self.server_signature = scram::mac(m, &server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proved it knows the credential.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).unwrap_or("");
        match text.strip_prefix("v=").map(|v| B64.decode(v)) {
            Some(Ok(sig)) if scram::constant_time_eq(&sig, &self.server_signature) => Ok(()),
            _ => Err(format!(
                "the server's SCRAM signature does not verify ({text:?})"
            )),
        }
    }
}

/// The name a peer at `address` (host:port, `[v6]:port`) is verified as over TLS.
pub fn server_name(address: &str) -> std::io::Result<ServerName<'static>> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}")))
}

/// Plaintext bytes encrypted per socket write.
const WRITE_CHUNK: usize = 256 * 1024;

/// A TLS connection to a peer over a compio socket (one owner: requests and responses
/// alternate).
pub struct TlsClientStream {
    sock: TcpStream,
    conn: ClientConnection,
    inbox: tls::Inbox,
}

impl TlsClientStream {
    /// Runs the client handshake with the peer at `address` (host:port).
    pub async fn connect(
        config: Arc<rustls::ClientConfig>,
        address: &str,
        mut sock: TcpStream,
    ) -> std::io::Result<TlsClientStream> {
        let name = server_name(address)?;
        let mut conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut plain = BytesMut::new();
        tls::shake(&mut conn, &mut sock, &mut plain).await?;
        conn.set_buffer_limit(None);
        Ok(TlsClientStream {
            sock,
            conn,
            inbox: tls::Inbox::new(plain),
        })
    }

    /// Reads exactly `n` decrypted bytes.
    pub async fn read_exact(&mut self, n: usize) -> std::io::Result<Bytes> {
        let conn = &mut self.conn;
        self.inbox
            .read_exact(
                &mut self.sock,
                |data, plain| tls::feed(conn, data, plain),
                n,
            )
            .await
    }

    /// Encrypts and sends `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(WRITE_CHUNK) {
            std::io::Write::write_all(&mut self.conn.writer(), chunk)?;
            let out = tls::pending(&mut self.conn)?;
            let BufResult(res, _) = self.sock.write_all(out).await;
            res?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_options_are_read_with_quotes_escapes_and_bare_values() {
        let jaas = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="p\"w d" user_admin="x" tokenauth=false;"#;
        assert_eq!(jaas_option(jaas, "username").as_deref(), Some("broker"));
        assert_eq!(jaas_option(jaas, "password").as_deref(), Some("p\"w d"));
        assert_eq!(jaas_option(jaas, "tokenauth").as_deref(), Some("false"));
        assert_eq!(jaas_option(jaas, "user"), None);
        assert_eq!(jaas_option("Module required;", "username"), None);
    }

    #[test]
    fn the_scram_client_and_the_brokers_server_side_agree() {
        for m in Mechanism::SCRAM {
            let login = SaslLogin {
                mechanism: m,
                username: "bro,ker=1".into(),
                password: "secret".into(),
                salted: Mutex::new(None),
            };
            let cred = scram::credential_for_password(m, "secret", 4096);
            let (mut client, first) = ScramClient::start(&login);
            let (exchange, server_first) =
                scram::ScramExchange::start(m, &first, |_| Some(cred.clone()), b"k")
                    .expect("server-first");
            assert_eq!(exchange.user, "bro,ker=1");
            let client_final = client.respond(&login, &server_first).expect("client-final");
            let server_final = exchange.finish(&client_final).expect("server accepts");
            client
                .finish(&server_final)
                .expect("client verifies the server");
            assert!(client.finish(b"v=AAAA").is_err());

            let wrong = SaslLogin {
                password: "wrong".into(),
                salted: Mutex::new(None),
                ..login
            };
            let (mut client, first) = ScramClient::start(&wrong);
            let (exchange, server_first) =
                scram::ScramExchange::start(m, &first, |_| Some(cred), b"k").expect("server-first");
            let client_final = client.respond(&wrong, &server_first).expect("client-final");
            assert!(exchange.finish(&client_final).is_err());
        }
    }
}
