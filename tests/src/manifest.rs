//! The parts of `spin.toml` (manifest version 2) the test host honours: HTTP routes,
//! component sources, `sqlite_databases`, `allowed_outbound_hosts` and variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::allowed_hosts::AllowedHosts;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    spin_manifest_version: u32,
    #[allow(dead_code)]
    application: toml::Value,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    trigger: Triggers,
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableDecl {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    #[allow(dead_code)]
    secret: bool,
}

#[derive(Deserialize)]
struct Triggers {
    http: Vec<HttpTrigger>,
}

#[derive(Deserialize)]
struct HttpTrigger {
    route: String,
    component: String,
}

#[derive(Deserialize)]
struct ComponentDecl {
    source: String,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// A component as the host runs it: variables already resolved.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    pub id: String,
    pub source: PathBuf,
    pub sqlite_databases: Vec<String>,
    pub allowed_outbound_hosts: AllowedHosts,
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Exact(String),
    /// `/prefix/...`; the prefix has no trailing slash ("" for `/...`).
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub struct App {
    pub routes: Vec<(Route, String)>,
    pub components: BTreeMap<String, ComponentConfig>,
}

impl App {
    /// Loads a manifest. `provider` answers application variables the way Spin's
    /// environment provider does (`SPIN_VARIABLE_<NAME>`); a required variable with no
    /// value is an error at start, as in Spin.
    pub fn load(path: &Path, provider: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<App> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let m: Manifest = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if m.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut values = BTreeMap::new();
        for (name, decl) in &m.variables {
            let value = match (provider(name), &decl.default) {
                (Some(v), _) => v,
                (None, Some(d)) if !decl.required => d.clone(),
                _ => bail!(
                    "variable {name} is required; set SPIN_VARIABLE_{}",
                    name.to_ascii_uppercase()
                ),
            };
            values.insert(name.clone(), value);
        }
        let mut components = BTreeMap::new();
        for (id, c) in m.component {
            let id_for_errors = id.clone();
            let variables = c
                .variables
                .iter()
                .map(|(k, template)| {
                    Ok((
                        k.clone(),
                        render(template, &values).with_context(|| format!("component {id} variable {k}"))?,
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            components.insert(
                id.clone(),
                ComponentConfig {
                    id,
                    source: base.join(c.source),
                    sqlite_databases: c.sqlite_databases,
                    allowed_outbound_hosts: AllowedHosts::load(&c.allowed_outbound_hosts, &values)
                        .with_context(|| format!("component {}: allowed_outbound_hosts", &id_for_errors))?,
                    variables,
                },
            );
        }
        let mut routes = Vec::new();
        for t in m.trigger.http {
            if !components.contains_key(&t.component) {
                bail!("route {} names unknown component {}", t.route, t.component);
            }
            let route = match t.route.strip_suffix("/...") {
                Some(prefix) => Route::Wildcard(prefix.to_string()),
                None => Route::Exact(t.route.clone()),
            };
            routes.push((route, t.component));
        }
        Ok(App { routes, components })
    }

    /// Spin's rule: an exact route beats any wildcard; among wildcards the longest prefix wins.
    /// Returns the component and the matched route's text.
    pub fn route(&self, path: &str) -> Option<(&ComponentConfig, String)> {
        if let Some((r, c)) = self
            .routes
            .iter()
            .find(|(r, _)| matches!(r, Route::Exact(e) if e == path))
        {
            let Route::Exact(e) = r else { unreachable!() };
            return Some((&self.components[c], e.clone()));
        }
        self.routes
            .iter()
            .filter_map(|(r, c)| match r {
                Route::Wildcard(p) if path == p || path.starts_with(&format!("{p}/")) => Some((p, c)),
                _ => None,
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(p, c)| (&self.components[c], format!("{p}/...")))
    }
}

/// Spin's environment provider (`crates/variables-env`): `SPIN_VARIABLE_<NAME>` from the
/// environment, else from the `dotenv` file (Spin reads `.env` in the working directory);
/// a file that does not parse is an error, as in Spin.
pub fn env_provider(dotenv: &Path) -> anyhow::Result<impl Fn(&str) -> Option<String> + use<>> {
    let file: BTreeMap<String, String> = match dotenvy::from_path_iter(dotenv) {
        Ok(iter) => iter
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", dotenv.display()))?,
        Err(_) => BTreeMap::new(),
    };
    Ok(move |name: &str| {
        let key = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        match std::env::var(&key) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) => file.get(&key).cloned(),
            Err(_) => None,
        }
    })
}

/// Renders `{{ name }}` references to application variables.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").context("unclosed {{")? + start;
        let name = rest[start + 2..end].trim();
        out.push_str(
            values
                .get(name)
                .with_context(|| format!("no application variable {name}"))?,
        );
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_precedence_and_templates() {
        let dir = std::env::temp_dir().join(format!("pt-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spin.toml");
        std::fs::write(
            &path,
            r#"spin_manifest_version = 2
[application]
name = "x"
[variables]
secret = { required = true }
opt = { default = "d" }
[[trigger.http]]
route = "/..."
component = "a"
[[trigger.http]]
route = "/hooks/..."
component = "b"
[[trigger.http]]
route = "/exact"
component = "b"
[component.a]
source = "a.wasm"
[component.a.variables]
s = "pre-{{ secret }}-{{opt}}"
[component.b]
source = "b.wasm"
"#,
        )
        .unwrap();
        let app = App::load(&path, &|n| (n == "secret").then(|| "S".to_string())).unwrap();
        assert_eq!(app.route("/hooks/gitlab").unwrap().0.id, "b");
        assert_eq!(app.route("/hooksx").unwrap().0.id, "a");
        assert_eq!(app.route("/exact").unwrap().0.id, "b");
        assert_eq!(app.route("/").unwrap().0.id, "a");
        assert_eq!(app.components["a"].variables["s"], "pre-S-d");
        let err = App::load(&path, &|_| None).unwrap_err().to_string();
        assert!(err.contains("SPIN_VARIABLE_SECRET"), "{err}");
    }
}
