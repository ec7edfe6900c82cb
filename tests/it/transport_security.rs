//! Transport security and secrets in motion: HTTPS to Orceum trusted only through the configured
//! CA, and a `{file: …}` secret rotated while events flow — nothing lost, the new secret used.

use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// A CA (PEM) and a server certificate for `localhost` signed by it (DER cert, DER key).
fn certificates() -> (String, Vec<u8>, Vec<u8>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "orceum-bridge test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    (
        ca_cert.pem(),
        server_cert.der().to_vec(),
        server_key.serialize_der(),
    )
}

/// Terminates TLS on a free port and forwards to the plain sandbox at `target`.
async fn tls_front(target: SocketAddr, cert: Vec<u8>, key: Vec<u8>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA fails the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    addr
}

async fn mock_topic(
    n: usize,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("t", 1, 1).unwrap();
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for payload in payloads(n, 3) {
        p.send(
            FutureRecord::<(), _>::to("t").payload(&payload),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    (cluster, brokers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_to_orceum_is_trusted_only_with_the_configured_ca() {
    let (ca_pem, cert, key) = certificates();
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let front = tls_front(sandbox.addr(), cert, key).await;
    let base = format!("https://localhost:{}/v1", front.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).unwrap();
    let (_cluster, brokers) = mock_topic(10).await;
    let delivery = "  retry: { initial_backoff: 50ms, max_backoff: 200ms }\n";

    // Without the CA: the handshake fails, pushes are retried, nothing is delivered.
    let untrusting = spawn_bridge(&config(
        &base,
        &brokers,
        "g-no-ca",
        &route("r", "t", "a", None),
        delivery,
    ));
    let retried = wait_until(Duration::from_secs(20), || {
        counter(
            &untrusting.metrics_text(),
            "orceum_bridge_retries_total",
            "",
        ) >= 5
    })
    .await;
    assert!(
        retried,
        "untrusted certificate must fail and be retried:\n{}",
        untrusting.metrics_text()
    );
    assert_eq!(
        seen(&sandbox).total,
        0,
        "nothing reaches Orceum over an untrusted connection"
    );
    untrusting.stop().await;

    // With the CA file: delivered.
    let yaml = config(
        &base,
        &brokers,
        "g-ca",
        &route("r", "t", "a", None),
        delivery,
    )
    .replace(
        "timeout: 5s }",
        &format!("timeout: 5s, ca_file: \"{}\" }}", ca_path.display()),
    );
    let trusting = spawn_bridge(&yaml);
    assert!(
        wait_until(Duration::from_secs(30), || seen(&sandbox).unique() >= 10).await,
        "with the CA configured every event is delivered over TLS"
    );
    trusting.stop().await;
    assert_eq!(seen(&sandbox).duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_file_is_used_without_restart_and_nothing_is_lost() {
    let n = 300;
    let (_cluster, brokers) = mock_topic(n).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("app-a");
    std::fs::write(&secret_path, SECRET_A).unwrap();
    let yaml = config(
        &sandbox.base_url(),
        &brokers,
        "g-rotate",
        &route("r", "t", "a", None),
        "  retry: { initial_backoff: 50ms, max_backoff: 500ms }\n",
    )
    .replace(
        "secret: { env: SECRET_A }",
        &format!("secret: {{ file: \"{}\" }}", secret_path.display()),
    );
    let bridge = spawn_bridge(&yaml);
    assert!(wait_until(Duration::from_secs(30), || seen(&sandbox).unique() >= 50).await);

    // Orceum rotates the secret; Kubernetes updates the mounted file a moment later.
    const NEW: &str = "whs_rotated_secret_value";
    sandbox.set_secret("app_a", NEW);
    let at_rotation = seen(&sandbox).unique();
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&secret_path, NEW).unwrap();

    let all = wait_until(Duration::from_secs(60), || seen(&sandbox).unique() >= n).await;
    let s = seen(&sandbox);
    let unauthorized = counter(
        &bridge.metrics_text(),
        "orceum_bridge_retries_total",
        "unauthorized",
    );
    eprintln!("rotation at {at_rotation}: {} unique, {} duplicates, {unauthorized} pushes refused with 401 meanwhile", s.unique(), s.duplicates());
    assert!(all, "only {} of {n} after the rotation", s.unique());
    assert!(
        s.unique() - at_rotation > 100,
        "events after the rotation were accepted: signed with the new secret"
    );
    assert_eq!(s.duplicates(), 0);
    bridge.stop().await;
}
