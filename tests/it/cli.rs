//! The command line as a user meets it: `check` lists every error with its path, `render`
//! shows the exact request with the secret redacted and distinguishes send / skip / dead-letter,
//! `sandbox` answers each event with the action its flags name.

use std::process::{Command, Output};

fn bridge(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
    cmd.args(args)
        .env("CLI_SECRET", "whs_cli_secret_value")
        .env_remove("MISSING_SECRET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run orceum-bridge");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// The stdout of a run that must have exited 0 (its output shown if not).
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const GOOD: &str = r#"
orceum: { base_url: "https://api.orceum.com/v1" }
apps:
  tasks: { app_id: app_123, secret: { env: CLI_SECRET } }
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
      event_data: '{task_id: .id, title}'
      timestamp: .completed_at
      priority: 'if .urgent then "high" else "normal" end'
"#;

fn write(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn check_accepts_a_good_config_with_a_summary() {
    let (_d, path) = write(GOOD);
    let out = bridge(&["check", "-c", &path], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK") && stdout.contains("1 route(s)"),
        "{stdout}"
    );
}

#[test]
fn check_lists_three_mistakes_with_their_paths_at_once() {
    let bad = GOOD
        .replace("env: CLI_SECRET", "env: MISSING_SECRET")
        .replace("'{task_id: .id, title}'", "'{task_id: .id, title'")
        .replace("app: tasks\n", "app: nope\n");
    let (_d, path) = write(&bad);
    let out = bridge(&["check", "-c", &path], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("3 errors"), "{stderr}");
    for expected in [
        "apps.tasks.secret: environment variable MISSING_SECRET is not set",
        "routes[0].app: \"nope\" is not an app",
        "routes[0].event.event_data: jq syntax error",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_points_at_an_unknown_key() {
    let (_d, path) = write(&GOOD.replace("app: tasks\n", "app: tasks\n    topcis: [x]\n"));
    let out = bridge(&["check", "-c", &path], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("routes[0]") && stderr.contains("topcis"),
        "{stderr}"
    );
}

#[test]
fn render_shows_the_signed_request_with_the_secret_redacted() {
    let (_d, path) = write(GOOD);
    let msg = r#"{"id":"t1","title":"Q4","status":"done","urgent":true,"completed_at":"2024-01-15T13:00:00+01:00","user":{"installation_id":"inst_1"}}"#;
    let out = bridge(
        &[
            "render",
            "-c",
            &path,
            "--route",
            "task-completed",
            "--meta",
            "partition=2",
            "--meta",
            "offset=1834",
        ],
        Some(msg),
    );
    let stdout = succeeded(&out);
    assert!(
        stdout.starts_with("POST https://api.orceum.com/v1/apps/app_123/events\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("whs_cli_secret_value"),
        "secret leaked: {stdout}"
    );
    assert!(stdout.contains("X-Orceum-Webhook-Secret: whs_…[REDACTED]"));
    let body = r#"{"installation_id":"inst_1","event_type":"task.completed","event_data":{"task_id":"t1","title":"Q4"},"timestamp":"2024-01-15T12:00:00Z","priority":"high","metadata":{"source":"kafka:tasks/2@1834"}}"#;
    assert!(stdout.contains(body), "{stdout}");
    let sig =
        orceum_bridge::orceum::sign::signature_header(b"whs_cli_secret_value", body.as_bytes());
    assert!(
        stdout.contains(&format!("X-Hub-Signature-256: {sig}")),
        "{stdout}"
    );
}

#[test]
fn render_exit_codes_distinguish_skip_and_dead_letter() {
    let (_d, path) = write(GOOD);
    let skipped = bridge(
        &["render", "-c", &path, "--route", "task-completed"],
        Some(r#"{"status":"open"}"#),
    );
    assert_eq!(skipped.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&skipped.stdout).contains("SKIPPED"));
    let dead = bridge(
        &["render", "-c", &path, "--route", "task-completed"],
        Some("not json"),
    );
    assert_eq!(dead.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&dead.stdout).contains("DEAD-LETTER (not_json)"));
    let no_installation = bridge(
        &["render", "-c", &path, "--route", "task-completed"],
        Some(r#"{"status":"done","id":"t","title":"x","completed_at":"2024-01-15T12:00:00Z"}"#),
    );
    assert_eq!(no_installation.status.code(), Some(4));
    let text = String::from_utf8_lossy(&no_installation.stdout);
    assert!(
        text.contains("event.installation_id: must be a non-empty string, got null"),
        "{text}"
    );
}

#[test]
fn render_into_a_closed_pipe_exits_0_quietly_and_reads_no_more_than_a_message() {
    use std::io::Write;
    use std::process::Stdio;
    let (_d, path) = write(GOOD);
    // stdout closed before anything is written (as `render … | head -c0` would): exit 0,
    // no panic message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args(["render", "-c", &path, "--route", "task-completed"])
        .env("CLI_SECRET", "whs_cli_secret_value")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // More than max_message_bytes (1 MiB by default) on stdin, then the input is left open:
    // render stops reading at the limit instead of reading (and holding) everything.
    let mut stdin = child.stdin.take().unwrap();
    let big = vec![b' '; 2 * 1024 * 1024];
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&big);
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(stdin);
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(writer);
}

/// A config whose route joins on a lookup table kept on a topic.
fn with_lookup(installation_id: &str) -> String {
    GOOD.replace(
        "routes:\n",
        "lookups:\n  installations:\n    kafka: { source: events, topic: orceum-installations }\nroutes:\n",
    )
    .replace(
        "filter: '.status == \"done\"'",
        "filter: 'lookup(\"installations\"; .user_id) != null'",
    )
    .replace(
        "installation_id: .user.installation_id",
        &format!("installation_id: '{installation_id}'"),
    )
}

#[test]
fn check_names_an_unknown_lookup_table_with_the_route_path() {
    let (_d, path) = write(&with_lookup(r#"lookup("instalations"; .user_id)"#));
    let out = bridge(&["check", "-c", &path], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("routes[0].event.installation_id")
            && stderr.contains("\"instalations\"")
            && stderr.contains("lookups: installations"),
        "{stderr}"
    );
    let (_d, path) = write(&with_lookup(r#"lookup("installations"; .user_id)"#));
    let out = bridge(&["check", "-c", &path], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn render_joins_a_sample_against_a_sample_table() {
    let (dir, path) = write(&with_lookup(r#"lookup("installations"; .user_id)"#));
    let table = dir.path().join("installations.json");
    std::fs::write(&table, r#"{"u-1": "inst_1", "u-2": "inst_2"}"#).unwrap();
    let sample = r#"{"id":"t1","title":"Q4","status":"done","user_id":"u-2","completed_at":"2024-01-15T12:00:00Z"}"#;
    let lookup = format!("installations={}", table.display());
    let args = [
        "render",
        "-c",
        &path,
        "--route",
        "task-completed",
        "--lookup",
        &lookup,
    ];
    let out = bridge(&args, Some(sample));
    let stdout = succeeded(&out);
    assert!(
        stdout.contains(r#"{"installation_id":"inst_2""#),
        "{stdout}"
    );
    // A user the table does not know: the filter skips it.
    let out = bridge(&args, Some(&sample.replace("u-2", "u-9")));
    assert_eq!(out.status.code(), Some(3));
    // Without a sample table the lookup answers null, and render says so.
    let out = bridge(&args[..5], Some(sample));
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no sample table"), "{stderr}");
    let out = bridge(
        &[
            "render",
            "-c",
            &path,
            "--route",
            "task-completed",
            "--lookup",
            "nope=x.json",
        ],
        Some(sample),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no such table"),
        "{stderr}"
    );
}

#[test]
fn render_dead_letters_a_lookup_miss_with_a_reason_that_says_so() {
    // No filter: a user without a mapping reaches installation_id, which says the lookup missed.
    let text = with_lookup(r#"lookup("installations"; .user_id)"#).replace(
        "    filter: 'lookup(\"installations\"; .user_id) != null'\n",
        "",
    );
    let (dir, path) = write(&text);
    let table = dir.path().join("t.csv");
    std::fs::write(&table, "u-1,inst_1\n").unwrap();
    let lookup = format!("installations={}", table.display());
    let out = bridge(
        &[
            "render",
            "-c",
            &path,
            "--route",
            "task-completed",
            "--lookup",
            &lookup,
        ],
        Some(r#"{"id":"t1","title":"Q4","user_id":"u-9"}"#),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("DEAD-LETTER (lookup_miss)") && stdout.contains("replay"),
        "{stdout}"
    );
    assert!(!stdout.contains("u-9"), "the key is message data: {stdout}");
}

/// `sandbox` with `--action` and `--action-for`: each installation gets the answer its flag
/// names, with the status the API pairs with it, the printed line and `/_sandbox/stats` say
/// which; a share that cannot be met is refused before anything listens.
#[tokio::test]
async fn the_sandbox_answers_the_actions_its_flags_ask_for_and_prints_them() {
    use orceum_bridge::orceum::sign::signature_header;
    use std::io::{BufRead, BufReader};
    const SECRET: &str = "whs_cli_sandbox_secret";
    let mut child = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--app",
            "app_1=env:SBX_SECRET",
            "--action",
            "IGNORED=1",
            "--action-for",
            "inst_q=QUEUED",
            "--action-for",
            "inst_t=non-json",
        ])
        .env("SBX_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let base = loop {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "no listening line");
        if let Some((_, base)) = line.trim().split_once("base_url ") {
            break base.to_string();
        }
    };
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for inst in ["inst_q", "inst_t", "inst_x"] {
        let body = format!(
            r#"{{"installation_id":"{inst}","event_type":"task.completed","event_data":{{"n":1}},"timestamp":"2024-01-15T12:00:00Z","priority":"normal"}}"#
        );
        let resp = client
            .post(format!("{base}/apps/app_1/events"))
            .header("Content-Type", "application/json")
            .header("X-Orceum-Webhook-Secret", SECRET)
            .header(
                "X-Hub-Signature-256",
                signature_header(SECRET.as_bytes(), body.as_bytes()),
            )
            .header("X-Timestamp", "2024-01-15T12:00:01Z")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{inst}");
        answers.push(String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned());
    }
    let stats = client
        .get(base.replace("/v1", "/_sandbox/stats"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(json(&answers[0])["action_taken"], "QUEUED");
    assert_eq!(json(&answers[0])["status"], "QUEUED");
    assert_eq!(answers[1], "OK");
    assert_eq!(json(&answers[2])["action_taken"], "IGNORED");
    assert_eq!(json(&answers[2])["status"], "IGNORED");
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(
        stats["by_action"],
        serde_json::json!({"IGNORED": 1, "QUEUED": 1, "non-json": 1})
    );
    let printed: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert_eq!(printed.len(), 3, "{printed:?}");
    for (line, action) in printed.iter().zip(["QUEUED", "non-json", "IGNORED"]) {
        assert!(line.contains(&format!(" normal {action} {{")), "{line}");
    }

    for (args, says) in [
        (&["--action", "IGNORED=2"][..], "ACTION=SHARE"),
        (
            &["--action", "IGNORED=0.7", "--action", "QUEUED=0.5"][..],
            "more than 1",
        ),
        (&["--action-for", "inst_a=LOST"][..], "is not an answer"),
    ] {
        let out = bridge(
            &[
                &["sandbox", "--listen", "127.0.0.1:0", "--accept-any"],
                args,
            ]
            .concat(),
            None,
        );
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
}
