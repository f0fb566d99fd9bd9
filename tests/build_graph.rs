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

/// The panic strategy each binary ships with (ARCHITECTURE invariant 27): the Lambda
/// functions abort (release), the Azure handler unwinds (its own profile, which every build of
/// it uses), and a plain `cargo build --release` does not try to build the handler.
#[test]
fn lambdas_abort_on_panic_and_the_handler_unwinds() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap()).unwrap();
    let profile = &manifest["profile"];
    assert_eq!(profile["release"]["panic"].as_str(), Some("abort"));
    assert_eq!(profile["handler"]["inherits"].as_str(), Some("release"));
    assert_eq!(profile["handler"]["panic"].as_str(), Some("unwind"));
    let default_members: Vec<&str> = manifest["workspace"]["default-members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(!default_members.contains(&"functions/azure-handler"));
    for m in manifest["workspace"]["members"].as_array().unwrap() {
        let m = m.as_str().unwrap();
        assert!(
            m == "functions/azure-handler" || default_members.contains(&m),
            "{m} is left out of `cargo build --release`"
        );
    }
    let package =
        std::fs::read_to_string(format!("{root}/functions/azure-handler/package.sh")).unwrap();
    assert!(package.contains("cargo build --profile handler -p azure-handler"));
    assert!(package.contains("bin_dir=target/handler"));
    let handler =
        std::fs::read_to_string(format!("{root}/functions/azure-handler/src/lib.rs")).unwrap();
    assert!(handler.contains("#[cfg(panic = \"abort\")]\ncompile_error!("));
}
