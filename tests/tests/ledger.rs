//! The ledger over HTTP: checkpoint, key and proofs from the real query component, checked
//! by core's verifier, by the independent Python verifier, and by `pipetrail verify`.

mod support;

use std::process::Command;

use pipetrail_core::encoding::base64_decode;
use pipetrail_core::merkle::{self, Hash};
use pipetrail_core::note::{Checkpoint, NoteVerifier};
use support::*;

fn h(v: &serde_json::Value) -> Hash {
    base64_decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn fill(app: &App) {
    for (i, (name, event)) in [
        ("pipeline_hook_go-gitlab.json", "Pipeline Hook"),
        ("job_hook_go-gitlab.json", "Job Hook"),
        ("build_hook_go-gitlab.json", "Job Hook"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            app.hook(event, Some(&format!("l{i}")), &fixture_bytes(name)).status,
            200
        );
    }
}

#[test]
fn checkpoint_key_and_proofs() {
    let app = App::start("ledger-http", &[]);
    assert_eq!(
        app.get("/api/v1/checkpoint", Some(ADMIN)).status,
        404,
        "no checkpoint before the first event"
    );
    fill(&app);
    let key = app.get("/api/v1/key", Some(ADMIN));
    assert_eq!(key.header("content-type"), Some("text/plain; charset=utf-8"));
    let key = NoteVerifier::parse(&key.text).unwrap();
    let note = app.get("/api/v1/checkpoint", Some(ADMIN)).text;
    let cp = Checkpoint::parse(key.open(&note).unwrap()).unwrap();
    assert_eq!((cp.origin.as_str(), cp.size), ("pipetrail.local/log", 19));

    let events = app.events("", ADMIN);
    let leaves: Vec<Hash> = events.iter().map(|e| h(&e["leaf_hash"])).collect();
    assert_eq!(merkle::root_from_leaves(&leaves), cp.root);
    for (seq, e) in events.iter().enumerate() {
        let p = app
            .get(&format!("/api/v1/proof/inclusion?seq={seq}"), Some(ADMIN))
            .json();
        assert_eq!((p["tree_size"].as_u64(), h(&p["root"])), (Some(19), cp.root));
        let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(h).collect();
        merkle::verify_inclusion(seq as u64, 19, &leaves[seq], &proof, &cp.root).unwrap();
        // By event id, at an older size.
        let id = e["id"].as_str().unwrap();
        let size = (seq as u64 + 1).max(15);
        let p = app
            .get(&format!("/api/v1/proof/inclusion?id={id}&size={size}"), Some(ADMIN))
            .json();
        let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(h).collect();
        merkle::verify_inclusion(
            seq as u64,
            size,
            &leaves[seq],
            &proof,
            &merkle::root_from_leaves(&leaves[..size as usize]),
        )
        .unwrap();
    }
    for from in [0u64, 1, 15, 18, 19] {
        let c = app
            .get(&format!("/api/v1/proof/consistency?from={from}&to=19"), Some(ADMIN))
            .json();
        let r1 = merkle::root_from_leaves(&leaves[..from as usize]);
        assert_eq!(h(&c["from_root"]), r1);
        let proof: Vec<Hash> = c["proof"].as_array().unwrap().iter().map(h).collect();
        merkle::verify_consistency(from, 19, &r1, &cp.root, &proof).unwrap();
    }
    for (q, param) in [
        ("inclusion?seq=19", "seq"),
        ("inclusion?seq=1&size=20", "size"),
        ("inclusion?seq=x", "seq"),
        ("inclusion?seq=1&id=ev_x", "seq"),
        ("inclusion?seq=1&sz=3", "sz"),
        ("consistency?from=5&to=4", "from"),
        ("consistency?from=5&to=25", "to"),
        ("consistency?to=5", "from"),
    ] {
        let r = app.get(&format!("/api/v1/proof/{q}"), Some(ADMIN));
        assert_eq!(
            (r.status, r.json()["parameter"].as_str()),
            (400, Some(param)),
            "{q}: {}",
            r.text
        );
    }
    assert_eq!(app.get("/api/v1/proof/inclusion?id=ev_nope", Some(ADMIN)).status, 404);
    assert_eq!(app.get("/api/v1/checkpoint", None).status, 401);
}

#[test]
fn independent_python_verifier_agrees() {
    let app = App::start("ledger-python", &[]);
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("p0"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );
    let dir = temp_dir("python-previous");
    let previous = dir.join("checkpoint-15.txt");
    std::fs::write(&previous, app.get("/api/v1/checkpoint", Some(ADMIN)).text).unwrap();
    fill(&app);
    let token = app.token("auditor", &[]);
    let run = |extra: &[&str]| {
        let out = Command::new("python3")
            .arg(root().join("tools/verify_proof.py"))
            .args(["--url", &app.base, "--token", &token])
            .args(extra)
            .output()
            .expect("python3 runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = run(&["--previous", previous.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK: checkpoint pipetrail.local/log size 19"), "{out}");
    assert!(out.contains("19 event(s)"), "{out}");
    // A previous checkpoint signed by another key is refused.
    let forged = dir.join("forged.txt");
    std::fs::write(
        &forged,
        std::fs::read_to_string(&previous).unwrap().replace("\n15\n", "\n16\n"),
    )
    .unwrap();
    let (code, out) = run(&["--previous", forged.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.trim(), "FAIL: checkpoint signature does not verify");
}

#[test]
fn pipetrail_verify_on_a_copy_clean_tampered_unreadable() {
    let app = App::start("ledger-cli", &[]);
    fill(&app);
    let key = app.get("/api/v1/key", Some(ADMIN)).text.trim().to_string();
    let dir = temp_dir("cli-copy");
    let copy = dir.join("copy.db");
    app.copy_db(&copy);
    let verify = |db: &std::path::Path, key: &str| {
        let out = Command::new(cli())
            .args(["verify", "--db", db.to_str().unwrap(), "--key", key])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = verify(&copy, &key);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("OK: 19 entries (0 pruned, 0 compacted), root ")
            && out.ends_with("at size 19, 3 checkpoint(s) verified"),
        "{out}"
    );

    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute(
        "UPDATE event_bodies SET body = replace(body, 'user1', 'mallory') WHERE seq = 0",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, out, _) = verify(&copy, &key);
    assert_eq!(
        (code, out.as_str()),
        (
            Some(1),
            "TAMPERED: first bad seq 0: edited: the body does not hash to its leaf"
        )
    );

    let (code, _, err) = verify(&dir.join("missing.db"), &key);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = verify(&copy, "not-a-key");
    assert_eq!(code, Some(2), "{err}");
    std::fs::write(dir.join("garbage.db"), b"this is not a database").unwrap();
    let (code, _, err) = verify(&dir.join("garbage.db"), &key);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn retention_tick_signs_when_the_interval_held_it_back() {
    let app = App::start("tick", &[("checkpoint_interval_seconds", "3600")]);
    fill(&app);
    let cp = |app: &App| {
        Checkpoint::parse(&app.get("/api/v1/checkpoint", Some(ADMIN)).text)
            .unwrap()
            .size
    };
    // Only the first delivery signed: the interval holds the others back.
    assert_eq!(cp(&app), 15);
    assert_eq!(app.post("/admin/tick", &[], b"").status, 401);
    let reader = app.token("r", &[]);
    assert_eq!(
        app.post("/admin/tick", &[("Authorization", &format!("Bearer {reader}"))], b"")
            .status,
        403
    );
    let r = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["checkpoint"]["size"], 19);
    assert_eq!(cp(&app), 19);
    let again = app
        .post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"")
        .json();
    assert_eq!(again["checkpoint"], serde_json::Value::Null);
}

#[test]
fn export_bundle_verifies_without_the_database() {
    let app = App::start("bundle", &[]);
    fill(&app);
    let key = app.get("/api/v1/key", Some(ADMIN)).text.trim().to_string();
    let dir = temp_dir("bundle");
    let token_file = dir.join("reader.txt");
    std::fs::write(&token_file, app.token("auditor", &["gitlab-org/gitlab-test"])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dir.join("pipeline-31.json");
    let export = Command::new(cli())
        .args([
            "export",
            "--url",
            &app.base,
            "--token-file",
            token_file.to_str().unwrap(),
            "--filter",
            "pipeline=31",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let bundle: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(bundle["events"].as_array().unwrap().len(), 15);
    assert!(
        bundle["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"]["pipeline"]["id"] == 31)
    );

    let verify = |path: &std::path::Path| {
        let o = Command::new(cli())
            .args(["verify", "--bundle", path.to_str().unwrap(), "--key", &key])
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    assert_eq!(
        verify(&out),
        (
            Some(0),
            "OK: 15 event(s) proven included in pipetrail.local/log at size 19".to_string()
        )
    );

    // An auditor's copy edited after export: named, exit 1.
    let edited = dir.join("edited.json");
    let mut b = bundle.clone();
    b["events"][4]["event"]["actor"]["username"] = serde_json::json!("mallory");
    std::fs::write(&edited, b.to_string()).unwrap();
    let (code, line) = verify(&edited);
    assert_eq!(
        (code, line.as_str()),
        (
            Some(1),
            "TAMPERED: first bad seq 4: edited: the event does not hash to its leaf"
        )
    );
    // A consistent edit (event and leaf) no longer reaches the signed root.
    let mut b = bundle.clone();
    b["events"][4]["event"]["actor"]["username"] = serde_json::json!("mallory");
    let leaf = merkle::leaf_hash(&pipetrail_core::canonical::to_vec(&b["events"][4]["event"]));
    b["events"][4]["leaf_hash"] = serde_json::json!(pipetrail_core::encoding::base64_encode(&leaf));
    std::fs::write(&edited, b.to_string()).unwrap();
    let (code, line) = verify(&edited);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("TAMPERED: first bad seq 4: not in the signed tree"),
        "{line}"
    );
    std::fs::write(&edited, "{}").unwrap();
    assert_eq!(verify(&edited).0, Some(2));

    // The scoped token cannot export the other project's events.
    let r = app.get(
        "/api/v1/export?format=bundle&project=jsmithy2/release-tools-fake",
        Some(&std::fs::read_to_string(&token_file).unwrap()),
    );
    assert_eq!(r.json()["events"], serde_json::json!([]));
    assert_eq!(
        app.get("/api/v1/export?format=pdf", Some(ADMIN)).json()["parameter"],
        "format"
    );
}

#[test]
fn checkpoints_are_published_to_witnesses_the_manifest_allows() {
    let (witness, received) = receiver(200);
    let (other, other_received) = receiver(200);
    let urls = format!("{witness}/checkpoints, {other}/checkpoints");
    // Only the first witness is in allowed_outbound_hosts.
    let app = App::start_allowing("witness", &[("witness_urls", &urls)], &[&witness]);
    fill(&app);
    let r = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["witnesses"][0]["ok"], true, "{v}");
    assert_eq!(v["witnesses"][0]["status"], 200);
    assert_eq!(v["witnesses"][1]["ok"], false, "{v}");
    let note = received.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(note, app.get("/api/v1/checkpoint", Some(ADMIN)).text);
    let key = NoteVerifier::parse(&app.get("/api/v1/key", Some(ADMIN)).text).unwrap();
    assert_eq!(Checkpoint::parse(key.open(&note).unwrap()).unwrap().size, 19);
    assert!(
        other_received
            .recv_timeout(std::time::Duration::from_millis(500))
            .is_err(),
        "a host not allowed was reached"
    );
}

/// The built `pipetrail verify` on a ledger the previous release wrote
/// (`tests/fixtures/ledger/`): it verifies, read-only, and leaves the file as it was.
#[test]
fn pipetrail_verify_accepts_the_previous_release_ledger() {
    let copy = temp_dir("cli-previous").join("previous-release.db");
    std::fs::copy(root().join("tests/fixtures/ledger/previous-release.db"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let key = pipetrail_core::note::NoteSigner::from_seed("test.example/log", [42u8; 32])
        .unwrap()
        .verifier()
        .text();
    let out = Command::new(cli())
        .args(["verify", "--db", copy.to_str().unwrap(), "--key", &key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("OK: 363 entries (0 pruned, 0 compacted), root "),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), before, "verify opens the copy read-only");
}
