//! The per-event hot path, through the library's own code: jq templates (`Route::map`), the
//! request body (`OrceumEvent::to_body`), the HMAC signature and request building
//! (`orceum::client::prepare`), for a small (~300 B) and a large (~8 KB) message.
//!
//! `small_lookup` is `small` joined on a 1,000,000-entry lookup table (issue 14: the filter
//! and `installation_id` are `lookup("installations"; .user.id)`); the table's fill time and
//! size are printed first.
//!
//! `avro_small` and `protobuf_small` are `small`'s fields in the Confluent wire format with a
//! local schema (issue 17: decode + map + sign under 10 µs): `decode` is the format's decoder
//! into the templates' input; `decode_template_serialise_sign` everything before HTTP.
//!
//! `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3`
//!
//! Target (issue 7): template + serialise + sign under 5 µs per small event on a 2-core machine.
//! Results and the machine they came from: docs/performance.md. No timing is asserted here.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use orceum_bridge::build::load_str;
use orceum_bridge::message::{Message, Origin};
use orceum_bridge::orceum::app::App;
use orceum_bridge::orceum::client::prepare;
use orceum_bridge::orceum::event::OrceumEvent;
use orceum_bridge::orceum::sign::signature_header;
use orceum_bridge::route::{parse_payload, Mapped, Parsed, Route};
use serde_json::{json, Value};
use std::hint::black_box;
use std::sync::Arc;

/// The route of the README's example (filter, five templates, one object construction), plus
/// a pass-through route for the large event (its `data` becomes `event_data` whole).
const CONFIG: &str = r#"
orceum: { base_url: "http://127.0.0.1:9/v1", timeout: 2s }
apps:
  tasks: { app_id: app_123, secret: { env: ORCEUM_TASKS_SECRET } }
sources:
  events: { kafka: { bootstrap_servers: "localhost:9092" } }
routes:
  - name: task-completed
    source: events
    topics: [tasks]
    app: tasks
    filter: '.status == "done"'
    event:
      installation_id: .user.installation_id
      event_type: '"task.completed"'
      event_data: '{task_id: .id, title, completed_at}'
      timestamp: .completed_at
      priority: 'if .urgent then "high" else "normal" end'
  - name: task-completed-joined
    source: events
    topics: [tasks]
    app: tasks
    filter: 'lookup("installations"; .user.id) != null'
    event:
      installation_id: 'lookup("installations"; .user.id)'
      event_type: '"task.completed"'
      event_data: '{task_id: .id, title, completed_at}'
      timestamp: .completed_at
      priority: 'if .urgent then "high" else "normal" end'
  - name: export-ready
    source: events
    topics: [exports]
    app: tasks
    event:
      installation_id: .user.installation_id
      event_type: '"export.ready"'
      event_data: .data
      timestamp: .completed_at
lookups:
  installations: { file: /nonexistent/filled-by-the-bench.json }
