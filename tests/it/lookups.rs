//! Lookup tables against real brokers: a table on a Kafka topic, on a JetStream key-value
//! bucket and in a file, each loaded from a backlog (inserts, an update, a delete), followed
//! while the bridge runs, and loaded again on a restart. Events come with a backlog too; every
//! event whose user has a mapping is delivered with the mapped installation, the others are
//! dead-lettered as `lookup_miss` (counted), and no source consumes before its table is ready.

use crate::common::*;
use crate::harness::*;
use async_nats::jetstream::{self, kv, stream};
use orceum_bridge::tools::sandbox::{Faults, SandboxHandle};
use rdkafka::producer::FutureRecord;
use std::collections::BTreeMap;
use std::time::Duration;

/// An event for `user` with sequence `seq`.
fn event(user: &str, seq: usize) -> Vec<u8> {
    format!(r#"{{"user":"{user}","seq":{seq}}}"#).into_bytes()
}

/// The route of every test here: the installation is looked up by `.user`.
fn lookup_route(source: &str, input: &str) -> String {
    format!(
        r#"  - name: joined
    source: {source}
{input}
    app: a
    event:
      installation_id: 'lookup("installations"; .user)'
      event_type: '"test.event"'
      event_data: '{{seq}}'
"#
    )
}

/// Installation each delivered event went to, by its `seq`.
fn delivered(sandbox: &SandboxHandle) -> BTreeMap<i64, String> {
    sandbox
        .events()
        .iter()
        .map(|e| {
            (
                e.event["event_data"]["seq"].as_i64().unwrap_or(-1),
                e.event["installation_id"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect()
}

fn metric(bridge: &InProcess, name: &str, filter: &str) -> u64 {
    counter(&bridge.metrics_text(), name, filter)
}

fn misses(bridge: &InProcess) -> u64 {
    metric(
        bridge,
        "orceum_bridge_dead_letters_total",
        "reason=\"lookup_miss\"",
    )
}

/// Waits until the table has applied `n` updates in all.
async fn wait_updates(bridge: &InProcess, n: u64) {
    let ok = wait_until(Duration::from_secs(30), || {
        metric(bridge, "orceum_bridge_lookup_updates_total", "") >= n
    })
    .await;
    assert!(
        ok,
        "the table applied {} of {n} updates",
        metric(bridge, "orceum_bridge_lookup_updates_total", "")
    );
}

/// Produces `(key, value)` records to a table topic; `None` is a tombstone.
async fn produce_table(topic: &str, records: &[(String, Option<String>)]) {
    let producer = Kafka::shared().producer();
    for (key, value) in records {
        let mut rec = FutureRecord::<String, String>::to(topic).key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .expect("produce a table record");
    }
}

/// The backlog every test starts from: 3,000 users mapped, user 5 remapped, user 7 deleted.
fn mappings() -> Vec<(String, Option<String>)> {
    let mut m: Vec<(String, Option<String>)> = (0..3000)
        .map(|i| (format!("user-{i}"), Some(format!("\"inst-{i}\""))))
        .collect();
    m.push(("user-5".into(), Some("inst-5-new".into())));
    m.push(("user-7".into(), None));
    m
}

/// 1,000 events over users 0..499 and 20 for users nobody mapped, then what each should become.
fn events_backlog(first_seq: usize) -> (Vec<Vec<u8>>, BTreeMap<i64, String>, u64) {
    let mut events = Vec::new();
    let mut want = BTreeMap::new();
    let mut missing = 0;
    for i in 0..1020 {
        let seq = first_seq + i;
        let user = if i < 1000 {
            format!("user-{}", i % 500)
        } else {
            format!("ghost-{i}")
        };
        let inst = match user.as_str() {
            "user-5" => Some("inst-5-new".to_string()),
            "user-7" => None,
            u if u.starts_with("ghost") => None,
            u => Some(u.replace("user-", "inst-")),
        };
        match inst {
            Some(inst) => {
                want.insert(seq as i64, inst);
            }
            None => missing += 1,
        }
        events.push(event(&user, seq));
    }
    (events, want, missing)
}

/// Waits until `want` is delivered and `missing` messages missed their lookup, then asserts
/// exactly that: each event with the installation it should have, and no other miss.
async fn assert_joined(
    sandbox: &SandboxHandle,
    bridge: &InProcess,
    want: &BTreeMap<i64, String>,
    missing: u64,
    what: &str,
) {
    wait_delivered(sandbox, want.len()).await;
    assert!(
        wait_until(Duration::from_secs(30), || misses(bridge) >= missing).await,
        "{what}: {} of {missing} misses dead-lettered",
        misses(bridge)
    );
    assert_eq!(
        &delivered(sandbox),
        want,
        "{what}: each event with its mapping"
    );
    assert_eq!(
        misses(bridge),
        missing,
        "{what}: only users without a mapping miss"
    );
}

/// The changes both bus tests make while the bridge runs: a new user, a remapped one, a
/// deleted one.
fn live_changes() -> Vec<(String, Option<String>)> {
    vec![
        ("ghost-new".into(), Some("inst-ghost".into())),
        ("user-2".into(), Some("inst-2-v2".into())),
        ("user-1".into(), None),
    ]
}

/// After [`live_changes`] and an event each for ghost-new (5000), user-2 (5001) and user-1
/// (5002): the first two delivered with their new mappings, user-1's a miss.
async fn assert_live_changes_joined(
    sandbox: &SandboxHandle,
    bridge: &InProcess,
    want: &mut BTreeMap<i64, String>,
    missing: u64,
) {
    want.insert(5000, "inst-ghost".into());
    want.insert(5001, "inst-2-v2".into());
    let what = "user-1's mapping was deleted";
    assert_joined(sandbox, bridge, want, missing + 1, what).await;
}

fn kafka_lookup_config(base_url: &str, group: &str, events: &str, table: &str) -> String {
    config(
        base_url,
        &kafka_brokers(),
        group,
        &lookup_route("events", &format!("    topics: [{events}]")),
        "  max_in_flight: 256\n  commit_interval: 200ms\n",
    )
    .replace(
        "routes:\n",
        &format!("lookups:\n  installations:\n    kafka: {{ source: events, topic: {table} }}\nroutes:\n"),
    )
}

async fn wait_delivered(sandbox: &SandboxHandle, n: usize) {
    let ok = wait_until(Duration::from_secs(120), || delivered(sandbox).len() >= n).await;
    assert!(ok, "{} of {n} events delivered", delivered(sandbox).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kafka_table_joins_a_backlog_follows_updates_and_tombstones_and_reloads_on_restart() {
    let (table, topic, group) = (unique("installs"), unique("joined"), unique("g-lookup"));
    create_topic(&table, 2).await;
    create_topic(&topic, 2).await;
    let backlog = mappings();
    produce_table(&table, &backlog).await;
    let (events, mut want, missing) = events_backlog(0);
    produce(
        &topic,
        events.into_iter().map(|e| (None, e, None)).collect(),
    )
    .await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = kafka_lookup_config(&sandbox.base_url(), &group, &topic, &table);
    let bridge = spawn_bridge(&yaml);

    assert_joined(&sandbox, &bridge, &want, missing, "the backlog").await;
    assert_eq!(
        metric(&bridge, "orceum_bridge_skipped_total", ""),
        0,
        "nothing skipped"
    );
    let text = bridge.metrics_text();
    assert_eq!(counter(&text, "orceum_bridge_lookup_entries", ""), 2999);
    assert_eq!(counter(&text, "orceum_bridge_lookup_ready", ""), 1);
    assert_eq!(
        counter(&text, "orceum_bridge_lookup_updates_total", ""),
        backlog.len() as u64
    );

    // Live: a new user, a remapped one, a deleted one; then events for them.
    produce_table(&table, &live_changes()).await;
    wait_updates(&bridge, backlog.len() as u64 + 3).await;
    produce(
        &topic,
        vec![
            (None, event("ghost-new", 5000), None),
            (None, event("user-2", 5001), None),
            (None, event("user-1", 5002), None),
        ],
    )
    .await;
    assert_live_changes_joined(&sandbox, &bridge, &mut want, missing).await;
    bridge.stop().await;

    // A restart reads the table from the beginning again, then the new events.
    let (more, more_want, more_missing) = events_backlog(10_000);
    produce(&topic, more.into_iter().map(|e| (None, e, None)).collect()).await;
    produce(&topic, vec![(None, event("ghost-new", 20_000), None)]).await;
    let (sandbox, _stop2) = start_sandbox(Faults::default()).await;
    let bridge = spawn_bridge(&kafka_lookup_config(
        &sandbox.base_url(),
        &group,
        &topic,
        &table,
    ));
    let mut want = more_want;
    want.insert(20_000, "inst-ghost".into());
    // user-1 is gone now and user-2 remapped: the backlog's expectations change with them.
    for inst in want.values_mut().filter(|i| i.as_str() == "inst-2") {
        *inst = "inst-2-v2".into();
    }
    let user1: Vec<i64> = want
        .iter()
        .filter(|(_, i)| i.as_str() == "inst-1")
        .map(|(s, _)| *s)
        .collect();
    for s in &user1 {
        want.remove(s);
    }
    let missing = more_missing + user1.len() as u64;
    assert_joined(&sandbox, &bridge, &want, missing, "after the restart").await;
    assert_eq!(
        counter(&bridge.metrics_text(), "orceum_bridge_lookup_entries", ""),
        2999
    );
    bridge.stop().await;
}

fn nats_lookup_config(base_url: &str, stream: &str, bucket: &str) -> String {
    format!(
        r#"
orceum: {{ base_url: "{base_url}", timeout: 5s }}
apps:
  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}
sources:
  bus:
    nats: {{ url: "{url}" }}
lookups:
  installations:
    nats_kv: {{ source: bus, bucket: {bucket} }}
routes:
{route}
delivery:
  max_in_flight: 256
observability: {{ listen: "127.0.0.1:0", log_format: text }}
"#,
        url = nats_url(),
        route = lookup_route(
            "bus",
            &format!("    jetstream: {{ stream: {stream}, durable: bridge, create: true, ack_wait: 5s }}")
        ),
    )
}

/// A JetStream context on `url` with a memory stream `name` over `name.>` for the events.
async fn events_stream(url: &str, name: &str) -> jetstream::Context {
    let nc = async_nats::connect(url).await.expect("connect to nats");
    let js = jetstream::new(nc);
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create stream");
    js
}

async fn readyz(bridge: &InProcess) -> (u16, String) {
    let r = reqwest::get(format!("{}/readyz", bridge.health_url().await))
        .await
        .expect("readyz");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// A key-value bucket made as the `nats` CLI makes one (async-nats's `create_key_value` reads
/// account details that nats-server 2.9 answers in an older shape).
async fn create_bucket(js: &jetstream::Context, bucket: &str) -> kv::Store {
    js.create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create the bucket's stream");
    js.get_key_value(bucket).await.expect("open the bucket")
}

async fn put_all(store: &kv::Store, records: &[(String, Option<String>)]) {
    for (key, value) in records {
        match value {
            Some(v) => {
                store
                    .put(key.as_str(), v.clone().into_bytes().into())
                    .await
                    .expect("kv put");
            }
            None => store.delete(key.as_str()).await.expect("kv delete"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_kv_table_gates_its_source_joins_a_backlog_follows_changes_and_reloads_on_restart() {
    let url = nats_url();
    let name = unique("LK").replace('-', "_");
    let bucket = format!("{name}_installs");
    let js = events_stream(&url, &name).await;
    let (events, want, missing) = events_backlog(0);
    for e in &events {
        js.publish(format!("{name}.tasks"), e.clone().into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let bridge = spawn_bridge(&nats_lookup_config(&sandbox.base_url(), &name, &bucket));

    // The bucket does not exist yet: the table is not ready, so the source must not consume.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = readyz(&bridge).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("lookup installations") && body.contains(&bucket),
        "{body}"
    );
    assert_eq!(
        metric(&bridge, "orceum_bridge_messages_received_total", ""),
        0,
        "no message is read before its table is ready"
    );
    assert_eq!(misses(&bridge), 0);

    // Stopping a bridge whose source waits for its table is prompt and clean.
    bridge.stop().await;
    assert!(sandbox.events().is_empty());

    // The bucket with its backlog (an empty bucket would be a caught-up table at once).
    let store = create_bucket(&js, &bucket).await;
    let backlog = mappings();
    put_all(&store, &backlog).await;
    let bridge = spawn_bridge(&nats_lookup_config(&sandbox.base_url(), &name, &bucket));
    assert_joined(
        &sandbox,
        &bridge,
        &want,
        missing,
        "each event with its mapping",
    )
    .await;
    assert_eq!(readyz(&bridge).await.0, 200);
    assert_eq!(
        counter(&bridge.metrics_text(), "orceum_bridge_lookup_entries", ""),
        2999
    );

    // Live changes, then events for them.
    let before = metric(&bridge, "orceum_bridge_lookup_updates_total", "");
    put_all(&store, &live_changes()).await;
    wait_updates(&bridge, before + 3).await;
    assert!(
        wait_until(Duration::from_secs(30), || {
            counter(&bridge.metrics_text(), "orceum_bridge_lookup_entries", "") == 2999
        })
        .await
    );
    let mut want = want;
    for (seq, user) in [(5000, "ghost-new"), (5001, "user-2"), (5002, "user-1")] {
        js.publish(format!("{name}.tasks"), event(user, seq).into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    assert_live_changes_joined(&sandbox, &bridge, &mut want, missing).await;
    bridge.stop().await;

    // A restart: the bucket is read again (now with ghost-new, without user-1).
    for (seq, user) in [(6000, "ghost-new"), (6001, "user-1"), (6002, "user-5")] {
        js.publish(format!("{name}.tasks"), event(user, seq).into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let (sandbox, _stop2) = start_sandbox(Faults::default()).await;
    let bridge = spawn_bridge(&nats_lookup_config(&sandbox.base_url(), &name, &bucket));
    wait_delivered(&sandbox, 2).await;
    assert!(wait_until(Duration::from_secs(30), || misses(&bridge) >= 1).await);
    let after: BTreeMap<i64, String> =
        BTreeMap::from([(6000, "inst-ghost".into()), (6002, "inst-5-new".into())]);
    assert_eq!(delivered(&sandbox), after, "after the restart");
    assert_eq!(misses(&bridge), 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_table_is_read_again_when_it_changes() {
    let url = nats_url();
    let name = unique("LF").replace('-', "_");
    let js = events_stream(&url, &name).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("installations.json");
    std::fs::write(&file, r#"{"user-1": "inst-1", "user-2": "inst-2"}"#).unwrap();
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = nats_lookup_config(&sandbox.base_url(), &name, "unused").replace(
        "    nats_kv: { source: bus, bucket: unused }",
        &format!("    file: {}", file.display()),
    );
    let bridge = spawn_bridge(&yaml);
    let publish = |user: &'static str, seq: usize| {
        let js = js.clone();
        let subject = format!("{name}.tasks");
        async move {
            js.publish(subject, event(user, seq).into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    };
    publish("user-1", 1).await;
    publish("user-3", 2).await;
    wait_delivered(&sandbox, 1).await;
    assert!(wait_until(Duration::from_secs(30), || misses(&bridge) >= 1).await);

    // The file changes (a ConfigMap update): user-3 appears, user-1 moves, user-2 goes.
    std::fs::write(&file, r#"{"user-1": "inst-1-b", "user-3": "inst-3"}"#).unwrap();
    wait_updates(&bridge, 2).await;
    publish("user-1", 3).await;
    publish("user-2", 4).await;
    publish("user-3", 5).await;
    wait_delivered(&sandbox, 3).await;
    assert!(wait_until(Duration::from_secs(30), || misses(&bridge) >= 2).await);
    let want: BTreeMap<i64, String> = BTreeMap::from([
        (1, "inst-1".into()),
        (3, "inst-1-b".into()),
        (5, "inst-3".into()),
    ]);
    assert_eq!(delivered(&sandbox), want);
    assert_eq!(
        misses(&bridge),
        2,
        "user-3 before the change, user-2 after it"
    );
    assert_eq!(
        counter(&bridge.metrics_text(), "orceum_bridge_lookup_entries", ""),
        2
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lookup_miss_is_dead_lettered_and_replay_delivers_it_once_the_mapping_exists() {
    let (table, topic, dlq, group) = (
        unique("installs"),
        unique("joined"),
        unique("joined-dlq"),
        unique("g-lookup"),
    );
    for t in [&table, &topic, &dlq] {
        create_topic(t, 1).await;
    }
    produce_table(&table, &[("user-1".into(), Some("inst-1".into()))]).await;
    produce(
        &topic,
        vec![
            (None, event("user-1", 1), None),
            (None, event("user-2", 2), None),
            (None, event("user-3", 3), None),
        ],
    )
    .await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = kafka_lookup_config(&sandbox.base_url(), &group, &topic, &table).replace(
        "  commit_interval: 200ms\n",
        &format!("  commit_interval: 200ms\n  dead_letter: {{ kafka: {{ source: events, topic: {dlq} }} }}\n"),
    );
    let bridge = spawn_bridge(&yaml);
    wait_delivered(&sandbox, 1).await;
    let dead = consume_all(&dlq, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2);
    assert!(dead
        .iter()
        .all(|d| d.header("orceum.reason_kind") == Some(&b"lookup_miss"[..])));
    bridge.stop().await;

    // The mapping for user-2 arrives (user-3 never installs); replay the misses.
    produce_table(&table, &[("user-2".into(), Some("inst-2".into()))]).await;
    sandbox.clear();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
        cmd.args(["replay", "-c"]).arg(&path).args([
            "--from",
            &format!("kafka:{dlq}"),
            "--reason",
            "lookup_miss",
        ]);
        for (k, v) in env_vars() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "user-3 still misses: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 read, 1 delivered") && stdout.contains("failed lookup_miss: 1"),
        "{stdout}"
    );
    assert_eq!(
        delivered(&sandbox),
        BTreeMap::from([(2, "inst-2".to_string())])
    );
}
