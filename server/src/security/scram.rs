//! SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka runs them: the stored
//! credential (salt, StoredKey, ServerKey, iterations: never the password), the server
//! side of the two-round exchange, and the password check PLAIN uses against the same
//! credential. An unknown user gets a made-up salt and fails at the proof like a wrong
//! password, so the exchange does not tell which of the two it was.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

use super::sasl::Mechanism;

/// Kafka's bounds on a SCRAM credential's iterations.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

pub use crate::metadata::security_records::Credential;

fn hmac_alg(m: Mechanism) -> hmac::Algorithm {
    match m {
        Mechanism::ScramSha512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

pub(super) fn digest_alg(m: Mechanism) -> &'static digest::Algorithm {
    match m {
        Mechanism::ScramSha512 => &digest::SHA512,
        _ => &digest::SHA256,
    }
}

fn pbkdf2_alg(m: Mechanism) -> pbkdf2::Algorithm {
    match m {
        Mechanism::ScramSha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        _ => pbkdf2::PBKDF2_HMAC_SHA256,
    }
}

pub(super) fn mac(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac_alg(m), key), data)
        .as_ref()
        .to_vec()
}

/// SaltedPassword = Hi(password, salt, i).
pub fn salted_password(m: Mechanism, password: &str, salt: &[u8], iterations: i32) -> Vec<u8> {
    let mut out = vec![0u8; digest_alg(m).output_len()];
    let rounds = u32::try_from(iterations)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2_alg(m), rounds, salt, password.as_bytes(), &mut out);
    out
}

/// The credential for a salted password (what AlterUserScramCredentials carries).
pub fn credential_from_salted(
    m: Mechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: i32,
) -> Credential {
    let client_key = mac(m, salted, b"Client Key");
    let stored_key = digest::digest(digest_alg(m), &client_key);
    let server_key = mac(m, salted, b"Server Key");
    Credential {
        salt: B64.encode(salt),
        stored_key: B64.encode(stored_key.as_ref()),
        server_key: B64.encode(server_key),
        iterations,
    }
}

/// A new credential for `password` with a random salt.
pub fn credential_for_password(m: Mechanism, password: &str, iterations: i32) -> Credential {
    let salt = random_bytes(32);
    credential_from_salted(
        m,
        &salted_password(m, password, &salt, iterations),
        &salt,
        iterations,
    )
}

/// Whether `password` is the one `cred` was made from (PLAIN against SCRAM credentials).
pub fn verify_password(m: Mechanism, cred: &Credential, password: &str) -> bool {
    let Ok(salt) = B64.decode(&cred.salt) else {
        return false;
    };
    let fresh = credential_from_salted(
        m,
        &salted_password(m, password, &salt, cred.iterations),
        &salt,
        cred.iterations,
    );
    constant_time_eq(fresh.stored_key.as_bytes(), cred.stored_key.as_bytes())
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // ring's SystemRandom reads getrandom(2); it does not fail on Linux after boot.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        tracing::error!("the system random source failed");
    }
    b
}

/// Compares without stopping at the first difference (no timing hint).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed; the client only ever learns "authentication failed".
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// The message does not follow RFC 5802 (malformed, channel binding, extensions).
    Malformed(&'static str),
    /// Unknown user or wrong password (indistinguishable to the client).
    BadCredentials,
}

