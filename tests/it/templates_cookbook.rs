//! The docs are run, not just read: every `orceum-bridge render` command in docs/templates.md
//! and every `orceum-bridge check` command in docs/configuration.md is executed exactly as
//! written, and must print exactly what the page shows. A recipe that drifts from what the bridge
//! does fails the build.
//!
//! A tested block is marked by an HTML comment (invisible when rendered) on the line before its
//! fence: `<!-- test:ID:KIND -->`. Kinds:
//! - `config`: a config file (the cookbook's shared header, or a whole config in the reference);
//! - `route`: one cookbook route, appended under the shared config's `routes:`;
//! - `env`: `export NAME=VALUE …`, the environment the cookbook's commands run with;
//! - `input`: a sample message; the `--input` file the command names must hold the same text;
//! - `render` / `check`: one command line, `NAME=VALUE` prefixes allowed, no shell quoting;
//! - `output`: what the command prints. For `render`, a whole request (starting `POST `, where
//!   `X-Timestamp` may be any send time), just the compact body, or a `SKIPPED …` /
//!   `DEAD-LETTER …` line; the exit code must match (0 / 3 / 4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One marked fenced block of a doc.
#[derive(Debug, Clone)]
struct Block {
    id: String,
    kind: String,
    /// The block's lines, each ending with `\n`.
    text: String,
    /// 1-based line of the marker, for messages.
    line: usize,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `<!-- test:ID:KIND -->` block of `doc`, in page order.
fn blocks(doc: &str, name: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let marker = lines[i]
            .trim()
            .strip_prefix("<!-- test:")
            .and_then(|m| m.strip_suffix(" -->"));
        if let Some(marker) = marker {
            let (id, kind) = marker
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}:{}: a marker is <!-- test:ID:KIND -->", i + 1));
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "{name}:{}: the marker must be followed by a ``` fence",
                i + 1
            );
            let mut text = String::new();
            let mut j = i + 2;
            while j < lines.len() && !lines[j].starts_with("```") {
                text.push_str(lines[j]);
                text.push('\n');
                j += 1;
            }
            assert!(j < lines.len(), "{name}:{}: unclosed fence", i + 1);
            out.push(Block {
                id: id.to_string(),
                kind: kind.to_string(),
                text,
                line: i + 1,
            });
            i = j;
        }
        i += 1;
    }
    out
}

fn find<'a>(blocks: &'a [Block], id: &str, kind: &str) -> Option<&'a Block> {
    blocks.iter().find(|b| b.id == id && b.kind == kind)
}

fn of_kind<'a>(blocks: &'a [Block], kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    blocks.iter().filter(move |b| b.kind == kind)
}

/// A command line as the docs write it: `[NAME=VALUE …] orceum-bridge ARGS…`.
fn command(block: &Block) -> (Vec<(String, String)>, Vec<String>) {
    let text = block.text.replace("\\\n", " ");
    assert!(
        !text.contains(['\'', '"', '<', '|']),
        "line {}: keep tested commands free of quotes, pipes and redirections: {text}",
        block.line
    );
    let mut words = text.split_whitespace().peekable();
    let mut env = Vec::new();
    while let Some((k, v)) = words.peek().and_then(|w| w.split_once('=')) {
        env.push((k.to_string(), v.to_string()));
        words.next();
    }
    assert_eq!(
        words.next(),
        Some("orceum-bridge"),
        "line {}: a tested command runs orceum-bridge",
        block.line
    );
    (env, words.map(str::to_string).collect())
}

