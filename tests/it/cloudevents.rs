//! CloudEvents and W3C trace context, end to end: binary-mode and structured-mode events over
//! Kafka (Tansu) and JetStream, mapped by the cookbook route of docs/templates.md, and a
//! `traceparent` on the source message arriving at the sandbox on the request and in
//! `metadata`.

use crate::common::*;
use crate::harness::*;
use async_nats::jetstream;
use orceum_bridge::tools::sandbox::Faults;
use std::time::Duration;

/// The cookbook route (docs/templates.md, "CloudEvents"), less its `name`/`source`/`topics`
/// lines: the type becomes the event type, the time the timestamp, the id goes into metadata.
const COOKBOOK: &str = r#"    app: a
    event:
      installation_id: .installation_id
      event_type: $meta.cloudevent.type
      event_data: '{order_id, total}'
      timestamp: $meta.cloudevent.time
      metadata: '{cloudevent_id: $meta.cloudevent.id, cloudevent_source: $meta.cloudevent.source}'
"#;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn the_cookbook_route_is_the_one_in_the_docs() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/templates.md"))
        .expect("docs/templates.md");
    assert!(
        docs.contains(COOKBOOK),
        "docs/templates.md must hold the CloudEvents route this test runs:\n{COOKBOOK}"
    );
}