/// The server between its first message and the client's final one.
#[derive(Debug, Clone)]
pub struct ScramExchange {
    pub mechanism: Mechanism,
    pub user: String,
    /// `None` for an unknown user: the exchange runs on a made-up salt and then fails.
    credential: Option<Credential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Decodes a SCRAM `saslname` (`=2C` is `,`, `=3D` is `=`).
fn decode_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramExchange {
    /// Answers the client-first message. `lookup` finds the user's credential; `secret`
    /// seeds the made-up salt for unknown users (stable per user, so probing twice shows
    /// nothing either).
    pub fn start(
        mechanism: Mechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
        secret: &[u8],
    ) -> Result<(ScramExchange, Vec<u8>), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: "n,," or "y,," (no channel binding), optionally with "a=authzid".
        let mut parts = msg.splitn(3, ',');
        let cb = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        if cb != "n" && cb != "y" {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = Some(decode_name(v)?),
                Some(("r", v)) if !v.is_empty() => client_nonce = Some(v.to_owned()),
                // Extensions (delegation tokens) are not supported.
                Some(("m", _)) => return Err(ScramError::Malformed("mandatory extension")),
                _ if attr.contains("tokenauth") => {
                    return Err(ScramError::Malformed("delegation tokens are not supported"));
                }
                _ => {}
            }
        }
        let user = user
            .filter(|u| !u.is_empty())
            .ok_or(ScramError::Malformed("no user name"))?;
        let client_nonce = client_nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if let Some(a) = authzid.strip_prefix("a=")
            && decode_name(a)? != user
        {
            return Err(ScramError::BadCredentials);
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                B64.encode(
                    &mac(mechanism, secret, user.as_bytes())
                        [..32.min(digest_alg(mechanism).output_len())],
                ),
                MIN_ITERATIONS,
            ),
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)));
        let server_first = format!("r={nonce},s={salt},i={iterations}");
        let reply = server_first.clone().into_bytes();
        Ok((
            ScramExchange {
                mechanism,
                user,
                credential,
                gs2_header: format!("{cb},{authzid},"),
                client_first_bare: bare.to_owned(),
                server_first,
                nonce,
            },
            reply,
        ))
    }

    /// Checks the client-final message; on success returns the server-final message.
    pub fn finish(&self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => channel = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        let expected_channel = B64.encode(self.gs2_header.as_bytes());
        if channel != Some(expected_channel.as_str()) {
            return Err(ScramError::Malformed("channel binding mismatch"));
        }
        // Kafka accepts a final nonce that ends with the server's (librdkafka sends the
        // client nonce again in front of it), and so must ringmq.
        if !nonce.is_some_and(|n| n.ends_with(&self.nonce)) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let Some(cred) = &self.credential else {
            return Err(ScramError::BadCredentials);
        };
        let stored_key = B64
            .decode(&cred.stored_key)
            .map_err(|_| ScramError::BadCredentials)?;
        let server_key = B64
            .decode(&cred.server_key)
            .map_err(|_| ScramError::BadCredentials)?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let m = self.mechanism;
        let client_signature = mac(m, &stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadCredentials);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let computed = digest::digest(digest_alg(m), &client_key);
        if !constant_time_eq(computed.as_ref(), &stored_key) {
            return Err(ScramError::BadCredentials);
        }
        let server_signature = mac(m, &server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side, as RFC 5802 describes it, to drive the server.
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let attrs: std::collections::HashMap<_, _> = server_first
            .split(',')
            .filter_map(|a| a.split_once('='))
            .collect();
        let salt = B64.decode(attrs["s"]).unwrap();
        let i: i32 = attrs["i"].parse().unwrap();
        let salted = salted_password(m, password, &salt, i);
        let client_key = mac(m, &salted, b"Client Key");
        let stored = digest::digest(digest_alg(m), &client_key);
        let without_proof = format!("c=biws,r={}", attrs["r"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mac(m, stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc7677_test_vector_credential() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let m = Mechanism::ScramSha256;
        let cred =
            credential_from_salted(m, &salted_password(m, "pencil", &salt, 4096), &salt, 4096);
        // The RFC's ServerSignature over its AuthMessage.
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = mac(m, &B64.decode(&cred.server_key).unwrap(), auth.as_bytes());
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(verify_password(m, &cred, "pencil"));
        assert!(!verify_password(m, &cred, "pencil2"));
    }

    #[test]
    fn exchanges_succeed_with_the_password_and_fail_alike_without_it() {
        for m in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            let cred = credential_for_password(m, "s3cret", 4096);
            let first = b"n,,n=alice,r=abcdef";
            let lookup = |u: &str| (u == "alice").then(|| cred.clone());
            let (ex, server_first) = ScramExchange::start(m, first, lookup, b"k").unwrap();
            let sf = String::from_utf8(server_first).unwrap();
            let ok = client_final(m, "s3cret", "n=alice,r=abcdef", &sf);
            assert!(ex.finish(ok.as_bytes()).unwrap().starts_with(b"v="));
            let bad = client_final(m, "wrong", "n=alice,r=abcdef", &sf);
            assert_eq!(ex.finish(bad.as_bytes()), Err(ScramError::BadCredentials));
            // An unknown user gets a server-first of the same shape, then the same failure.
            let (ex, sf) = ScramExchange::start(m, b"n,,n=mallory,r=xyz", |_| None, b"k").unwrap();
            let sf = String::from_utf8(sf).unwrap();
            assert!(sf.contains(",s=") && sf.ends_with(",i=4096"));
            let guess = client_final(m, "s3cret", "n=mallory,r=xyz", &sf);
            assert_eq!(ex.finish(guess.as_bytes()), Err(ScramError::BadCredentials));
        }
        assert!(
            ScramExchange::start(
                Mechanism::ScramSha256,
                b"p=tls-unique,,n=a,r=b",
                |_| None,
                b"k"
            )
            .is_err()
        );
        assert!(ScramExchange::start(Mechanism::ScramSha256, b"garbage", |_| None, b"k").is_err());
        assert_eq!(decode_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }
}