"#;

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Fills the table with 1,000,000 entries of ~40-byte keys and values (the bench's user
/// is the last one); prints how long it took and what it cost.
fn fill_table(bridge: &orceum_bridge::build::Bridge) {
    use orceum_bridge::lookup::table::Stored;
    let Some(lookup) = bridge.lookups.get("installations") else {
        panic!("the bench config has the installations lookup");
    };
    let before = rss_kib();
    let started = std::time::Instant::now();
    for i in 0..999_999u32 {
        let key = format!("usr_{i:08}_0a1b2c3d4e5f60718293a4b5c6d7");
        let value = Stored::Text(format!("inst_{i:08}_f0e1d2c3b4a5968778695a4b"));
        lookup
            .table
            .put(&key, &value)
            .expect("fits the default bounds");
    }
    lookup
        .table
        .put("usr_7f3a9c", &Stored::Text("inst_4b8e2d1a".into()))
        .expect("fits");
    let (entries, bytes) = lookup.table.size();
    eprintln!(
        "lookup table: {entries} entries ({bytes} bytes of keys and values) filled in {:.2?}; RSS +{} MiB",
        started.elapsed(),
        rss_kib().saturating_sub(before) / 1024
    );
}

const SECRET: &str = "whs_3f9c1d7e2b8a4c6d0e5f1a2b3c4d5e6f";

fn env(name: &str) -> Option<String> {
    (name == "ORCEUM_TASKS_SECRET").then(|| SECRET.to_string())
}

/// A task-completed message of about 300 bytes.
fn small_payload() -> Vec<u8> {
    let v = json!({
        "id": "task_01HZX3K9Q7W2V8N4M6P5R3T1Y0",
        "title": "Reconcile the March invoices for the EMEA billing entity",
        "status": "done",
        "urgent": false,
        "completed_at": "2026-03-14T09:26:53Z",
        "user": { "id": "usr_7f3a9c", "installation_id": "inst_4b8e2d1a", "email": "ana@example.com" },
        "project": { "id": "prj_0192", "name": "Finance ops" },
        "tags": ["finance", "monthly"]
    });
    serde_json::to_vec(&v).unwrap()
}

/// An export-ready message of about 8 KB: its `data` (rows of an export manifest) is copied
/// into `event_data` whole, so every byte goes through conversion, serialisation and the HMAC.
fn large_payload() -> Vec<u8> {
    let rows: Vec<Value> = (0..52)
        .map(|i| {
            json!({
                "file": format!("exports/2026-03/part-{i:04}.parquet"),
                "rows": 10_000 + i * 37,
                "bytes": 1_048_576 + i * 4096,
                "sha256": format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15),
            })
        })
        .collect();
    let v = json!({
        "id": "exp_01HZX3M2",
        "completed_at": "2026-03-14T09:26:53.120Z",
        "user": { "id": "usr_7f3a9c", "installation_id": "inst_4b8e2d1a" },
        "data": { "export_id": "exp_01HZX3M2", "format": "parquet", "files": rows }
    });
    serde_json::to_vec(&v).unwrap()
}

fn message(topic: &str, payload: Vec<u8>) -> Message {
    Message {
        source: Arc::from("events"),
        origin: Origin::Kafka {
            topic: Arc::from(topic),
            partition: 3,
            offset: 1_834_221,
        },
        route: None,
        payload,
        key: Some(b"inst_4b8e2d1a".to_vec()),
        headers: vec![("trace-id".into(), Some(b"4bf92f3577b34da6".to_vec()))],
        timestamp: None,
    }
}

fn event(route: &Route, msg: &Message, parsed: &Parsed) -> OrceumEvent {
    match route.map(msg, parsed) {
        Mapped::Event(ev) => ev,
        other => panic!("the bench message did not map to an event: {other:?}"),
    }
}

struct Case {
    name: &'static str,
    route: Arc<Route>,
    msg: Message,
}

fn hot_path(c: &mut Criterion) {
    let bridge = load_str(CONFIG, "bench.yaml", env).expect("bench config");
    let app: App = bridge.apps["tasks"].clone();
    let base_url = "http://127.0.0.1:9/v1";
    fill_table(&bridge);
    let cases = [
        Case {
            name: "small",
            route: bridge.routes[0].clone(),
            msg: message("tasks", small_payload()),
        },
        Case {
            name: "small_lookup",
            route: bridge.routes[1].clone(),
            msg: message("tasks", small_payload()),
        },
        Case {
            name: "large",
            route: bridge.routes[2].clone(),
            msg: message("exports", large_payload()),
        },
    ];

    for case in &cases {
        let parsed = parse_payload(&case.msg.payload, 1 << 20);
        let ev = event(&case.route, &case.msg, &parsed);
        let body = ev.to_body();
        eprintln!(
            "{}: message {} B, body {} B",
            case.name,
            case.msg.payload.len(),
            body.len()
        );

        let mut g = c.benchmark_group(case.name);
        g.throughput(Throughput::Elements(1));

        // The message bytes → jaq values (done once per message, shared by routes).
        g.bench_function("parse", |b| {
            b.iter(|| parse_payload(black_box(&case.msg.payload), 1 << 20))
        });
        // Filter + every event template, typing and timestamp normalisation.
        g.bench_function("template", |b| {
            b.iter(|| case.route.map(black_box(&case.msg), black_box(&parsed)))
        });
        // Where `template` goes: `$meta` built per message (only for routes that read it), a
        // plain path (a lookup, no jaq run), and the route's `event_data` expression (jaq runs
        // it: an object construction on the small route, a path on the large one).
        g.bench_function("meta", |b| b.iter(|| black_box(&case.msg).meta()));
        let input = match &parsed {
            Parsed::Json(v) | Parsed::Decoded(v, _) => v.clone(),
            Parsed::Invalid(r) => panic!("the bench message is not JSON: {r:?}"),
        };
        let null = jaq_json::Val::Null;
        let path = &case.route.event.installation_id;
        g.bench_function("field_path", |b| {
            b.iter(|| path.run_vals(black_box(&input), &null))
        });
        let data = &case.route.event.event_data;
        g.bench_function("field_event_data", |b| {
            b.iter(|| data.run_vals(black_box(&input), &null))
        });
        g.bench_function("serialise", |b| b.iter(|| black_box(&ev).to_body()));
        g.bench_function("sign_hmac", |b| {
            b.iter(|| signature_header(black_box(SECRET.as_bytes()), black_box(&body)))
        });
        // URL, headers, signature, X-Timestamp: what each attempt builds.
        g.bench_function("prepare", |b| {
            b.iter_batched(
                || body.clone(),
                |body| prepare(black_box(base_url), &app, body),
                BatchSize::SmallInput,
            )
        });
        // The issue's target: template + serialise + sign (+ request building).
        g.bench_function("template_serialise_sign", |b| {
            b.iter(|| {
                let ev = event(&case.route, black_box(&case.msg), &parsed);
                prepare(base_url, &app, ev.to_body())
            })
        });
        // The same with the JSON parse: everything the engine does per message before HTTP.
        g.bench_function("parse_template_serialise_sign", |b| {
            b.iter(|| {
                let parsed = parse_payload(black_box(&case.msg.payload), 1 << 20);
                let ev = event(&case.route, &case.msg, &parsed);
                prepare(base_url, &app, ev.to_body())
            })
        });
        g.finish();
    }
}

