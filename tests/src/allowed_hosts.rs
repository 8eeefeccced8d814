//! `allowed_outbound_hosts` by Spin 4.0's rules (`crates/outbound-networking-config` at
//! v4.0.2), so an entry real Spin refuses is refused here too:
//! - an entry is `scheme://host[:port]`, each part may be `*`; no path; a port may be a
//!   range `a..b` (end excluded); the host may be `*.domain`, a literal, or a CIDR;
//! - an entry without a port takes its scheme's well-known port, and only `postgres`,
//!   `mysql`, `redis`, `mqtt`, `http` and `https` have one (`rediss://h` is an error);
//! - `{{ variable }}` templates are resolved with the application's variables; on 4.0.2 an
//!   entry that resolves to nothing usable is an error that denies every outbound request of
//!   the component (4.1 skips an empty one), so pipetrail's templates default to a host that
//!   never resolves (`*://unset.invalid:*`);
//! - a URL being checked is parsed with the `url` crate; one that does not parse as
//!   `scheme://…` is retried as `{scheme}://{url}`.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::{Context, bail};

#[derive(Debug, Clone, PartialEq)]
enum Scheme {
    Any,
    One(String),
}

#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    Any,
    /// `.domain`: any subdomain of it.
    Suffix(String),
    /// `self`: relative requests (service chaining to this app).
    ToSelf,
    Literal(url::Host),
    Cidr(ip_network::IpNetwork),
}

#[derive(Debug, Clone, PartialEq)]
enum Ports {
    Any,
    One(u16),
    Range(Range<u16>),
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: Scheme,
    host: HostRule,
    ports: Ports,
}

/// The ports Spin knows for a scheme without one.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "postgres" => 5432,
        "mysql" => 3306,
        "redis" => 6379,
        "mqtt" => 1883,
        "http" => 80,
        "https" => 443,
        _ => return None,
    })
}

