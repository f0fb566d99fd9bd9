//! What the shipped binaries may link (`quell_aws::http`, docs/performance.md): one HTTP
//! stack (reqwest, HTTP/1.1) and one TLS provider (rustls with ring). The AWS SDK's own
//! client (`default-https-client`) would bring a second hyper client, `h2` and aws-lc-rs back,
//! and a careless feature on any workspace crate turns it on for every binary.

use std::collections::BTreeSet;

/// The packages in the normal (non-dev) dependency graph of every workspace member.
fn shipped_packages() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "tree",
            "--workspace",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_binaries_link_one_http_stack_and_one_tls_provider() {
    let shipped = shipped_packages();
    assert!(
        shipped.contains("reqwest") && shipped.contains("ring"),
        "{shipped:?}"
    );
    for banned in [
        "aws-lc-rs",
        "aws-lc-sys",
        "h2",
        "openssl",
        "native-tls",
        "hyper-tls",
    ] {
        assert!(
            !shipped.contains(banned),
            "{banned} is in the shipped dependency graph: a crate turned on the SDK's \
             default-https-client or rustls's aws_lc_rs; see quell_aws::http"
        );
    }
}
