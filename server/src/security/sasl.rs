//! SASL on SASL_PLAINTEXT and SASL_SSL listeners (SPEC S3): the mechanisms a listener
//! enables, a connection's progress through SaslHandshake and SaslAuthenticate, and the
//! checks of PLAIN (`authzid NUL user NUL password`) and SCRAM tokens against the users
//! in the metadata log (and, for PLAIN, the `user_<name>="..."` entries of a Kafka JAAS
//! config). A failure tells the client only that authentication failed: the broker logs
//! an audit line and makes the next attempt from that address wait (back-off).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::listener::Listener;
use super::scram::{self, Credential, ScramExchange};
use crate::metadata::MetadataImage;

/// The SASL mechanisms ringmq serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::ScramSha256),
            "SCRAM-SHA-512" => Some(Self::ScramSha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The ScramMechanism code of Describe/AlterUserScramCredentials.
    pub fn scram_code(self) -> i8 {
        match self {
            Self::Plain => 0,
            Self::ScramSha256 => 1,
            Self::ScramSha512 => 2,
        }
    }

    pub fn from_scram_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::ScramSha256),
            2 => Some(Self::ScramSha512),
            _ => None,
        }
    }

    pub const SCRAM: [Mechanism; 2] = [Mechanism::ScramSha256, Mechanism::ScramSha512];
}

/// A SASL listener's settings.
#[derive(Debug, Clone)]
pub struct SaslConfig {
    /// `sasl.enabled.mechanisms` (default: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub mechanisms: Vec<Mechanism>,
    /// `connections.max.reauth.ms`: how long an authentication lasts (0: for ever).
    pub reauth_ms: u64,
    /// PLAIN users from the JAAS config (`user_alice="secret"`), Kafka's static form.
    pub plain_users: BTreeMap<String, String>,
}