/// The value following `flag` in `args`.
fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Runs the binary with exactly `env` (nothing inherited: a stray `KAFKA_BROKERS` or secret in
/// the test's own environment must not change what the docs show).
fn bridge(args: &[String], env: &[(String, String)], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run orceum-bridge")
}

struct Cookbook {
    blocks: Vec<Block>,
    env: Vec<(String, String)>,
}

fn cookbook() -> Cookbook {
    let blocks = blocks(
        &read(&repo().join("docs/templates.md")),
        "docs/templates.md",
    );
    let env_block = find(&blocks, "cookbook", "env").expect("docs/templates.md: no cookbook env");
    let env = env_block
        .text
        .split_whitespace()
        .filter(|w| *w != "export")
        .map(|w| {
            let (k, v) = w.split_once('=').expect("export NAME=VALUE …");
            (k.to_string(), v.to_string())
        })
        .collect();
    Cookbook { blocks, env }
}

/// docs/templates/cookbook.yaml as the page defines it: the shared config, then every route.
fn expected_cookbook_config(blocks: &[Block]) -> String {
    let mut text = find(blocks, "cookbook", "config")
        .expect("docs/templates.md: no cookbook config")
        .text
        .clone();
    for route in of_kind(blocks, "route") {
        text.push('\n');
        text.push_str(&route.text);
    }
    text
}

/// app_id → secret, resolved from the cookbook config with the page's environment.
fn app_secrets(cb: &Cookbook) -> BTreeMap<String, String> {
    let text = read(&repo().join("docs/templates/cookbook.yaml"));
    let env = |name: &str| {
        cb.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let bridge = orceum_bridge::build::load_str(&text, "cookbook.yaml", env)
        .unwrap_or_else(|e| panic!("{e}"));
    bridge
        .apps
        .values()
        .map(|a| (a.app_id.clone(), a.secret.with_exposed(str::to_string)))
        .collect()
}

#[test]
fn cookbook_config_file_holds_the_shared_config_and_every_route_of_the_page() {
    let cb = cookbook();
    let expected = expected_cookbook_config(&cb.blocks);
    let actual = read(&repo().join("docs/templates/cookbook.yaml"));
    assert!(
        actual == expected,
        "docs/templates/cookbook.yaml differs from the routes in docs/templates.md; it should be:\n{expected}"
    );
}

#[test]
fn cookbook_config_passes_check() {
    let cb = cookbook();
    let args: Vec<String> = ["check", "-c", "docs/templates/cookbook.yaml"]
        .map(String::from)
        .into();
    let out = bridge(&args, &cb.env, &repo());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = of_kind(&cb.blocks, "route").count();
    assert!(
        stdout.contains(&format!("OK — {routes} route(s)")),
        "{stdout}"
    );
}

/// Compares one `render` run with the output block; `Err` says how they differ.
fn compare_render(
    out: &Output,
    expected: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<(), String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    let want_code = if expected.starts_with("SKIPPED") {
        3
    } else if expected.starts_with("DEAD-LETTER") {
        4
    } else {
        0
    };
    if code != Some(want_code) {
        return Err(format!(
            "exit code {code:?}, the page implies {want_code}; printed:\n{stdout}{stderr}"
        ));
    }
    if want_code != 0 {
        return if stdout == expected {
            Ok(())
        } else {
            Err(format!("printed:\n{stdout}the page shows:\n{expected}"))
        };
    }
    if !stdout.starts_with("POST ") {
        return Err(format!("not a request:\n{stdout}"));
    }
    if expected.starts_with("POST ") {
        let (got, want): (Vec<&str>, Vec<&str>) =
            (stdout.lines().collect(), expected.lines().collect());
        if got.len() != want.len() {
            return Err(format!("printed:\n{stdout}the page shows:\n{expected}"));
        }
        for (g, w) in got.iter().zip(&want) {
            // The send time is the time of the run; only its form is fixed.
            let same = match (
                g.strip_prefix("X-Timestamp: "),
                w.strip_prefix("X-Timestamp: "),
            ) {
                (Some(g), Some(_)) => {
                    g.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(g).is_ok()
                }
                _ => g == w,
            };
            if !same {
                return Err(format!("printed {g:?} where the page shows {w:?}"));
            }
        }
        // The signature on the page must be the real HMAC of the page's body under the app's
        // secret from the page's environment, not merely what the binary printed once.
        let app_id = want[0]
            .split("/apps/")
            .nth(1)
            .and_then(|p| p.split('/').next());
        let secret = app_id.and_then(|id| secrets.get(id));
        let (Some(secret), Some(body)) = (secret, want.last()) else {
            return Err(format!("no app for {:?} in the cookbook config", want[0]));
        };
        let sig = orceum_bridge::orceum::sign::signature_header(secret.as_bytes(), body.as_bytes());
        if !want.contains(&format!("X-Hub-Signature-256: {sig}").as_str()) {
            return Err(format!("the page's signature should be {sig}"));
        }
        return Ok(());
    }
    match stdout.lines().last() {
        Some(body) if body == expected.trim_end() => Ok(()),
        _ => Err(format!(
            "printed:\n{stdout}the page shows the body:\n{expected}"
        )),
    }
}

#[test]
fn every_cookbook_recipe_renders_exactly_the_output_the_page_shows() {
    let cb = cookbook();
    let mut failures = Vec::new();
    let mut routes_used = std::collections::BTreeSet::new();
    let mut ran = 0;
    let secrets = app_secrets(&cb);
    for cmd in of_kind(&cb.blocks, "render") {
        let id = &cmd.id;
        let (mut env, args) = command(cmd);
        env.extend(cb.env.iter().cloned());
        assert_eq!(
            args.first().map(String::as_str),
            Some("render"),
            "line {}",
            cmd.line
        );
        if let Some(route) = arg(&args, "--route") {
            routes_used.insert(route.to_string());
        }
        let (Some(input), Some(output)) = (
            find(&cb.blocks, id, "input"),
            find(&cb.blocks, id, "output"),
        ) else {
            failures.push(format!(
                "{id} (line {}): needs an input and an output block",
                cmd.line
            ));
            continue;
        };
        match arg(&args, "--input") {
            Some(file) => {
                let on_disk = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
                if on_disk != input.text {
                    failures.push(format!("{id}: {file} is not the message the page shows (line {}); it should be:\n{}", input.line, input.text));
                    continue;
                }
            }
            None => {
                failures.push(format!("{id}: the command has no --input FILE"));
                continue;
            }
        }
        ran += 1;
        let out = bridge(&args, &env, &repo());
        if let Err(e) = compare_render(&out, &output.text, &secrets) {
            failures.push(format!(
                "{id} (docs/templates.md line {}): {e}",
                output.line
            ));
        }
    }
    for route in of_kind(&cb.blocks, "route") {
        let name = route
            .text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("- name: "));
        match name {
            Some(n) if routes_used.contains(n) => {}
            _ => failures.push(format!(
                "route at line {} is not rendered by any recipe",
                route.line
            )),
        }
    }
    assert!(ran >= 6, "only {ran} recipes ran");
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn the_cookbook_keeps_the_recipes_users_look_for() {
    let cb = cookbook();
    let routes: BTreeMap<String, &Block> = of_kind(&cb.blocks, "route")
        .map(|b| {
            (
                b.text.lines().next().unwrap_or("").replace("- name: ", ""),
                b,
            )
        })
        .collect();
    assert!(routes.len() >= 6, "{:?}", routes.keys());
    for name in ["task-completed", "payment-failed", "export-ready"] {
        assert!(routes.contains_key(name), "no {name} recipe");
    }
    let all_routes: String = routes.values().map(|b| b.text.as_str()).collect();
    for needle in [
        "filter:",
        "priority:",
        "$meta.key",
        "$meta.headers",
        "//",
        "source_metadata: false",
    ] {
        assert!(all_routes.contains(needle), "no recipe uses {needle}");
    }
    let outputs: String = of_kind(&cb.blocks, "output")
        .map(|b| b.text.as_str())
        .collect();
    for needle in ["SKIPPED", "DEAD-LETTER", "X-Hub-Signature-256"] {
        assert!(outputs.contains(needle), "no recipe shows {needle}");
    }
}

#[test]
fn every_check_in_the_configuration_reference_prints_what_the_page_shows() {
    let doc = blocks(
        &read(&repo().join("docs/configuration.md")),
        "docs/configuration.md",
    );
    let mut ran = 0;
    let mut failures = Vec::new();
    for cmd in of_kind(&doc, "check") {
        let id = &cmd.id;
        let (env, args) = command(cmd);
        let (Some(config), Some(output), Some(file)) = (
            find(&doc, id, "config"),
            find(&doc, id, "output"),
            arg(&args, "-c"),
        ) else {
            failures.push(format!(
                "{id} (line {}): needs a config block, an output block and -c FILE",
                cmd.line
            ));
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), &config.text).unwrap();
        let out = bridge(&args, &env, dir.path());
        ran += 1;
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let want_code = if output.text.contains(": OK — ") {
            0
        } else {
            1
        };
        if out.status.code() != Some(want_code) || printed != output.text {
            failures.push(format!(
                "{id} (docs/configuration.md line {}): exit {:?} (want {want_code}), printed:\n{printed}the page shows:\n{}",
                output.line,
                out.status.code(),
                output.text
            ));
        }
    }
    assert!(ran >= 2, "only {ran} check examples ran");
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
