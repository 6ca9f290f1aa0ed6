//! SASL OAUTHBEARER (RFC 7628) as Kafka uses it (KIP-255): the client's initial response
//! carries the bearer token; the broker validates it and answers with nothing, or with a JSON
//! error that the client acknowledges before the broker fails the authentication.

/// `n,,\x01auth=Bearer <token>\x01\x01`.
pub fn initial_response(token: &str) -> Vec<u8> {
    format!("n,,\u{1}auth=Bearer {token}\u{1}\u{1}").into_bytes()
}

/// The client's reply to a server error challenge (RFC 7628 section 3.2.3).
pub const ERROR_ACK: &[u8] = b"\x01";

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(
            super::initial_response("t0k"),
            b"n,,\x01auth=Bearer t0k\x01\x01"
        );
    }
}
