//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), client side, sans-IO: the caller
//! carries the messages. What keeps a SCRAM exchange safe is checked, each failure with its
//! own error: the server nonce must extend ours (else a replayed or foreign exchange), the
//! iteration count must be at least 4096 (RFC 7677's minimum; lower makes offline guessing
//! cheap), and the server's signature must prove it knows the password's server key.
//! Passwords are used as their UTF-8 bytes (no SASLprep), as Kafka's own clients do.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::SaslError;

/// RFC 7677's minimum iteration count.
pub const MIN_ITERATIONS: u32 = 4096;
/// Refused above this: a hostile server could otherwise make us hash for minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// The hash a SCRAM variant uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// RFC 5802 `saslname`: `=` and `,` would end the attribute, so they are escaped.
pub fn escape_username(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// A fresh client nonce: 24 random bytes, base64 (printable, no comma).
pub fn random_nonce() -> Result<String, SaslError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| SaslError::Malformed(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// One SCRAM exchange. (No `Debug`: it holds the password.)
pub struct ScramClient {
    hash: ScramHash,
    password: Vec<u8>,
    nonce: String,
    client_first_bare: String,
    /// The server signature we expect in server-final, known once client-final is made.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: String) -> ScramClient {
        let client_first_bare = format!("n={},r={nonce}", escape_username(username));
        ScramClient {
            hash,
            password: password.as_bytes().to_vec(),
            nonce,
            client_first_bare,
            expected_server_signature: None,
        }
    }

    /// client-first-message (no channel binding, no authzid).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Checks server-first-message and returns client-final-message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, SaslError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for (i, attr) in server_first.split(',').enumerate() {
            let (key, value) = attr
                .split_once('=')
                .ok_or_else(|| SaslError::Malformed(format!("attribute {attr:?}")))?;
            match key {
                "m" if i == 0 => {
                    return Err(SaslError::Malformed(
                        "server requires an unsupported extension".into(),
                    ));
                }
                "e" => {
                    return Err(SaslError::AuthenticationFailed {
                        message: value.to_owned(),
                    });
                }
                "r" => nonce = Some(value),
                "s" => {
                    salt = Some(
                        STANDARD
                            .decode(value)
                            .map_err(|e| SaslError::Malformed(format!("salt: {e}")))?,
                    )
                }
                "i" => {
                    iterations =
                        Some(value.parse::<u32>().map_err(|_| {
                            SaslError::Malformed(format!("iteration count {value:?}"))
                        })?)
                }
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| SaslError::Malformed("no nonce".into()))?;
        let salt = salt.ok_or_else(|| SaslError::Malformed("no salt".into()))?;
        let iterations =
            iterations.ok_or_else(|| SaslError::Malformed("no iteration count".into()))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::NonceMismatch);
        }
        if iterations < MIN_ITERATIONS {
            return Err(SaslError::IterationCountTooLow { got: iterations });
        }
        if iterations > MAX_ITERATIONS {
            return Err(SaslError::Malformed(format!(
                "iteration count {iterations} above {MAX_ITERATIONS}"
            )));
        }
        let h = self.hash;
        let salted = h.salted_password(&self.password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Checks server-final-message: the server must prove it knows our password's keys.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), SaslError> {
        let expected = self
            .expected_server_signature
            .as_ref()
            .ok_or_else(|| SaslError::Malformed("server-final before server-first".into()))?;
        let first = server_final.split(',').next().unwrap_or_default();
        if let Some(e) = first.strip_prefix("e=") {
            return Err(SaslError::AuthenticationFailed {
                message: e.to_owned(),
            });
        }
        let v = first
            .strip_prefix("v=")
            .ok_or_else(|| SaslError::Malformed(format!("server-final {server_final:?}")))?;
        let got = STANDARD
            .decode(v)
            .map_err(|_| SaslError::BadServerSignature)?;
        // Compared without an early exit, so timing does not tell how much matched.
        let same = got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(SaslError::BadServerSignature)
        }
    }
}

/// Server-side helpers, for tests that play the broker's part of an exchange.
pub mod server {
    use super::*;

    /// The server signature (`v=` value) and client proof (`p=` value) for an exchange.
    pub fn signatures(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &str,
    ) -> (String, String) {
        let salted = hash.salted_password(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.hash(&client_key);
        let client_signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hash.hmac(&salted, b"Server Key");
        let server_signature = hash.hmac(&server_key, auth_message.as_bytes());
        (STANDARD.encode(server_signature), STANDARD.encode(proof))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3: user "user", password "pencil".
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    #[test]
    fn rfc7677_sha256_vector() {
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE.into());
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c.client_final(SERVER_FIRST).unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn rfc7677_vector_with_a_flipped_server_signature_is_refused() {
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE.into());
        c.client_final(SERVER_FIRST).unwrap();
        assert_eq!(
            c.verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::BadServerSignature)
        );
    }

    #[test]
    fn sha512_round_trip_with_the_server_side() {
        let mut c = ScramClient::new(ScramHash::Sha512, "a,b=c", "secret", "abc".into());
        assert_eq!(c.client_first(), "n,,n=a=2Cb=3Dc,r=abc");
        let salt = b"salty";
        let server_first = format!("r=abcdef,s={},i=4096", STANDARD.encode(salt));
        let fin = c.client_final(&server_first).unwrap();
        let auth = format!("n=a=2Cb=3Dc,r=abc,{server_first},c=biws,r=abcdef");
        let (v, p) = server::signatures(ScramHash::Sha512, "secret", salt, 4096, &auth);
        assert!(fin.ends_with(&format!(",p={p}")));
        c.verify_server_final(&format!("v={v}")).unwrap();
    }

    #[test]
    fn escapes_equals_before_commas() {
        assert_eq!(escape_username("a=,b"), "a=3D=2Cb");
    }

    #[test]
    fn nonce_that_does_not_extend_ours_is_refused() {
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE.into());
        let other = SERVER_FIRST.replace("r=rOpr", "r=XOpr");
        assert_eq!(c.client_final(&other), Err(SaslError::NonceMismatch));
        let same = format!("r={NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        assert_eq!(c.client_final(&same), Err(SaslError::NonceMismatch));
    }

    #[test]
    fn low_iteration_count_is_refused() {
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE.into());
        let low = SERVER_FIRST.replace("i=4096", "i=4095");
        assert_eq!(
            c.client_final(&low),
            Err(SaslError::IterationCountTooLow { got: 4095 })
        );
    }

    #[test]
    fn server_error_attribute_is_an_authentication_failure() {
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE.into());
        c.client_final(SERVER_FIRST).unwrap();
        assert_eq!(
            c.verify_server_final("e=invalid-proof"),
            Err(SaslError::AuthenticationFailed {
                message: "invalid-proof".into()
            })
        );
    }
}
