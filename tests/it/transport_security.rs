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

/// What the test's forward proxy saw: each tunnel's `CONNECT` target and `Proxy-Authorization`.
#[derive(Default)]
struct ProxyLog {
    tunnels: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

/// A forward proxy on a free port: answers `CONNECT host:port` with 200 and relays bytes both
/// ways, 407 without the expected `Proxy-Authorization` (and to anything but `CONNECT`).
async fn connect_proxy(expect_auth: &'static str) -> (SocketAddr, Arc<ProxyLog>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(ProxyLog::default());
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let mut lines = head.split("\r\n");
                let request = lines.next().unwrap_or_default().to_string();
                let auth = lines
                    .filter_map(|l| l.split_once(": "))
                    .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                    .map(|(_, v)| v.to_string());
                let target = match request.split(' ').collect::<Vec<_>>()[..] {
                    ["CONNECT", target, _] => target.to_string(),
                    _ => {
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                };
                seen.tunnels
                    .lock()
                    .unwrap()
                    .push((target.clone(), auth.clone()));
                if auth.as_deref() != Some(expect_auth) {
                    let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\ncontent-length: 0\r\n\r\n").await;
                    return;
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, log)
}

/// Egress through a forward proxy: the pushes to an https:// Orceum go through `CONNECT` with
/// the proxy's credentials (a secret reference), TLS end to end; a wrong password is refused
/// by the proxy and retried, nothing delivered; the start summary names the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_go_through_a_connect_proxy_with_its_credentials() {
    let (ca_pem, cert, key) = certificates();
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let front = tls_front(sandbox.addr(), cert, key).await;
    // base64("bridge:pr0xy-pass")
    let (proxy, log) = connect_proxy("Basic YnJpZGdlOnByMHh5LXBhc3M=").await;
    let base = format!("https://localhost:{}/v1", front.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).unwrap();
    let password = dir.path().join("proxy-password");
    let (_cluster, brokers) = mock_topic(20).await;
    let yaml = |group: &str| {
        config(
            &base,
            &brokers,
            group,
            &route("r", "t", "a", None),
            "  retry: { initial_backoff: 50ms, max_backoff: 200ms }\n",
        )
        .replace(
            "timeout: 5s }",
            &format!(
                "timeout: 5s, ca_file: \"{}\", proxy: {{ url: \"http://{proxy}\", username: bridge, password: {{ file: \"{}\" }} }} }}",
                ca_path.display(),
                password.display()
            ),
        )
    };

    // A wrong password: the proxy answers 407, every push is retried, nothing gets through.
    std::fs::write(&password, "wrong").unwrap();
    let refused = spawn_bridge(&yaml("g-proxy-wrong"));
    let retried = wait_until(Duration::from_secs(20), || {
        counter(&refused.metrics_text(), "orceum_bridge_retries_total", "") >= 3
    })
    .await;
    refused.stop().await;
    assert!(retried, "a refused tunnel is a transient failure, retried");
    assert_eq!(seen(&sandbox).total, 0, "nothing past a proxy that refused");
    assert!(
        log.tunnels
            .lock()
            .unwrap()
            .iter()
            .all(|(_, a)| a.as_deref() == Some("Basic YnJpZGdlOndyb25n")),
        "the configured username and the password file's content, as Basic credentials"
    );

    std::fs::write(&password, "pr0xy-pass\n").unwrap();
    log.tunnels.lock().unwrap().clear();
    let config_yaml = yaml("g-proxy");
    let summary = load(&config_yaml).summary();
    assert!(
        summary.ends_with(&format!(
            "; Orceum through proxy http://{proxy} (orceum.proxy.url, with credentials)"
        )),
        "{summary}"
    );
    assert!(!summary.contains("pr0xy-pass"));
    let bridge = spawn_bridge(&config_yaml);
    let all = wait_until(Duration::from_secs(30), || seen(&sandbox).unique() >= 20).await;
    bridge.stop().await;
    assert!(
        all,
        "only {} of 20 through the proxy",
        seen(&sandbox).unique()
    );
    let tunnels = log.tunnels.lock().unwrap().clone();
    assert!(!tunnels.is_empty(), "the pushes went through the proxy");
    assert!(
        tunnels
            .iter()
            .all(|(target, _)| *target == format!("localhost:{}", front.port())),
        "CONNECT to Orceum's host and port, nothing else: {tunnels:?}"
    );
    assert!(
        tunnels.len() <= 20,
        "tunnels are kept and reused, not one per push: {}",
        tunnels.len()
    );
    assert_eq!(seen(&sandbox).duplicates(), 0);
}
