//! The request on the wire: signature checked against an independent implementation (openssl),
//! the exact header set and body bytes for a fixed event, and the sandbox's verdict on it.

use orceum_bridge::orceum::app::App;
use orceum_bridge::orceum::app::AppSecret;
use orceum_bridge::orceum::client::{prepare, OrceumClient};
use orceum_bridge::orceum::event::{OrceumEvent, Priority};
use orceum_bridge::tools::sandbox::{self, SandboxConfig};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

const SECRET: &str = "whs_your_secret";

fn fixed_event() -> OrceumEvent {
    OrceumEvent {
        installation_id: "inst_abc123".into(),
        event_type: "task.completed".into(),
        event_data: json!({"task_id": "task_789", "title": "Send Q4 report", "completed_at": "2024-01-15T12:00:00Z"})
            .as_object()
            .cloned()
            .unwrap(),
        timestamp: "2024-01-15T12:00:00Z".into(),
        priority: Priority::Normal,
        metadata: None,
    }
}

fn app() -> App {
    App {
        name: "tasks".into(),
        app_id: "app_123".into(),
        secret: AppSecret::fixed(SECRET),
    }
}

fn openssl_hmac(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is needed for this test (Debian package openssl)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // "SHA2-256(stdin)= <hex>" or "(stdin)= <hex>", depending on the version.
    text.trim().rsplit(' ').next().unwrap().to_string()
}

#[test]
fn signature_matches_openssl_and_the_request_is_exactly_as_specified() {
    let body = fixed_event().to_body();
    assert_eq!(
        String::from_utf8(body.clone()).unwrap(),
        r#"{"installation_id":"inst_abc123","event_type":"task.completed","event_data":{"task_id":"task_789","title":"Send Q4 report","completed_at":"2024-01-15T12:00:00Z"},"timestamp":"2024-01-15T12:00:00Z","priority":"normal"}"#
    );
    let req = prepare("https://api.orceum.com/v1", &app(), body.clone());
    assert_eq!(req.url, "https://api.orceum.com/v1/apps/app_123/events");
    let headers: HashMap<&str, &str> = req.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(headers.len(), 4);
    assert_eq!(headers["Content-Type"], "application/json");
    assert_eq!(headers["X-Orceum-Webhook-Secret"], SECRET);
    assert_eq!(
        headers["X-Hub-Signature-256"],
        format!("sha256={}", openssl_hmac(SECRET, &body))
    );
    let ts = headers["X-Timestamp"];
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    assert_eq!(req.body, body, "the signed bytes are the sent bytes");
}

/// A sandbox that knows `app_123` and its secret.
async fn sandbox_for_app_123() -> (sandbox::SandboxHandle, tokio_util::sync::CancellationToken) {
    let stop = tokio_util::sync::CancellationToken::new();
    let sb = sandbox::start(
        SandboxConfig {
            apps: HashMap::from([("app_123".to_string(), SECRET.to_string())]),
            ..SandboxConfig::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    (sb, stop)
}

#[tokio::test]
async fn the_sandbox_accepts_what_the_client_sends() {
    let (sb, stop) = sandbox_for_app_123().await;
    let client = OrceumClient::new(&sb.base_url(), std::time::Duration::from_secs(5)).unwrap();
    let resp = client
        .push(&app(), fixed_event().to_body().into())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.excerpt);
    let events = sb.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body, fixed_event().to_body());
    // A wrong secret is refused with 401.
    let mut wrong = app();
    wrong.secret = AppSecret::fixed("whs_wrong");
    assert_eq!(
        client
            .push(&wrong, fixed_event().to_body().into())
            .await
            .unwrap()
            .status,
        401
    );
    stop.cancel();
}

/// `orceum.http2_prior_knowledge`: the same signed request over h2c, verified by the sandbox
/// (which serves HTTP/1.1 and h2c on one port); many pushes share one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_http2_prior_knowledge_are_verified_by_the_sandbox_like_http1() {
    let (sb, stop) = sandbox_for_app_123().await;
    let timeout = std::time::Duration::from_secs(5);
    let h2 = OrceumClient::build(&sb.base_url(), timeout, None, true, None).unwrap();
    let the_app = app();
    let pushes = (0..50).map(|_| h2.push(&the_app, fixed_event().to_body().into()));
    for resp in futures::future::join_all(pushes).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.excerpt);
    }
    let h1 = OrceumClient::new(&sb.base_url(), timeout).unwrap();
    assert_eq!(
        h1.push(&app(), fixed_event().to_body().into())
            .await
            .unwrap()
            .status,
        200
    );
    let events = sb.events();
    assert_eq!(events.len(), 51);
    assert!(events.iter().all(|e| e.body == fixed_event().to_body()));
    // And it is HTTP/2 on the wire.
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = raw
        .get(format!(
            "{}/_sandbox/stats",
            sb.base_url().trim_end_matches("/v1")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    stop.cancel();
}
