//! The component dependency rule (ARCHITECTURE.md, "Component dependencies"): what the
//! `.wasm` components are built from is the design card's crates, RustCrypto primitives and
//! a short named list. A new dependency fails here until it is named there, with its reason.

use std::process::Command;

const COMPONENT_CRATES: &[&str] = &[
    "pipetrail-core",
    "pipetrail-platform",
    "pipetrail-ingest",
    "pipetrail-query",
    "pipetrail-retention",
];

const ALLOWED: &[&str] = &[
    // The design card's crates.
    "spin-sdk",
    "serde",
    "serde_json",
    "anyhow",
    "http",
    "chrono",
    // RustCrypto primitives.
    "sha2",
    "ed25519-dalek",
    "hmac",
    "subtle",
    "base64ct",
    // The short named list.
    "percent-encoding",
    "http-body-util",
    "http-body",
    "bytes",
    // The workspace's own crates.
    "pipetrail-core",
    "pipetrail-platform",
];

#[test]
fn components_depend_only_on_the_named_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut checked = 0;
    let mut unnamed = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !COMPONENT_CRATES.contains(&name) {
            continue;
        }
        checked += 1;
        for dep in package["dependencies"].as_array().unwrap() {
            // Dev-dependencies and native-only optional ones (rusqlite, postgres) are not
            // compiled into a component.
            let normal = dep["kind"].is_null();
            let optional = dep["optional"].as_bool().unwrap_or(false);
            let dep_name = dep["name"].as_str().unwrap();
            if normal && !optional && !ALLOWED.contains(&dep_name) {
                unnamed.push(format!("{name} → {dep_name}"));
            }
        }
    }
    assert_eq!(
        checked,
        COMPONENT_CRATES.len(),
        "every component crate is in the workspace"
    );
    assert!(unnamed.is_empty(), "not named in ARCHITECTURE.md: {unnamed:?}");
}
