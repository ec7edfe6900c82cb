//! Build script: the git revision for `--version` and `orceum_bridge_build_info{revision}`.
//!
//! `ORCEUM_BRIDGE_REVISION` wins (the container build passes its `REVISION` argument in, where
//! no `.git` is copied); else `git rev-parse HEAD` when built from a checkout; else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ORCEUM_BRIDGE_REVISION");
    let from_env = std::env::var("ORCEUM_BRIDGE_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty() && r != "unknown");
    let revision = from_env
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ORCEUM_BRIDGE_REVISION={revision}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "HEAD"])?;
    // Built again when the checkout moves to another commit.
    for file in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(revision)
}
