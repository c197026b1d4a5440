//! TLS: the agent verifies the server against the configured CA only, and presents its
//! client certificate for mutual TLS. The server side is a small rustls acceptor (ring
//! provider) that reports the first byte it reads after the handshake (an MQTT CONNECT is
//! 0x10) or why the handshake failed.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::{RunningAgent, agent_config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("test TLS material");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("test TLS material");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("test TLS material");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate and key (PEM) for `names`, signed by `ca`.
fn leaf(ca: &Ca, cn: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("test TLS material");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("test TLS material");
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("test TLS material");
    (cert.pem(), key.serialize_pem())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves TLS with `cert`/`key`; when `client_ca` is set, requires a client certificate
/// signed by it. Each connection reports its first byte or its handshake error.
fn tls_server(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> (SocketAddr, mpsc::Receiver<Result<u8, String>>) {
    let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("test TLS material")];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("test TLS material");
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("test TLS material");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("test TLS material"))
                .expect("test TLS material");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .expect("test TLS material");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = Arc::new(
        builder
            .with_single_cert(certs, key)
            .expect("test TLS material"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("test TLS material");
    let addr = listener.local_addr().expect("test TLS material");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            sock.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("test TLS material");
            let mut conn =
                rustls::ServerConnection::new(config.clone()).expect("test TLS material");
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let mut byte = [0u8; 1];
            let outcome = tls
                .read_exact(&mut byte)
                .map(|()| byte[0])
                .map_err(|e| e.to_string());
            if tx.send(outcome).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("test TLS material");
    p
}

#[test]
fn the_agent_speaks_mqtt_over_mutual_tls_with_a_server_its_ca_signed() {
    let dir = tempfile::tempdir().expect("test TLS material");
    let ca = ca("fleet CA");
    let (server_cert, server_key) = leaf(&ca, "server", &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = leaf(&ca, "tls-dev-1", &[]);
    let (addr, outcomes) = tls_server(&server_cert, &server_key, Some(&ca.pem));
    let mut config = agent_config("tls-dev-1", addr, &dir.path().join("spool"));
    config.server.tls_ca_file = Some(write(dir.path(), "ca.pem", &ca.pem));
    config.server.tls_cert_file = Some(write(dir.path(), "dev.pem", &client_cert));
    config.server.tls_key_file = Some(write(dir.path(), "dev.key", &client_key));
    let agent = RunningAgent::start(config);
    let first = outcomes.recv_timeout(Duration::from_secs(15));
    agent.stop();
    assert_eq!(
        first.expect("test TLS material"),
        Ok(0x10),
        "an MQTT CONNECT after the handshake"
    );
}

#[test]
fn the_agent_refuses_a_server_whose_certificate_its_ca_did_not_sign() {
    let dir = tempfile::tempdir().expect("test TLS material");
    let trusted = ca("fleet CA");
    let impostor = ca("impostor CA");
    let (server_cert, server_key) = leaf(&impostor, "server", &["127.0.0.1", "localhost"]);
    let (addr, outcomes) = tls_server(&server_cert, &server_key, None);
    let mut config = agent_config("tls-dev-2", addr, &dir.path().join("spool"));
    config.server.tls_ca_file = Some(write(dir.path(), "ca.pem", &trusted.pem));
    let agent = RunningAgent::start(config);
    // It tries (and retries), and every handshake is aborted by the agent: no MQTT byte ever
    // reaches the impostor.
    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        match outcomes.recv_timeout(Duration::from_secs(15)) {
            Ok(o) => attempts.push(o),
            Err(_) => break,
        }
    }
    agent.stop();
    assert!(attempts.len() >= 2, "the agent keeps trying: {attempts:?}");
    for a in &attempts {
        let e = a
            .as_ref()
            .expect_err("no byte may arrive over an untrusted TLS session");
        // The agent's alert, or, when it closes before the server reads the alert, a reset.
        assert!(
            [
                "UnknownCA",
                "BadCertificate",
                "reset",
                "EOF",
                "eof",
                "end of file"
            ]
            .iter()
            .any(|m| e.contains(m)),
            "{e}"
        );
    }
    assert!(
        attempts.iter().any(|a| a
            .as_ref()
            .is_err_and(|e| e.contains("UnknownCA") || e.contains("BadCertificate"))),
        "the refusal is a certificate alert: {attempts:?}"
    );
}
