//! tansu behind TLS, with SCRAM users, for the security tests (`tests/tests/security.rs`) and
//! kbus' end-to-end run with security flags (`bus/tests/kbus_security.rs`): certificates made
//! with rcgen, the tansu binary `scripts/broker.sh` would use, and an in-test rustls TLS
//! terminator in front of tansu's plaintext listener.
//!
//! Why a terminator: tansu 0.6.0 cannot serve TLS. Its `--cert` and `--key` flags share an
//! exclusive clap group (`error: the argument '--cert <CERT>' cannot be used with '--key
//! <KEY>'`, in either order), either flag alone leaves the listener plaintext (also with the
//! certificate and key concatenated in one PEM), and even its broker's TLS acceptor is built but
//! never used. `security.rs`' canary test fails the day that changes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// The tansu version the tests (and `scripts/broker.sh`) are written against.
const TANSU_VERSION: &str = "0.6.0";

/// A scratch directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(crate::unique_topic(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `names` (DNS names or IP addresses), signed by `ca`; returns the
/// certificate and key PEM.
fn leaf(ca: &CertifiedIssuer<'_, KeyPair>, names: &[&str], expired: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The CA, server (`localhost`, `127.0.0.1`) and client files for one test.
pub struct Pki {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn pki(server_expired: bool) -> Pki {
    let dir = TempDir::new("kbus-tls");
    let authority = ca("kbus test CA");
    let (sc, sk) = leaf(&authority, &["localhost", "127.0.0.1"], server_expired);
    let (cc, ck) = leaf(&authority, &["kbus-client"], false);
    Pki {
        ca: dir.write("ca.pem", &authority.pem()),
        server_cert: dir.write("server.pem", &sc),
        server_key: dir.write("server-key.pem", &sk),
        client_cert: dir.write("client.pem", &cc),
        client_key: dir.write("client-key.pem", &ck),
        dir,
    }
}

/// A rustls acceptor with the server certificate of `p`; with `require_client_cert`, clients
/// must present a certificate signed by `p`'s CA.
pub fn tls_acceptor(p: &Pki, require_client_cert: bool) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&p.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&p.server_key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let config = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&p.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap()
    } else {
        builder
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The tansu binary `scripts/broker.sh` would run: `tansu` on the PATH if it is
/// [`TANSU_VERSION`], else the cached build (`$KBUS_CACHE`, default `~/.cache/kbus`), also
/// checked with `--version`. Another version is never used: its flags and answers differ.
fn tansu_bin() -> Result<PathBuf, String> {
    let cache = std::env::var_os("KBUS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kbus")));
    let cached = cache.map(|c| c.join(format!("tansu-{TANSU_VERSION}/bin/tansu")));
    let mut found = Vec::new();
    for bin in std::iter::once(PathBuf::from("tansu")).chain(cached) {
        let Ok(out) = Command::new(&bin).arg("--version").output() else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && version.split_whitespace().any(|w| w == TANSU_VERSION) {
            return Ok(bin);
        }
        found.push(format!("{} says {version:?}", bin.display()));
    }
    Err(if found.is_empty() {
        format!("tansu {TANSU_VERSION} is not installed")
    } else {
        format!("no tansu {TANSU_VERSION} ({})", found.join("; "))
    })
}

/// The tansu binary, or `None` (after saying why) when broker tests should skip; under
/// `CI=true` a missing binary, or one of another version, fails the test.
pub fn tansu_or_skip() -> Option<PathBuf> {
    match tansu_bin() {
        Ok(b) => Some(b),
        Err(why) => {
            assert!(
                !crate::ci(),
                "{why} and CI=true: run scripts/broker.sh install"
            );
            eprintln!("note: {why}; skipping broker security test");
            None
        }
    }
}

/// SCRAM users for [`secure_broker`]: (mechanism, user, password).
pub const USERS: &[(&str, &str, &str)] = &[
    ("scram256", "alice", "alice-secret"),
    ("scram512", "bob", "bob-secret"),
];

/// A tansu process, killed when dropped.
pub struct Tansu(pub Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tansu broker` on 127.0.0.1:`port` (sqlite storage in `dir`, advertising
/// `advertised`) with `extra` flags, and returns once it accepts TCP connections.
pub fn spawn_tansu(bin: &Path, dir: &Path, port: u16, extra: &[&str], advertised: u16) -> Tansu {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let log_path = dir.join(format!("tansu-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(bin)
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(extra)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut tansu = Tansu(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = tansu.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let log = std::fs::read_to_string(&log_path);
            panic!("tansu did not start on {port} ({exited:?}): {log:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tansu
}

/// [`spawn_tansu`], then waits until it answers ApiVersions in plaintext, so a test's first
/// request meets a ready broker.
fn start_tansu(bin: &Path, dir: &Path, port: u16, extra: &[&str], advertised: u16) -> Tansu {
    let tansu = spawn_tansu(bin, dir, port, extra, advertised);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match crate::TestConnection::connect(&format!("127.0.0.1:{port}")) {
            Ok(_) => return tansu,
            Err(e) if Instant::now() >= deadline => panic!("tansu on {port} is not ready: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// tansu behind TLS, and (with users) with SCRAM authentication required. Clients connect to
/// `127.0.0.1:port` or `localhost:port` (the certificate names both), trusting `pki.ca`.
pub struct SecureBroker {
    _tansu: Tansu,
    pub port: u16,
    pub pki: Pki,
    /// TLS connections accepted so far (to count a client's dials).
    pub accepted: Arc<AtomicUsize>,
}

impl SecureBroker {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Starts tansu with `users` (mechanism as `tansu user create` names it: `scram256`,
/// `scram512`; user; password) and, when there are any, `--authentication`; then a TLS
/// terminator in front of it, which tansu advertises. Users are created on a first, open
/// broker sharing the same sqlite storage: `tansu user create` speaks plaintext without
/// credentials. Needs a tokio runtime, which runs the terminator for as long as it lives.
pub async fn secure_broker(bin: &Path, users: &[(&str, &str, &str)]) -> SecureBroker {
    let pki = pki(false);
    let dir = pki.dir.0.clone();
    if !users.is_empty() {
        let port = crate::free_port();
        let open = start_tansu(bin, &dir, port, &[], port);
        for (mechanism, user, password) in users {
            let out = Command::new(bin)
                .args([
                    "user",
                    "create",
                    "--broker",
                    &format!("tcp://127.0.0.1:{port}"),
                ])
                .args(["--mechanism", mechanism, user, password])
                .output()
                .unwrap();
            assert!(out.status.success(), "tansu user create: {out:?}");
        }
        drop(open);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = crate::free_port();
    let args: &[&str] = if users.is_empty() {
        &[]
    } else {
        &["--authentication"]
    };
    let tansu = start_tansu(bin, &dir, plain, args, port);
    let acceptor = tls_acceptor(&pki, false);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", plain)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    SecureBroker {
        _tansu: tansu,
        port,
        pki,
        accepted,
    }
}
