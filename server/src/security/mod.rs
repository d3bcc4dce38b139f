//! Access and security (SPEC S1-S5): the listeners a broker serves and how each one's
//! clients connect (plaintext or TLS) and authenticate (SASL), and the [`Session`] a
//! connection carries from the socket to every handler: which listener it came in on and
//! which principal it acts as.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub mod acl;
pub mod ktls;
pub mod listener;
pub mod peer_client;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

use listener::Listener;

/// The principal of a client that did not authenticate (Kafka's name for it).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A listener as the shards serve it: its configuration and, for TLS listeners, the
/// server certificate and client verification in force (replaceable while it runs).
pub struct ListenerRuntime {
    pub listener: Listener,
    pub tls: Option<tls::TlsServer>,
    pub sasl: Option<sasl::SaslConfig>,
    /// `listener.name.<name>.max.connections`.
    pub max_connections: Option<usize>,
    /// The controller listener: Kafka clients reach it with `--bootstrap-controller`
    /// (KIP-919) and are served the controller's APIs only.
    pub controller: bool,
}

impl ListenerRuntime {
    pub fn new(listener: Listener) -> Result<Self, String> {
        let tls = if listener.protocol.tls() {
            Some(tls::TlsServer::new(&listener)?)
        } else {
            None
        };
        let sasl = if listener.protocol.sasl() {
            Some(sasl::SaslConfig::new(&listener)?)
        } else {
            None
        };
        let max_connections = match listener.prop("max.connections") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| {
                format!(
                    "listener.name.{}.max.connections={v}: not a count",
                    listener.name.to_lowercase()
                )
            })?),
        };
        Ok(ListenerRuntime {
            listener,
            tls,
            sasl,
            max_connections,
            controller: false,
        })
    }

    /// The controller listener (`controller.listener.names`) as Kafka clients see it: the
    /// quorum's own traffic on it never reaches the shards, only what `--bootstrap-controller`
    /// clients send. PLAINTEXT, as the controller listener is for now.
    pub fn controller(name: String, bind: SocketAddr, advertised: (String, u16)) -> Self {
        ListenerRuntime {
            listener: Listener {
                name,
                protocol: listener::SecurityProtocol::Plaintext,
                bind,
                advertised,
                props: Default::default(),
            },
            tls: None,
            sasl: None,
            max_connections: None,
            controller: true,
        }
    }
}

/// What a connection is: where it came from, through which listener, as whom.
pub struct Session {
    pub listener: Arc<ListenerRuntime>,
    pub peer: SocketAddr,
    /// `User:...`: ANONYMOUS, the TLS client certificate's mapped subject, or the SASL
    /// user once authenticated.
    principal: RefCell<Arc<str>>,
    /// SASL progress on a SASL listener (always done on the others).
    pub sasl: RefCell<sasl::SaslState>,
    /// When the SASL session expires (`connections.max.reauth.ms`, KIP-368): past it,
    /// any request but a re-authentication closes the connection.
    pub expires_at: Cell<Option<Instant>>,
    /// Set by a SASL handler whose answer ends the connection (failed authentication).
    pub close_after_reply: Cell<bool>,
    /// The mechanism the session authenticated with (a re-authentication must keep it).
    pub mechanism: Cell<Option<sasl::Mechanism>>,
}

impl Session {
    pub fn new(listener: Arc<ListenerRuntime>, peer: SocketAddr, principal: Arc<str>) -> Self {
        let sasl = if listener.sasl.is_some() {
            sasl::SaslState::Start
        } else {
            sasl::SaslState::Done
        };
        Session {
            listener,
            peer,
            principal: RefCell::new(principal),
            sasl: RefCell::new(sasl),
            expires_at: Cell::new(None),
            close_after_reply: Cell::new(false),
            mechanism: Cell::new(None),
        }
    }

    pub fn principal(&self) -> Arc<str> {
        Arc::clone(&self.principal.borrow())
    }

    pub fn set_principal(&self, principal: Arc<str>) {
        *self.principal.borrow_mut() = principal;
    }

    /// The listener's name (Metadata answers with this listener's addresses).
    pub fn listener_name(&self) -> &str {
        &self.listener.listener.name
    }

    /// Whether the client may send requests other than SASL ones.
    pub fn authenticated(&self) -> bool {
        matches!(*self.sasl.borrow(), sasl::SaslState::Done)
            || self.sasl.borrow().reauthenticating()
    }
}
