//! Kernel TLS (kTLS): after rustls has run the handshake, the session keys go to the
//! kernel (`TCP_ULP "tls"`, then `TLS_TX`/`TLS_RX` with the negotiated cipher's key, IV
//! and record sequence), and the socket carries plaintext from the broker's side: the
//! kernel encrypts what is written and decrypts what is read, so fetch keeps splicing
//! file ranges to the socket as on a plaintext listener.
//!
//! The offload is tried only where it can work: the kernel must offer the TLS upper-layer
//! protocol (`CONFIG_TLS`; where it does not, setting it fails with ENOENT before anything
//! is given away, and the connection stays in user space), and the cipher must be one the
//! kernel takes (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305). Once the secrets are out of
//! rustls the connection cannot go back, so a failure past that point closes it.

use std::os::fd::AsRawFd;

use rustls::{ConnectionTrafficSecrets, ServerConnection};

/// Why a connection stays in user-space TLS.
#[derive(Debug)]
pub enum NotOffloaded {
    /// The kernel has no TLS ULP, or the cipher is not one it takes: rustls goes on.
    Unsupported(Box<ServerConnection>, String),
    /// The keys were handed over but the kernel refused them: the connection is lost.
    Failed(std::io::Error),
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` points to a live, initialized `T` of `size_of::<T>()` bytes for the
    // duration of the call; the kernel copies it and keeps no pointer.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kernel's crypto info for one direction.
enum CryptoInfo {
    Aes128(libc::tls12_crypto_info_aes_gcm_128),
    Aes256(libc::tls12_crypto_info_aes_gcm_256),
    Chacha(libc::tls12_crypto_info_chacha20_poly1305),
}

impl CryptoInfo {
    fn new(version: u16, seq: u64, secrets: ConnectionTrafficSecrets) -> Option<CryptoInfo> {
        let rec_seq = seq.to_be_bytes();
        let info = |cipher_type| libc::tls_crypto_info {
            version,
            cipher_type,
        };
        // AES-GCM: the 12-byte IV is the 4-byte salt, then the 8-byte explicit part.
        match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                let (iv, key) = (iv.as_ref(), key.as_ref());
                Some(CryptoInfo::Aes128(libc::tls12_crypto_info_aes_gcm_128 {
                    info: info(libc::TLS_CIPHER_AES_GCM_128),
                    iv: iv.get(4..12)?.try_into().ok()?,
                    key: key.try_into().ok()?,
                    salt: iv.get(..4)?.try_into().ok()?,
                    rec_seq,
                }))
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                let (iv, key) = (iv.as_ref(), key.as_ref());
                Some(CryptoInfo::Aes256(libc::tls12_crypto_info_aes_gcm_256 {
                    info: info(libc::TLS_CIPHER_AES_GCM_256),
                    iv: iv.get(4..12)?.try_into().ok()?,
                    key: key.try_into().ok()?,
                    salt: iv.get(..4)?.try_into().ok()?,
                    rec_seq,
                }))
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Some(CryptoInfo::Chacha(
                libc::tls12_crypto_info_chacha20_poly1305 {
                    info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                    iv: iv.as_ref().try_into().ok()?,
                    key: key.as_ref().try_into().ok()?,
                    salt: [],
                    rec_seq,
                },
            )),
            _ => None,
        }
    }

    fn set(&self, fd: i32, direction: i32) -> std::io::Result<()> {
        match self {
            CryptoInfo::Aes128(i) => setsockopt(fd, libc::SOL_TLS, direction, i),
            CryptoInfo::Aes256(i) => setsockopt(fd, libc::SOL_TLS, direction, i),
            CryptoInfo::Chacha(i) => setsockopt(fd, libc::SOL_TLS, direction, i),
        }
    }
}

/// Whether the negotiated suite is one the kernel takes.
fn kernel_cipher(conn: &ServerConnection) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS13_AES_256_GCM_SHA384
                | S::TLS13_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    )
}

/// Hands a handshaken connection's keys to the kernel. On success the socket carries
/// plaintext for the broker (the handshake's last bytes must already be on the wire).
pub fn offload(sock: &impl AsRawFd, conn: ServerConnection) -> Result<(), NotOffloaded> {
    if !kernel_cipher(&conn) {
        let suite = format!("{:?}", conn.negotiated_cipher_suite().map(|s| s.suite()));
        return Err(NotOffloaded::Unsupported(
            Box::new(conn),
            format!("cipher {suite}"),
        ));
    }
    let fd = sock.as_raw_fd();
    if let Err(e) = setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls") {
        return Err(NotOffloaded::Unsupported(
            Box::new(conn),
            format!("no kernel TLS ({e})"),
        ));
    }
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => libc::TLS_1_3_VERSION,
        _ => libc::TLS_1_2_VERSION,
    };
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| NotOffloaded::Failed(std::io::Error::other(e)))?;
    let refused =
        || NotOffloaded::Failed(std::io::Error::other("session keys of an unexpected size"));
    let tx = CryptoInfo::new(version, secrets.tx.0, secrets.tx.1).ok_or_else(refused)?;
    let rx = CryptoInfo::new(version, secrets.rx.0, secrets.rx.1).ok_or_else(refused)?;
    tx.set(fd, libc::TLS_TX).map_err(NotOffloaded::Failed)?;
    rx.set(fd, libc::TLS_RX).map_err(NotOffloaded::Failed)?;
    Ok(())
}

/// Whether this kernel offers the TLS upper-layer protocol (probed once on a loopback
/// pair, for the startup log and the metrics).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let probe = || -> std::io::Result<bool> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let client = std::net::TcpStream::connect(listener.local_addr()?)?;
            Ok(setsockopt(client.as_raw_fd(), libc::SOL_TCP, libc::TCP_ULP, b"tls").is_ok())
        };
        probe().unwrap_or(false)
    })
}