fn data(inst: &str, order: &str) -> String {
    format!(r#"{{"installation_id":"{inst}","order_id":"{order}","total":12.5}}"#)
}

fn structured(id: &str, inst: &str, order: &str, base64: bool) -> Vec<u8> {
    use base64::Engine;
    let data = data(inst, order);
    let payload = if base64 {
        format!(
            r#""data_base64":"{}""#,
            base64::engine::general_purpose::STANDARD.encode(&data)
        )
    } else {
        format!(r#""data":{data}"#)
    };
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/orders","type":"order.shipped","time":"2026-12-01T10:00:00+01:00","datacontenttype":"application/json",{payload}}}"#
    )
    .into_bytes()
}

/// What the sandbox got for one order: event type, timestamp, cloudevent id, traceparent in
/// metadata, traceparent header.
type Got = (String, String, String, Option<String>, Option<String>);

fn received(sandbox: &orceum_bridge::tools::sandbox::SandboxHandle, order: &str) -> Option<Got> {
    let e = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_data"]["order_id"] == order)?;
    Some((
        e.event["event_type"].as_str()?.to_string(),
        e.event["timestamp"].as_str()?.to_string(),
        e.event["metadata"]["cloudevent_id"].as_str()?.to_string(),
        e.event["metadata"]["traceparent"]
            .as_str()
            .map(String::from),
        e.header("traceparent").map(String::from),
    ))
}

fn expected(id: &str, traced: bool) -> Got {
    let trace = traced.then(|| TRACEPARENT.to_string());
    (
        "order.shipped".into(),
        "2026-12-01T09:00:00Z".into(),
        id.into(),
        trace.clone(),
        trace,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloudevents_over_kafka_binary_and_structured_with_a_traceparent() {
    let topic = unique("cloudevents");
    let group = unique("g-cloudevents");
    create_topic(&topic, 1).await;
    let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
    produce_with_headers(
        &topic,
        vec![
            (
                Some("k1".into()),
                data("inst_1", "o-binary").into_bytes(),
                Some(0),
                vec![
                    h("ce_specversion", "1.0"),
                    h("ce_id", "ce-1"),
                    h("ce_source", "/orders"),
                    h("ce_type", "order.shipped"),
                    h("ce_time", "2026-12-01T10:00:00+01:00"),
                    h("content-type", "application/json"),
                    h("traceparent", TRACEPARENT),
                    h("tracestate", "vendor=1"),
                ],
            ),
            (
                Some("k2".into()),
                structured("ce-2", "inst_2", "o-structured", false),
                Some(0),
                vec![h("content-type", "application/cloudevents+json; charset=utf-8")],
            ),
            (
                Some("k3".into()),
                structured("ce-3", "inst_3", "o-base64", true),
                Some(0),
                vec![h("content-type", "application/cloudevents+json")],
            ),
            (
                Some("k4".into()),
                br#"{"specversion":"1.0","id":"ce-4","type":"order.shipped","data":{"order_id":"o-plain"}}"#.to_vec(),
                Some(0),
                vec![],
            ),
        ],
    )
    .await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let route =
        format!("  - name: cloudevents\n    source: events\n    topics: [{topic}]\n{COOKBOOK}");
    let bridge = spawn_bridge(&config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route,
        "  commit_interval: 200ms\n",
    ));
    let done = wait_until(Duration::from_secs(60), || {
        counter(
            &bridge.metrics_text(),
            "orceum_bridge_events_delivered_total",
            "",
        ) + counter(
            &bridge.metrics_text(),
            "orceum_bridge_dead_letters_total",
            "",
        ) >= 4
    })
    .await;
    let metrics = bridge.metrics_text();
    bridge.stop().await;
    assert!(done, "{metrics}");
    assert_eq!(received(&sandbox, "o-binary"), Some(expected("ce-1", true)));
    let binary = sandbox
        .events()
        .into_iter()
        .find(|e| e.event["event_data"]["order_id"] == "o-binary")
        .unwrap();
    assert_eq!(binary.header("tracestate"), Some("vendor=1"));
    assert_eq!(
        received(&sandbox, "o-structured"),
        Some(expected("ce-2", false))
    );
    assert_eq!(
        received(&sandbox, "o-base64"),
        Some(expected("ce-3", false))
    );
    // Without content-type it is plain JSON, not a CloudEvent: no $meta.cloudevent, so the
    // cookbook's event_type is null and the message is dead-lettered (invalid_field).
    assert_eq!(sandbox.events().len(), 3, "three CloudEvents delivered");
    assert_eq!(
        counter(
            &metrics,
            "orceum_bridge_dead_letters_total",
            "invalid_field"
        ),
        1,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloudevents_over_jetstream_binary_and_structured_with_a_traceparent() {
    let url = nats_url();
    let name = unique("CE").replace('-', "_");
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.orders")],
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut binary = async_nats::HeaderMap::new();
    for (k, v) in [
        ("Ce-Specversion", "1.0"),
        ("Ce-Id", "ce-5"),
        ("Ce-Source", "/orders"),
        ("Ce-Type", "order.shipped"),
        ("Ce-Time", "2026-12-01T10:00:00+01:00"),
        ("Content-Type", "application/json"),
        ("traceparent", TRACEPARENT),
    ] {
        binary.insert(k, v);
    }
    let mut structured_headers = async_nats::HeaderMap::new();
    structured_headers.insert("Content-Type", "application/cloudevents+json");
    for (headers, payload) in [
        (binary, data("inst_5", "o-js-binary").into_bytes()),
        (
            structured_headers,
            structured("ce-6", "inst_6", "o-js-structured", false),
        ),
    ] {
        js.publish_with_headers(format!("{name}.orders"), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = format!(
        "orceum: {{ base_url: \"{}\", timeout: 5s }}\napps:\n  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}\nsources:\n  bus:\n    nats: {{ url: \"{url}\" }}\nroutes:\n  - name: cloudevents\n    source: bus\n    jetstream: {{ stream: {name}, durable: ce, create: true }}\n{COOKBOOK}observability: {{ listen: \"127.0.0.1:0\", log_format: text }}\n",
        sandbox.base_url()
    );
    let bridge = spawn_bridge(&yaml);
    let done = wait_until(Duration::from_secs(60), || sandbox.events().len() >= 2).await;
    bridge.stop().await;
    assert!(done, "only {} delivered", sandbox.events().len());
    assert_eq!(
        received(&sandbox, "o-js-binary"),
        Some(expected("ce-5", true))
    );
    assert_eq!(
        received(&sandbox, "o-js-structured"),
        Some(expected("ce-6", false))
    );
}