/// `small`'s fields as an Avro record and as a Protobuf message, each framed (schema id 1).
fn formats(c: &mut Criterion) {
    use orceum_bridge::format::{decode_as, Decoding};
    use prost_reflect::prost::Message as _;
    use prost_reflect::prost_types::{
        field_descriptor_proto::Type, DescriptorProto, FieldDescriptorProto, FileDescriptorProto,
        FileDescriptorSet,
    };
    let dir = std::env::temp_dir().join(format!("orceum-bench-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let avsc = dir.join("task.avsc");
    let avro_schema = r#"{"type":"record","name":"Task","namespace":"bench","fields":[
        {"name":"id","type":"string"},{"name":"title","type":"string"},
        {"name":"status","type":"string"},{"name":"urgent","type":"boolean"},
        {"name":"completed_at","type":"string"},
        {"name":"user","type":{"type":"record","name":"User","fields":[
            {"name":"id","type":"string"},{"name":"installation_id","type":"string"}]}}]}"#;
    std::fs::write(&avsc, avro_schema).expect("write the schema");
    let field =
        |name: &str, number: i32, kind: Type, type_name: Option<&str>| FieldDescriptorProto {
            name: Some(name.into()),
            json_name: None,
            number: Some(number),
            r#type: Some(kind as i32),
            type_name: type_name.map(String::from),
            ..Default::default()
        };
    let set = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("bench/task.proto".into()),
            package: Some("bench".into()),
            syntax: Some("proto3".into()),
            message_type: vec![
                DescriptorProto {
                    name: Some("User".into()),
                    field: vec![
                        field("id", 1, Type::String, None),
                        field("installation_id", 2, Type::String, None),
                    ],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Task".into()),
                    field: vec![
                        field("id", 1, Type::String, None),
                        field("title", 2, Type::String, None),
                        field("status", 3, Type::String, None),
                        field("urgent", 4, Type::Bool, None),
                        field("completed_at", 5, Type::String, None),
                        field("user", 6, Type::Message, Some(".bench.User")),
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    };
    let descriptors = dir.join("task.binpb");
    std::fs::write(&descriptors, set.encode_to_vec()).expect("write the descriptors");
    let config = format!(
        r#"
orceum: {{ base_url: "http://127.0.0.1:9/v1", timeout: 2s }}
apps:
  tasks: {{ app_id: app_123, secret: {{ env: ORCEUM_TASKS_SECRET }} }}
sources:
  events: {{ kafka: {{ bootstrap_servers: "localhost:9092" }} }}
routes:
  - name: avro
    source: events
    topics: [tasks]
    format: avro
    avro_schema_file: "{avsc}"
    app: tasks
    filter: '.status == "done"'
    event:
      installation_id: .user.installation_id
      event_type: '"task.completed"'
      event_data: '{{task_id: .id, title, completed_at}}'
      timestamp: .completed_at
      priority: 'if .urgent then "high" else "normal" end'
  - name: protobuf
    source: events
    topics: [tasks]
    format: protobuf
    protobuf: {{ descriptor_set: "{descriptors}", message: bench.Task }}
    app: tasks
    filter: '.status == "done"'
    event:
      installation_id: .user.installationId
      event_type: '"task.completed"'
      event_data: '{{task_id: .id, title, completed_at: .completedAt}}'
      timestamp: .completedAt
      priority: 'if .urgent then "high" else "normal" end'
"#,
        avsc = avsc.display(),
        descriptors = descriptors.display()
    );
    let bridge = load_str(&config, "bench.yaml", env).expect("bench formats config");
    let app: App = bridge.apps["tasks"].clone();
    let small: Value = serde_json::from_slice(&small_payload()).expect("small payload");
    let text = |k: &str| small[k].as_str().unwrap_or_default().to_string();
    let user = |k: &str| small["user"][k].as_str().unwrap_or_default().to_string();
    // Avro: the datum, framed.
    let avro = {
        use apache_avro::types::Value as A;
        let schema = apache_avro::Schema::parse_str(avro_schema).expect("avro schema");
        let record = A::Record(vec![
            ("id".into(), A::String(text("id"))),
            ("title".into(), A::String(text("title"))),
            ("status".into(), A::String(text("status"))),
            (
                "urgent".into(),
                A::Boolean(small["urgent"].as_bool().unwrap_or(false)),
            ),
            ("completed_at".into(), A::String(text("completed_at"))),
            (
                "user".into(),
                A::Record(vec![
                    ("id".into(), A::String(user("id"))),
                    ("installation_id".into(), A::String(user("installation_id"))),
                ]),
            ),
        ]);
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend(apache_avro::to_avro_datum(&schema, record).expect("avro datum"));
        framed
    };
    // Protobuf: the message, framed with the index list `[0]` (one 0 byte).
    let protobuf = {
        let pool = prost_reflect::DescriptorPool::decode(set.encode_to_vec().as_slice())
            .expect("descriptor pool");
        let task = pool.get_message_by_name("bench.Task").expect("Task");
        let user_desc = pool.get_message_by_name("bench.User").expect("User");
        let mut u = prost_reflect::DynamicMessage::new(user_desc);
        u.set_field_by_name("id", prost_reflect::Value::String(user("id")));
        u.set_field_by_name(
            "installation_id",
            prost_reflect::Value::String(user("installation_id")),
        );
        let mut t = prost_reflect::DynamicMessage::new(task);
        for k in ["id", "title", "status", "completed_at"] {
            t.set_field_by_name(k, prost_reflect::Value::String(text(k)));
        }
        t.set_field_by_name(
            "urgent",
            prost_reflect::Value::Bool(small["urgent"].as_bool().unwrap_or(false)),
        );
        t.set_field_by_name("user", prost_reflect::Value::Message(u));
        let mut framed = vec![0, 0, 0, 0, 1, 0];
        framed.extend(t.encode_to_vec());
        framed
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let decoding = Decoding {
        registry: None,
        stop: &stop,
        max_bytes: 1 << 20,
    };
    for (name, route, payload) in [
        ("avro_small", bridge.routes[0].clone(), avro),
        ("protobuf_small", bridge.routes[1].clone(), protobuf),
    ] {
        let msg = message("tasks", payload);
        let parsed = decode_as(&msg, &route.format, &decoding).expect("decoded");
        let ev = event(&route, &msg, &parsed);
        eprintln!(
            "{name}: message {} B, body {} B",
            msg.payload.len(),
            ev.to_body().len()
        );
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        g.bench_function("decode", |b| {
            b.iter(|| decode_as(black_box(&msg), &route.format, &decoding))
        });
        g.bench_function("decode_template_serialise_sign", |b| {
            b.iter(|| {
                let parsed = match decode_as(black_box(&msg), &route.format, &decoding) {
                    Ok(p) => p,
                    Err(_) => unreachable!("no registry to wait for"),
                };
                let ev = event(&route, &msg, &parsed);
                prepare("http://127.0.0.1:9/v1", &app, ev.to_body())
            })
        });
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, hot_path, formats);
criterion_main!(benches);