impl SaslConfig {
    pub fn new(l: &Listener) -> Result<Self, String> {
        let mechanisms = match l.prop("sasl.enabled.mechanisms") {
            None => vec![
                Mechanism::Plain,
                Mechanism::ScramSha256,
                Mechanism::ScramSha512,
            ],
            Some(list) => list
                .split(',')
                .filter(|m| !m.trim().is_empty())
                .map(|m| {
                    Mechanism::parse(m).ok_or_else(|| {
                        format!(
                            "listener {}: SASL mechanism {} is not supported (PLAIN, \
                             SCRAM-SHA-256, SCRAM-SHA-512)",
                            l.name,
                            m.trim()
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if mechanisms.is_empty() {
            return Err(format!(
                "listener {}: sasl.enabled.mechanisms is empty",
                l.name
            ));
        }
        let reauth_ms = match l.prop("connections.max.reauth.ms") {
            None => 0,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("connections.max.reauth.ms={v}: not a duration in ms"))?,
        };
        let jaas = l
            .prop("plain.sasl.jaas.config")
            .or_else(|| l.prop("sasl.jaas.config"));
        let plain_users = jaas.map(parse_jaas_users).unwrap_or_default();
        Ok(SaslConfig {
            mechanisms,
            reauth_ms,
            plain_users,
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.mechanisms.iter().map(|m| m.name()).collect()
    }
}

/// The `user_<name>="<password>"` options of a JAAS login module line.
pub fn parse_jaas_users(jaas: &str) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    let mut rest = jaas;
    while let Some(i) = rest.find("user_") {
        rest = &rest[i + 5..];
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let Some(quoted) = after.strip_prefix('"') else {
            continue;
        };
        let Some((password, tail)) = quoted.split_once('"') else {
            break;
        };
        users.insert(name.trim().to_owned(), password.to_owned());
        rest = tail;
    }
    users
}

/// A connection's SASL progress.
#[derive(Debug, Clone)]
pub enum SaslState {
    /// Waiting for SaslHandshake.
    Start,
    /// SaslHandshake chose `mechanism`; the first token is next. `raw`: handshake v0,
    /// whose tokens come as bare size-prefixed frames instead of SaslAuthenticate.
    /// `reauth`: a re-authentication of a connection that was authenticated.
    Handshaken {
        mechanism: Mechanism,
        raw: bool,
        reauth: bool,
    },
    /// A SCRAM exchange waiting for the client-final message.
    Scram {
        exchange: Box<ScramExchange>,
        raw: bool,
        reauth: bool,
    },
    /// Authenticated (or a listener without SASL).
    Done,
}

impl SaslState {
    /// Whether this connection re-authenticates: requests keep flowing meanwhile.
    pub fn reauthenticating(&self) -> bool {
        matches!(
            self,
            SaslState::Handshaken { reauth: true, .. } | SaslState::Scram { reauth: true, .. }
        )
    }

    /// Whether the next frame is a bare SASL token (handshake v0).
    pub fn raw_tokens(&self) -> bool {
        matches!(
            self,
            SaslState::Handshaken { raw: true, .. } | SaslState::Scram { raw: true, .. }
        )
    }
}

/// What one token did.
pub enum Step {
    /// Send this challenge and wait for the next token.
    Challenge(Vec<u8>, SaslState),
    /// Authenticated as `user`; send this last message.
    Success { user: String, reply: Vec<u8> },
    /// Authentication failed (`why` is for the audit log only).
    Failure { user: Option<String>, why: String },
}

/// The user's SCRAM credential for `mechanism`, from the metadata log.
pub fn scram_credential(image: &MetadataImage, user: &str, m: Mechanism) -> Option<Credential> {
    image.users.get(user)?.scram.get(m.name()).cloned()
}

/// Whether `user` can still authenticate on this listener (a deleted user's sessions end).
pub fn user_exists(image: &MetadataImage, sasl: &SaslConfig, user: &str) -> bool {
    sasl.plain_users.contains_key(user)
        || image.users.get(user).is_some_and(|u| !u.scram.is_empty())
}

/// Runs one token of `mechanism`. PLAIN's password check against a SCRAM credential
/// costs a PBKDF2 (milliseconds): it runs on its own thread, not the shard's.
pub async fn step(
    sasl: &SaslConfig,
    image: &MetadataImage,
    state: SaslState,
    token: &[u8],
    secret: &[u8],
) -> Step {
    match state {
        SaslState::Handshaken {
            mechanism: Mechanism::Plain,
            ..
        } => plain(sasl, image, token).await,
        SaslState::Handshaken {
            mechanism,
            raw,
            reauth,
        } => match ScramExchange::start(
            mechanism,
            token,
            |u| scram_credential(image, u, mechanism),
            secret,
        ) {
            Ok((exchange, reply)) => Step::Challenge(
                reply,
                SaslState::Scram {
                    exchange: Box::new(exchange),
                    raw,
                    reauth,
                },
            ),
            Err(e) => Step::Failure {
                user: None,
                why: format!("{e:?}"),
            },
        },
        SaslState::Scram { exchange, .. } => match exchange.finish(token) {
            Ok(reply) => Step::Success {
                user: exchange.user.clone(),
                reply,
            },
            Err(e) => Step::Failure {
                user: Some(exchange.user.clone()),
                why: format!("{e:?}"),
            },
        },
        SaslState::Start | SaslState::Done => Step::Failure {
            user: None,
            why: "token outside an exchange".into(),
        },
    }
}

async fn plain(sasl: &SaslConfig, image: &MetadataImage, token: &[u8]) -> Step {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failure {
            user: None,
            why: "malformed PLAIN token".into(),
        };
    };
    let (Ok(authzid), Ok(user), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(user),
        std::str::from_utf8(password),
    ) else {
        return Step::Failure {
            user: None,
            why: "PLAIN token is not UTF-8".into(),
        };
    };
    let user = user.to_owned();
    if !authzid.is_empty() && authzid != user {
        return Step::Failure {
            user: Some(user),
            why: "authorization id differs from the user".into(),
        };
    }
    let ok = if let Some(p) = sasl.plain_users.get(&user) {
        scram::constant_time_eq(p.as_bytes(), password.as_bytes())
    } else {
        let cred = [Mechanism::ScramSha512, Mechanism::ScramSha256]
            .into_iter()
            .find_map(|m| scram_credential(image, &user, m).map(|c| (m, c)));
        match cred {
            Some((m, cred)) => {
                let password = password.to_owned();
                off_shard(move || scram::verify_password(m, &cred, &password)).await
            }
            None => {
                // Spend the same time as a real check.
                let password = password.to_owned();
                let fake = scram::credential_from_salted(
                    Mechanism::ScramSha512,
                    &[0; 64],
                    &[0; 32],
                    scram::MIN_ITERATIONS,
                );
                off_shard(move || scram::verify_password(Mechanism::ScramSha512, &fake, &password))
                    .await
            }
        }
    };
    if ok {
        Step::Success {
            user,
            reply: Vec::new(),
        }
    } else {
        Step::Failure {
            user: Some(user),
            why: "bad credentials".into(),
        }
    }
}

/// Threads that run password checks (PBKDF2, up to 16384 rounds each): a fixed pool, so
/// a flood of logins costs at most this many cores and no thread per attempt.
pub const PASSWORD_CHECK_THREADS: usize = 2;
/// Checks waiting for a pool thread; beyond it an attempt waits on its shard (no thread,
/// no memory beyond the connection's) until there is room.
pub const PASSWORD_CHECK_QUEUE_MAX: usize = 64;

type Check = Box<dyn FnOnce() + Send>;

/// The password-check pool's queue (started on first use).
fn password_checks() -> Option<&'static std::sync::mpsc::SyncSender<Check>> {
    static POOL: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Check>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Check>(PASSWORD_CHECK_QUEUE_MAX);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..PASSWORD_CHECK_THREADS {
            let rx = std::sync::Arc::clone(&rx);
            let started = std::thread::Builder::new()
                .name(format!("sasl-check-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next check, never while running it.
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(check) => check(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a password check thread");
                return None;
            }
        }
        Some(tx)
    })
    .as_ref()
}

/// Runs `f` on the password-check pool and waits for it without blocking the shard;
/// while the pool's queue is full the attempt waits here, on its shard.
async fn off_shard(f: impl FnOnce() -> bool + Send + 'static) -> bool {
    let Some(pool) = password_checks() else {
        return false;
    };
    let (tx, rx) = futures_channel::oneshot::channel();
    let mut check: Check = Box::new(move || {
        let _ = tx.send(f());
    });
    loop {
        match pool.try_send(check) {
            Ok(()) => return rx.await.unwrap_or(false),
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                check = back;
                compio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// Authentication attempts per client address: failures make the next attempt from that
/// address wait before any work is done (100 ms doubling up to 5 s, forgotten after a
/// minute of quiet), and at most [`Self::CONCURRENT_PER_ADDRESS_MAX`] attempts from one
/// address are in progress at once (more fail at once, without a password check).
#[derive(Default)]
pub struct AuthFailures {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    in_progress: Mutex<HashMap<IpAddr, usize>>,
}

/// An attempt in progress from one address (counted until dropped).
pub struct Attempt<'a> {
    failures: &'a AuthFailures,
    ip: IpAddr,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.failures.in_progress.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl AuthFailures {
    pub const FORGET_AFTER: Duration = Duration::from_secs(60);
    pub const MAX_DELAY: Duration = Duration::from_secs(5);
    pub const CONCURRENT_PER_ADDRESS_MAX: usize = 16;

    /// Starts an attempt from `ip`, or None when that address already has
    /// [`Self::CONCURRENT_PER_ADDRESS_MAX`] in progress.
    pub fn begin(&self, ip: IpAddr) -> Option<Attempt<'_>> {
        let mut map = self.in_progress.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= Self::CONCURRENT_PER_ADDRESS_MAX {
            return None;
        }
        *n += 1;
        Some(Attempt { failures: self, ip })
    }

    /// How long an attempt from `ip` waits before its credentials are checked: the
    /// back-off its address's recent failures earned (zero after a quiet minute).
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let Ok(map) = self.by_ip.lock() else {
            return Self::MAX_DELAY;
        };
        match map.get(&ip) {
            Some((n, at)) if at.elapsed() < Self::FORGET_AFTER && *n > 0 => Self::backoff(*n),
            _ => Duration::ZERO,
        }
    }

    fn backoff(failures: u32) -> Duration {
        Duration::from_millis(100u64.saturating_mul(1 << (failures - 1).min(6)))
            .min(Self::MAX_DELAY)
    }

    /// Records a failure from `ip`; returns how long its next attempt will wait.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let Ok(mut map) = self.by_ip.lock() else {
            return Self::MAX_DELAY;
        };
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < Self::FORGET_AFTER);
        let entry = map.entry(ip).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        Self::backoff(entry.0)
    }

    /// A success from `ip` clears its record.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.by_ip.lock() {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_users_are_read_from_a_plain_login_module_line() {
        let users = parse_jaas_users(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice = "alice pw";"#,
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], "alice pw");
        assert_eq!(users["admin"], "admin-secret");
    }

