//! The SCRAM client parses two messages the server writes (RFC 5802 server-first and
//! server-final). A hostile or broken broker must get a typed `SaslError`, never a panic, and
//! the safety checks must hold for any input: a server-first whose nonce does not strictly
//! extend ours, or whose iteration count is below 4096, is refused before any proof is made.
//!
//! Input: `server-first \0 server-final`. Inputs with an iteration count above 20,000 are
//! skipped so each run stays fast (PBKDF2 is linear in it); the parser reads the count before
//! hashing, so the cap only spares CPU, it hides no parsing path.
#![no_main]

use bus::security::sasl::SaslError;
use bus::security::sasl::scram::{MIN_ITERATIONS, ScramClient, ScramHash};
use libfuzzer_sys::fuzz_target;

const NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

/// Any `i=` attribute above the cap (the parser keeps the last one; checking all is simpler).
fn too_many_iterations(server_first: &str) -> bool {
    server_first
        .split(',')
        .filter_map(|a| a.strip_prefix("i="))
        .any(|i| i.parse::<u64>().is_ok_and(|n| n > 20_000))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (server_first, server_final) = text.split_once('\0').unwrap_or((text, ""));
    if too_many_iterations(server_first) {
        return;
    }
    let hash = if data.len() % 2 == 0 { ScramHash::Sha256 } else { ScramHash::Sha512 };
    let mut client = ScramClient::new(hash, "user,=name", "pencil", NONCE.to_owned());
    assert!(client.client_first().starts_with("n,,n=user=2C=3Dname,r="));
    // Server-final before server-first is refused, never trusted.
    assert!(client.verify_server_final(server_final).is_err());
    match client.client_final(server_first) {
        Ok(client_final) => {
            // Accepted only if the checks held: our nonce strictly extended, enough iterations.
            let nonce = server_first
                .split(',')
                .filter_map(|a| a.strip_prefix("r="))
                .last()
                .expect("an accepted server-first has a nonce");
            assert!(nonce.starts_with(NONCE) && nonce.len() > NONCE.len());
            let iterations: u32 = server_first
                .split(',')
                .filter_map(|a| a.strip_prefix("i="))
                .last()
                .and_then(|i| i.parse().ok())
                .expect("an accepted server-first has an iteration count");
            assert!(iterations >= MIN_ITERATIONS);
            assert!(client_final.starts_with(&format!("c=biws,r={nonce},p=")));
            // Whatever the server sends last either proves the key or is refused.
            let _ = client.verify_server_final(server_final);
        }
        Err(
            SaslError::NonceMismatch
            | SaslError::IterationCountTooLow { .. }
            | SaslError::Malformed(_)
            | SaslError::AuthenticationFailed { .. },
        ) => {}
        Err(other) => panic!("unexpected error kind from server-first: {other:?}"),
    }
});