impl AllowedHost {
    pub fn parse(entry: &str) -> anyhow::Result<AllowedHost> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("{entry:?} has no scheme: entries are <scheme>://<host>[:<port>]");
        };
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port.split_once('/') {
            Some((_, path)) if !path.is_empty() => bail!("{entry:?} has a path but is not allowed to"),
            Some((port, _)) => port,
            None => port,
        };
        let ports = match port {
            "" => Ports::One(
                well_known_port(scheme)
                    .with_context(|| format!("{entry:?}: no port, and the scheme {scheme:?} has no well-known port"))?,
            ),
            "*" => Ports::Any,
            p => match p.split_once("..") {
                Some((a, b)) => Ports::Range(
                    a.parse().with_context(|| format!("{entry:?}: port range {p:?}"))?
                        ..b.parse().with_context(|| format!("{entry:?}: port range {p:?}"))?,
                ),
                None => Ports::One(
                    p.parse()
                        .with_context(|| format!("{entry:?}: port {p:?} is not a number"))?,
                ),
            },
        };
        let scheme = match scheme {
            "*" => Scheme::Any,
            s if !s.is_empty() && s.chars().all(char::is_alphabetic) => Scheme::One(s.to_string()),
            s => bail!("{entry:?}: scheme {s:?} may hold only letters"),
        };
        let host = host.trim();
        let host = if host == "*" {
            HostRule::Any
        } else if host == "self" || host == "self.alt" {
            HostRule::ToSelf
        } else if host.starts_with('{') {
            bail!("{entry:?}: host lists are not supported")
        } else if let Ok(net) = ip_network::IpNetwork::from_str_truncate(host) {
            HostRule::Cidr(net)
        } else {
            let host = host.trim_end_matches('/');
            if host.contains('/') {
                bail!("{entry:?} has a path but is not allowed to");
            }
            match host.strip_prefix("*.") {
                Some(d) if d.contains('*') => bail!("{entry:?}: wildcards are allowed only as prefixes"),
                Some(d) => HostRule::Suffix(format!(".{d}")),
                None if host.contains('*') => bail!("{entry:?}: wildcards are allowed only as subdomains"),
                None => HostRule::Literal(url::Host::parse(host).with_context(|| format!("{entry:?}: host"))?),
            }
        };
        Ok(AllowedHost { scheme, host, ports })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = match &self.scheme {
            Scheme::Any => true,
            Scheme::One(s) => s == scheme,
        };
        let Ok(host) = url::Host::parse(host) else {
            return false;
        };
        let host_ok = match (&self.host, &host) {
            (HostRule::Any, _) => true,
            (HostRule::Suffix(s), url::Host::Domain(d)) => d.ends_with(s.as_str()),
            (HostRule::Literal(l), h) => h == l,
            (HostRule::Cidr(c), url::Host::Ipv4(ip)) => c.contains(*ip),
            (HostRule::Cidr(c), url::Host::Ipv6(ip)) => c.contains(*ip),
            _ => false,
        };
        let port_ok = match &self.ports {
            Ports::Any => true,
            Ports::One(p) => port.or_else(|| well_known_port(scheme)) == Some(*p),
            Ports::Range(r) => port.or_else(|| well_known_port(scheme)).is_some_and(|p| r.contains(&p)),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's resolved `allowed_outbound_hosts`, or the error Spin would log for it
/// (then every outbound request of the component is denied, as in Spin).
#[derive(Debug, Clone)]
pub struct AllowedHosts(Result<Vec<AllowedHost>, String>);

impl AllowedHosts {
    /// Parses a component's entries. A literal entry that does not parse fails the load
    /// (Spin refuses to start the app); a template is resolved with `variables` here, and an
    /// unusable result denies the component's outbound requests.
    pub fn load(entries: &[String], variables: &BTreeMap<String, String>) -> anyhow::Result<AllowedHosts> {
        if entries.len() == 1 && entries[0] == "insecure:allow-all" {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead");
        }
        let mut resolved = Vec::new();
        let mut problem = None;
        for e in entries {
            if e.contains("{{") {
                match crate::manifest::render(e, variables).and_then(|r| AllowedHost::parse(&r)) {
                    Ok(h) => resolved.push(h),
                    Err(err) => {
                        eprintln!("testhost: error parsing allowed outbound hosts: {err:#}");
                        problem.get_or_insert(format!("{err:#}"));
                    }
                }
            } else {
                resolved.push(AllowedHost::parse(e)?);
            }
        }
        Ok(AllowedHosts(match problem {
            Some(p) => Err(p),
            None => Ok(resolved),
        }))
    }

    /// Whether `url` may be reached; `default_scheme` is tried when `url` has none
    /// (PostgreSQL hosts are checked as `host:port` with `postgres`).
    pub fn check(&self, url: &str, default_scheme: &str) -> bool {
        let Ok(hosts) = &self.0 else {
            return false;
        };
        let parsed = match url::Url::parse(url) {
            Ok(u) if u.has_host() => Ok(u),
            _ => url::Url::parse(&format!("{default_scheme}://{url}")),
        };
        let Ok(u) = parsed else {
            eprintln!("testhost: outbound address {url:?} does not parse");
            return false;
        };
        let (Some(host), scheme) = (u.host_str(), u.scheme()) else {
            return false;
        };
        let allowed = hosts.iter().any(|h| h.allows(scheme, host, u.port()));
        if !allowed {
            eprintln!("testhost: outbound {scheme}://{host} denied: not in allowed_outbound_hosts");
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowedHosts::load(&entries, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn spin_refuses_what_spin_refuses() {
        for bad in [
            "rediss://cache.example.com", // no well-known port for rediss
            "mqtts://broker.example.com",
            "https://example.com/api", // a path
            "example.com",             // no scheme
            "ht1p://example.com",
            "https://a.*.example.com",
            "https://ex*ample.com",
            "https://example.com:eighty",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} must be refused");
        }
        assert!(AllowedHosts::load(&["insecure:allow-all".into()], &BTreeMap::new()).is_err());
    }

    #[test]
    fn schemes_ports_ranges_cidrs_wildcards() {
        let h = hosts(&[
            "http://127.0.0.1:8080",
            "https://*.example.com",
            "redis://10.0.0.0/8:*",
            "mqtt://broker.local",
            "postgres://db:5000..5010",
            "rediss://cache:6380",
        ]);
        assert!(h.check("http://127.0.0.1:8080/x", "http"));
        assert!(!h.check("http://127.0.0.1:8081/x", "http"));
        assert!(h.check("https://a.example.com/", "https"));
        assert!(!h.check("https://example.com/", "https"));
        assert!(!h.check("http://a.example.com/", "http"));
        assert!(h.check("redis://10.9.8.7:1234", "redis"));
        assert!(!h.check("redis://11.0.0.1:6379", "redis"));
        assert!(h.check("mqtt://broker.local?client_id=x", "mqtt"));
        assert!(!h.check("mqtt://broker.local:1884", "mqtt"));
        assert!(h.check("db:5009", "postgres"));
        assert!(!h.check("db:5010", "postgres"));
        assert!(h.check("rediss://cache:6380", "rediss"));
        assert!(!h.check("rediss://cache", "rediss"), "rediss has no default port");
    }

    #[test]
    fn templates_resolve_from_application_variables() {
        let vars = BTreeMap::from([
            ("gitlab".to_string(), "https://gitlab.example.com".to_string()),
            ("unset".to_string(), "*://unset.invalid:*".to_string()),
            ("empty".to_string(), String::new()),
        ]);
        let entries = ["{{ gitlab }}".to_string(), "{{unset}}".to_string()];
        let h = AllowedHosts::load(&entries, &vars).unwrap();
        assert!(h.check("https://gitlab.example.com/api/v4/projects", "https"));
        assert!(!h.check("https://other.example.com/", "https"));
        // Spin 4.0.2: a template that resolves to "" is an error, and then nothing is allowed.
        let entries = ["{{ gitlab }}".to_string(), "{{ empty }}".to_string()];
        let h = AllowedHosts::load(&entries, &vars).unwrap();
        assert!(!h.check("https://gitlab.example.com/", "https"));
    }
}
