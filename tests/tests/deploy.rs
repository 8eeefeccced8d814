//! The SpinKube deployment in `deploy/spinkube/`, checked as far as a machine without a
//! cluster allows: the runtime config parses as Spin reads it, every variable the
//! `SpinApp` sets is one `spin.toml` declares, every secret it reads is in the Secret, and
//! the CronJob calls the tick as the route table admits it.

use pipetrail_testhost::harness::workspace_root;

fn read(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("deploy/spinkube").join(name)).unwrap()
}

/// `key: value` lines' values for `key`, in order (the manifests are flat YAML).
fn values<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    yaml.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"'))
        .collect()
}

#[test]
fn the_runtime_config_gives_the_default_database_a_file() {
    let rc: toml::Table = toml::from_str(&read("runtime-config.toml")).unwrap();
    let db = &rc["sqlite_database"]["default"];
    assert_eq!(db["type"].as_str(), Some("spin"));
    let path = db["path"].as_str().unwrap();
    assert!(path.starts_with('/') && path.ends_with(".db"), "{path}");
}

#[test]
fn the_spinapp_sets_only_declared_variables_from_its_secret() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap()).unwrap();
    let declared = manifest["variables"].as_table().unwrap();
    let app = read("spinapp.yaml");
    let names = values(&app, "name");
    // metadata names (the Secret, the SpinApp) and the variables.
    let variables: Vec<&str> = names.iter().copied().filter(|n| *n != "pipetrail").collect();
    assert!(
        variables.contains(&"database_url") && variables.contains(&"signing_key"),
        "{variables:?}"
    );
    for v in &variables {
        assert!(
            declared.contains_key(*v),
            "the SpinApp sets {v}, which spin.toml does not declare"
        );
    }
    // Each secretKeyRef's key is a key of the Secret's stringData.
    let secret = app.split("---").next().unwrap();
    for line in app.lines().filter(|l| l.contains("secretKeyRef")) {
        let key = line.split("key:").nth(1).unwrap().trim().trim_end_matches('}').trim();
        assert!(
            secret.lines().any(|l| l.trim().starts_with(&format!("{key}:"))),
            "{key} is read from the Secret but not in it"
        );
    }
    assert_eq!(values(&app, "loadFromSecret"), ["pipetrail-runtime-config"]);
    assert!(read("runtime-config.toml").contains("kubectl create secret generic pipetrail-runtime-config"));
}

#[test]
fn the_cronjob_posts_the_tick_with_the_admin_token() {
    let job = read("tick-cronjob.yaml");
    assert!(job.contains("\"POST\""));
    assert!(job.contains("Authorization: Bearer $(ADMIN_TOKEN)"));
    let url = job
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("- \"http") && l.contains("/admin/"))
        .unwrap();
    let path = url.trim_start_matches("- ").trim_matches('"');
    let path = &path[path.find("/admin/").unwrap()..];
    match pipetrail_core::routes::find("POST", path, pipetrail_core::routes::Handler::retention) {
        pipetrail_core::routes::Found::Route(m) => {
            assert_eq!(m.route.auth, pipetrail_core::routes::Auth::Admin)
        }
        _ => panic!("{path} is not a retention route"),
    }
}
