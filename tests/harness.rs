//! Shared helpers for quell's integration tests.

use std::path::PathBuf;

use serde_json::Value;

/// The workspace root (tests run with the crate directory `tests/` as cwd).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Reads a file under `events/`.
pub fn event(rel: &str) -> Vec<u8> {
    let path = root().join("events").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A compact label of a subject or target in the plan JSON: `kind:who`.
pub fn label(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("?");
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let who = match kind {
        "access_key" => s("access_key_id"),
        "role_session" => Some(format!(
            "{}/{}",
            s("name").unwrap_or_default(),
            s("session").unwrap_or_default()
        )),
        "securityhub_finding" | "defender_alert" | "finding" => {
            s("id").map(|id| id.rsplit('/').next().unwrap_or_default().to_string())
        }
        _ => s("name").or_else(|| s("id")).or_else(|| s("sid")),
    };
    format!("{kind}:{}", who.unwrap_or_default())
}

/// Every `.json` file under `dir`, relative to it, sorted.
pub fn json_files(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.extension().is_some_and(|x| x == "json")
                && let Ok(rel) = p.strip_prefix(base)
            {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
