//! SASL PLAIN (RFC 4616): one message, authzid empty. Send it only over TLS; the password
//! travels as is.

/// `\0username\0password`.
pub fn initial_response(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(super::initial_response("u", "p"), b"\0u\0p");
    }
}
