//! The security flags, accepted with every command:
//! `--security-protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL`, `--sasl-mechanism M`,
//! `--sasl-username U`, `--sasl-password P` (or `KAFKA_SASL_PASSWORD`, which keeps it out of
//! the process list), `--ssl-ca FILE`, `--ssl-cert FILE`, `--ssl-key FILE`,
//! `--ssl-insecure-skip-verify`.
//!
//! A flag the protocol would not use is an error, never silently dropped (a `--sasl-password`
//! with `SSL` most likely means the protocol is wrong). `KAFKA_SASL_PASSWORD` is only read
//! under a SASL protocol: an environment variable may be set for other tools.

use bus::security::{
    SaslConfig, SaslMechanism, Secret, SecurityConfig, SecurityProtocol, TlsConfig,
};

use crate::args::Args;

pub fn parse(args: &mut Args) -> Result<SecurityConfig, String> {
    let protocol = args.value(None, "--security-protocol")?;
    let mechanism = args.value(None, "--sasl-mechanism")?;
    let username = args.value(None, "--sasl-username")?;
    let password = args.value(None, "--sasl-password")?;
    let ca = args.value(None, "--ssl-ca")?;
    let cert = args.value(None, "--ssl-cert")?;
    let key = args.value(None, "--ssl-key")?;
    let insecure = args.switch(None, "--ssl-insecure-skip-verify");
    let any_tls = ca.is_some() || cert.is_some() || key.is_some() || insecure;
    let protocol = match protocol {
        Some(p) => SecurityProtocol::from_name(&p).ok_or_else(|| {
            format!("--security-protocol: {p:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        })?,
        // SASL or TLS flags without a protocol mean what they say.
        None => match (mechanism.is_some(), any_tls) {
            (true, true) => SecurityProtocol::SaslSsl,
            (true, false) => SecurityProtocol::SaslPlaintext,
            (false, true) => SecurityProtocol::Ssl,
            (false, false) => SecurityProtocol::Plaintext,
        },
    };
    let mut security = SecurityConfig::new(protocol);
    if protocol.uses_tls() {
        let mut tls = TlsConfig::default().insecure_skip_verify(insecure);
        tls.ca = ca.map(Into::into);
        tls.cert = cert.map(Into::into);
        tls.key = key.map(Into::into);
        if insecure {
            eprintln!(
                "kbus: warning: --ssl-insecure-skip-verify: the broker's certificate is not checked"
            );
        }
        security = security.tls(tls);
    } else if any_tls {
        return Err(format!(
            "--ssl-* flags need --security-protocol SSL or SASL_SSL, not {protocol:?}"
        ));
    }
    if protocol.uses_sasl() {
        let name = mechanism.unwrap_or_else(|| "PLAIN".into());
        let mechanism = SaslMechanism::from_name(&name).ok_or_else(|| {
            format!("--sasl-mechanism: {name:?} is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
        })?;
        let password = password.or_else(|| std::env::var("KAFKA_SASL_PASSWORD").ok());
        security = security.sasl(SaslConfig::new(
            mechanism,
            username.unwrap_or_default(),
            Secret::new(password.unwrap_or_default()),
        ));
    } else if mechanism.is_some() || username.is_some() || password.is_some() {
        return Err(format!(
            "--sasl-* flags need --security-protocol SASL_PLAINTEXT or SASL_SSL, not {protocol:?}"
        ));
    }
    security.validate()?;
    Ok(security)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<SecurityConfig, String> {
        parse(&mut Args::new(s.split_whitespace().map(str::to_owned)))
    }

    #[test]
    fn flags_build_the_config() {
        let c = parse_str(
            "--security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username u \
             --sasl-password p --ssl-ca ca.pem",
        )
        .unwrap();
        assert_eq!(c.protocol, SecurityProtocol::SaslSsl);
        let sasl = c.sasl.unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.password.expose(), "p");
        assert_eq!(c.tls.unwrap().ca.unwrap().to_str(), Some("ca.pem"));
        assert_eq!(parse_str("").unwrap().protocol, SecurityProtocol::Plaintext);
        assert_eq!(
            parse_str("--ssl-insecure-skip-verify").unwrap().protocol,
            SecurityProtocol::Ssl
        );
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(parse_str("--security-protocol PLAINTEXT --ssl-ca x").is_err());
        assert!(parse_str("--security-protocol SASL_SSL").is_err());
        assert!(parse_str("--security-protocol TLS").is_err());
        assert!(parse_str("--security-protocol SSL --ssl-cert c").is_err());
        // Every flag the protocol would not use is refused, naming the protocol.
        for flags in [
            "--security-protocol SSL --sasl-password p",
            "--security-protocol PLAINTEXT --sasl-password p",
            "--sasl-password p",
            "--security-protocol SSL --sasl-username u",
            "--security-protocol SSL --sasl-mechanism PLAIN",
            "--security-protocol SASL_PLAINTEXT --sasl-mechanism PLAIN --sasl-username u \
             --ssl-ca ca.pem",
            "--security-protocol SASL_PLAINTEXT --sasl-mechanism PLAIN --sasl-username u \
             --ssl-insecure-skip-verify",
        ] {
            let e = parse_str(flags).unwrap_err();
            assert!(e.contains("need --security-protocol"), "{flags}: {e}");
        }
    }
}