    #[test]
    fn repeated_failures_back_off_and_a_success_resets() {
        let f = AuthFailures::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = f.failed(ip);
        let second = f.failed(ip);
        assert!(second > first);
        for _ in 0..20 {
            assert!(f.failed(ip) <= AuthFailures::MAX_DELAY);
        }
        f.succeeded(ip);
        assert_eq!(f.failed(ip), first);
    }

    #[compio::test]
    async fn plain_checks_scram_credentials_and_static_users() {
        let mut image = MetadataImage::default();
        let cred = scram::credential_for_password(Mechanism::ScramSha256, "pw", 4096);
        image
            .users
            .entry("bob".into())
            .or_default()
            .scram
            .insert("SCRAM-SHA-256".into(), cred);
        let sasl = SaslConfig {
            mechanisms: vec![Mechanism::Plain],
            reauth_ms: 0,
            plain_users: BTreeMap::from([("admin".to_owned(), "adm".to_owned())]),
        };
        let hs = || SaslState::Handshaken {
            mechanism: Mechanism::Plain,
            raw: false,
            reauth: false,
        };
        assert!(matches!(
            step(&sasl, &image, hs(), b"\0bob\0pw", b"k").await,
            Step::Success { .. }
        ));
        assert!(matches!(
            step(&sasl, &image, hs(), b"\0admin\0adm", b"k").await,
            Step::Success { .. }
        ));
        assert!(matches!(
            step(&sasl, &image, hs(), b"\0bob\0no", b"k").await,
            Step::Failure { .. }
        ));
        assert!(matches!(
            step(&sasl, &image, hs(), b"\0eve\0pw", b"k").await,
            Step::Failure { .. }
        ));
        assert!(matches!(
            step(&sasl, &image, hs(), b"bob\0pw", b"k").await,
            Step::Failure { .. }
        ));
        assert!(matches!(
            step(&sasl, &image, hs(), b"x\0bob\0pw", b"k").await,
            Step::Failure { .. }
        ));
    }
}
