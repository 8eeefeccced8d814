//! Streaming destinations. Each sink keeps a cursor over the ledger (the last `seq` it
//! acknowledged) in the database; the scheduled component delivers from it, in order, at
//! least once, a batch at a time, and backs off on errors. Ingest never waits for a sink.
//!
//! Configuration is one JSON array (the `sinks` variable, secret: it holds tokens):
//!
//! ```json
//! [{"name": "siem", "kind": "http", "url": "https://siem.example/hec", "format": "splunk_hec",
//!   "batch": 100, "token_header": "Authorization", "token": "Splunk 123", "hmac_key": "k",
//!   "headers": {"X-Env": "prod"}, "filter": {"actions": ["pipeline.*"], "projects": ["grp/app"]}},
//!  {"name": "redis", "kind": "redis", "address": "redis://127.0.0.1:6379", "mode": "stream"},
//!  {"name": "mqtt", "kind": "mqtt", "address": "mqtt://127.0.0.1:1883"}]
//! ```
//!
//! HTTP formats: `pipetrail` (the event JSON), `gitlab` (GitLab's audit event schema),
//! `splunk_hec` (Splunk's HTTP Event Collector, what most SIEMs accept). Redis: `XADD` to
//! `pipetrail:events:<action>` with the entry id `<seq>-1`, so a redelivery is refused by
//! Redis itself and each event is in the stream once; or `PUBLISH` (`mode: publish`).
//! MQTT: QoS 1 to `pipetrail/events/<action with / for .>`; the address is given to Spin's
//! client (rumqttc) with a `client_id` and 16 MiB packet limits added unless it has its own
//! (`mqtt_connect_address`).

use serde_json::{Value, json};

use crate::encoding::{hex, hmac_sha256};
use crate::model::Event;
use crate::sql::{DbError, Sql, Val, in_writer};
use crate::store::{self, EventFilter, StoredEvent};

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Http {
        url: String,
        format: String,
        token_header: Option<String>,
        token: Option<String>,
        hmac_key: Option<String>,
        headers: Vec<(String, String)>,
    },
    Redis {
        address: String,
        publish: bool,
        prefix: String,
    },
    Mqtt {
        address: String,
        username: String,
        password: String,
        prefix: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    pub name: String,
    pub kind: Kind,
    pub batch: usize,
    pub actions: Vec<String>,
    pub projects: Vec<String>,
    pub forge: Option<String>,
}

pub fn parse(text: &str) -> Result<Vec<Sink>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = v.as_array().ok_or("expected a JSON array of sinks")?;
    let mut out: Vec<Sink> = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let at = |f: &str| format!("[{i}].{f}");
        let str_of = |f: &str| s.get(f).and_then(Value::as_str).map(str::to_string);
        let name = str_of("name")
            .filter(|n| !n.is_empty() && n.len() <= 64)
            .ok_or(format!("{}: required (1-64 characters)", at("name")))?;
        if out.iter().any(|o| o.name == name) {
            return Err(format!("{}: {name:?} is used twice", at("name")));
        }
        let kind = match str_of("kind").as_deref() {
            Some("http") => {
                let url = str_of("url")
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .ok_or(format!("{}: an http(s) URL is required", at("url")))?;
                let format = str_of("format").unwrap_or_else(|| "pipetrail".into());
                if !matches!(format.as_str(), "pipetrail" | "gitlab" | "splunk_hec") {
                    return Err(format!("{}: pipetrail, gitlab or splunk_hec", at("format")));
                }
                let headers = match s.get("headers") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Object(h)) => h
                        .iter()
                        .map(|(k, v)| {
                            v.as_str()
                                .map(|v| (k.clone(), v.to_string()))
                                .ok_or(format!("{}: values must be strings", at("headers")))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(format!("{}: expected an object", at("headers"))),
                };
                Kind::Http {
                    url,
                    format,
                    token_header: str_of("token_header"),
                    token: str_of("token"),
                    hmac_key: str_of("hmac_key"),
                    headers,
                }
            }
            Some("redis") => Kind::Redis {
                address: str_of("address")
                    .filter(|a| a.starts_with("redis://") || a.starts_with("rediss://"))
                    .ok_or(format!("{}: a redis:// address is required", at("address")))?,
                publish: match str_of("mode").as_deref() {
                    None | Some("stream") => false,
                    Some("publish") => true,
                    Some(_) => return Err(format!("{}: stream or publish", at("mode"))),
                },
                prefix: str_of("key_prefix").unwrap_or_else(|| "pipetrail:events:".into()),
            },
            Some("mqtt") => Kind::Mqtt {
                address: str_of("address")
                    .filter(|a| a.starts_with("mqtt://") || a.starts_with("mqtts://"))
                    .ok_or(format!("{}: an mqtt:// address is required", at("address")))?,
                username: str_of("username").unwrap_or_default(),
                password: str_of("password").unwrap_or_default(),
                prefix: str_of("topic_prefix").unwrap_or_else(|| "pipetrail/events/".into()),
            },
            _ => return Err(format!("{}: http, redis or mqtt", at("kind"))),
        };
        let list = |f: &str| -> Vec<String> {
            s.get("filter")
                .and_then(|x| x.get(f))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let batch = s.get("batch").and_then(Value::as_u64).unwrap_or(100).clamp(1, 1000) as usize;
        out.push(Sink {
            name,
            kind,
            batch,
            actions: list("actions"),
            projects: list("projects"),
            forge: s
                .get("filter")
                .and_then(|x| x.get("forge"))
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Ok(out)
}

impl Sink {
    /// Whether an event passes this sink's filter.
    pub fn wants(&self, ev: &Event) -> bool {
        let action_ok = self.actions.is_empty() || self.actions.iter().any(|a| ev.action.matches(a));
        let project_ok = self.projects.is_empty()
            || self
                .projects
                .iter()
                .any(|p| ev.project.path.as_deref() == Some(p.as_str()) || ev.project.id.to_string() == *p);
        let forge_ok = self.forge.as_deref().is_none_or(|f| ev.forge.kind.as_str() == f);
        action_ok && project_ok && forge_ok
    }
}

/// One message for a destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Http {
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A Redis command and its arguments.
    Redis {
        address: String,
        command: String,
        args: Vec<Vec<u8>>,
    },
    Mqtt {
        address: String,
        username: String,
        password: String,
        topic: String,
        payload: Vec<u8>,
    },
}

/// The largest MQTT packet a sink sends and accepts unless its address says otherwise:
/// an event with many jobs or variables passes 10 KiB, rumqttc's default (which Spin uses).
pub const MQTT_MAX_PACKET: usize = 16 * 1024 * 1024;

/// The address Spin's MQTT client (rumqttc's `MqttOptions::parse_url`) is given for an
/// `mqtt://` sink: the operator's address with what rumqttc requires or limits added unless
/// already there: `client_id` (required; unique per connection, since a broker drops the
/// older of two connections with one id, so `nonce` is appended to the sink's name) and
/// both packet-size limits (rumqttc reads them only as a pair; its default is 10 KiB).
pub fn mqtt_connect_address(address: &str, sink_name: &str, nonce: &str) -> String {
    let has = |key: &str| {
        address
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some(key)))
    };
    let mut extra = Vec::new();
    if !has("client_id") {
        let name: String = sink_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        extra.push(format!("client_id=pipetrail-{name}-{nonce}"));
    }
    if !has("max_incoming_packet_size_bytes") && !has("max_outgoing_packet_size_bytes") {
        extra.push(format!("max_incoming_packet_size_bytes={MQTT_MAX_PACKET}"));
        extra.push(format!("max_outgoing_packet_size_bytes={MQTT_MAX_PACKET}"));
    }
    if extra.is_empty() {
        return address.to_string();
    }
    let joiner = match address.split_once('?') {
        Some((_, "")) => "",
        Some(_) => "&",
        None => "?",
    };
    format!("{address}{joiner}{}", extra.join("&"))
}

/// What a batch of events (in seq order, already filtered) becomes for a sink.
pub fn messages(sink: &Sink, events: &[StoredEvent]) -> Vec<Message> {
    match &sink.kind {
        Kind::Http {
            url,
            format,
            token_header,
            token,
            hmac_key,
            headers,
        } => {
            let render = |stored: &StoredEvent| match (format.as_str(), &stored.event) {
                ("gitlab", _) => crate::gitlab_compat::audit_event(stored),
                ("splunk_hec", Some(ev)) => json!({
                    "time": crate::time::parse(&ev.occurred_at).map(|t| t.timestamp_millis() as f64 / 1000.0),
                    "host": ev.forge.instance,
                    "source": "pipetrail",
                    "sourcetype": "pipetrail:event",
                    "event": ev.to_json(),
                }),
                (_, Some(ev)) => ev.to_json(),
                (_, None) => stored.to_api_json(),
            };
            let body = if format == "splunk_hec" {
                // HEC's batch format: event objects one after another.
                events
                    .iter()
                    .map(|e| render(e).to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if sink.batch == 1 {
                events.first().map(render).unwrap_or(Value::Null).to_string()
            } else {
                Value::Array(events.iter().map(render).collect()).to_string()
            }
            .into_bytes();
            let mut h = vec![("content-type".to_string(), "application/json".to_string())];
            if let (Some(name), Some(value)) = (token_header, token) {
                h.push((name.clone(), value.clone()));
            }
            if let Some(key) = hmac_key {
                h.push((
                    "x-pipetrail-signature".into(),
                    format!("sha256={}", hex(&hmac_sha256(key.as_bytes(), &body))),
                ));
            }
            h.extend(headers.iter().cloned());
            vec![Message::Http {
                url: url.clone(),
                headers: h,
                body,
            }]
        }
        Kind::Redis {
            address,
            publish,
            prefix,
        } => events
            .iter()
            .filter_map(|stored| stored.event.as_ref())
            .map(|ev| {
                let key = format!("{prefix}{}", ev.action);
                let body = ev.to_json().to_string().into_bytes();
                if *publish {
                    Message::Redis {
                        address: address.clone(),
                        command: "PUBLISH".into(),
                        args: vec![key.into_bytes(), body],
                    }
                } else {
                    let seq = ev.seq;
                    Message::Redis {
                        address: address.clone(),
                        command: "XADD".into(),
                        args: vec![
                            key.into_bytes(),
                            format!("{seq}-1").into_bytes(),
                            b"id".to_vec(),
                            ev.id.as_bytes().to_vec(),
                            b"seq".to_vec(),
                            seq.to_string().into_bytes(),
                            b"event".to_vec(),
                            body,
                        ],
                    }
                }
            })
            .collect(),
        Kind::Mqtt {
            address,
            username,
            password,
            prefix,
        } => events
            .iter()
            .filter_map(|stored| stored.event.as_ref())
            .map(|ev| Message::Mqtt {
                address: address.clone(),
                username: username.clone(),
                password: password.clone(),
                topic: format!("{prefix}{}", ev.action.as_str().replace('.', "/")),
                payload: ev.to_json().to_string().into_bytes(),
            })
            .collect(),
    }
}

/// Sends messages; an error leaves the batch unacknowledged (it is sent again).
#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn send(&self, messages: &[Message]) -> Result<(), String>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkState {
    pub name: String,
    /// Last acknowledged seq; -1 before the first.
    pub after_seq: i64,
    pub failures: u32,
    pub wait_until: Option<String>,
    pub last_error: Option<String>,
}

pub async fn state<S: Sql>(db: &S, name: &str) -> Result<SinkState, DbError> {
    let rows = db
        .query(
            "SELECT after_seq, failures, wait_until, last_error FROM sink_cursors WHERE name = ?",
            &[Val::text(name)],
        )
        .await?;
    Ok(match rows.first() {
        Some(r) => SinkState {
            name: name.into(),
            after_seq: r[0].as_i64().unwrap_or(-1),
            failures: r[1].as_i64().unwrap_or(0) as u32,
            wait_until: r[2].as_str().map(str::to_string),
            last_error: r[3].as_str().map(str::to_string),
        },
        None => SinkState {
            name: name.into(),
            after_seq: -1,
            failures: 0,
            wait_until: None,
            last_error: None,
        },
    })
}

/// The first seq some sink has not acknowledged yet; None when there are no sinks.
pub async fn delivered_below<S: Sql>(db: &S, sinks: &[Sink]) -> Result<Option<u64>, DbError> {
    let mut below: Option<u64> = None;
    for s in sinks {
        let next = (state(db, &s.name).await?.after_seq + 1).max(0) as u64;
        below = Some(below.map_or(next, |b| b.min(next)));
    }
    Ok(below)
}

async fn save<S: Sql>(db: &S, s: &SinkState) -> Result<(), DbError> {
    db.exec(
        "INSERT INTO sink_cursors (name, after_seq, failures, wait_until, last_error) VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET after_seq = excluded.after_seq, failures = excluded.failures, wait_until = excluded.wait_until, last_error = excluded.last_error",
        &[
            Val::text(&s.name),
            Val::Int(s.after_seq),
            Val::Int(s.failures as i64),
            Val::opt_text(s.wait_until.as_deref()),
            Val::opt_text(s.last_error.as_deref()),
        ],
    )
    .await
}

#[derive(Debug, Default, PartialEq)]
pub struct Delivered {
    pub name: String,
    pub events: usize,
    pub batches: usize,
    pub after_seq: i64,
    pub error: Option<String>,
    pub waiting_until: Option<String>,
}

/// Delivers up to `max_batches` batches to each sink, from its cursor. A failed batch stops
/// that sink and backs it off (5 s doubling to 10 minutes); the others go on.
pub async fn deliver<S: Sql, T: Transport>(
    db: &S,
    sinks: &[Sink],
    transport: &T,
    now: &str,
    max_batches: usize,
) -> Result<Vec<Delivered>, DbError> {
    let mut out = Vec::new();
    for sink in sinks {
        let mut st = state(db, &sink.name).await?;
        let mut d = Delivered {
            name: sink.name.clone(),
            after_seq: st.after_seq,
            ..Default::default()
        };
        if let Some(w) = &st.wait_until
            && w.as_str() > now
        {
            d.waiting_until = Some(w.clone());
            out.push(d);
            continue;
        }
        for _ in 0..max_batches {
            let filter = EventFilter {
                after_seq: u64::try_from(st.after_seq).ok(),
                ..Default::default()
            };
            // Read a little more than a batch: filtered-out events cost no round trip.
            let page = store::list_events(db, &filter, sink.batch * 4).await?;
            if page.is_empty() {
                break;
            }
            let mut chosen = Vec::new();
            let mut through = st.after_seq;
            for e in &page {
                if let Some(ev) = &e.event
                    && sink.wants(ev)
                {
                    if chosen.len() == sink.batch {
                        break;
                    }
                    chosen.push(e.clone());
                }
                through = e.seq as i64;
            }
            if !chosen.is_empty() {
                if let Err(e) = transport.send(&messages(sink, &chosen)).await {
                    st.failures += 1;
                    let backoff = (5i64 << st.failures.min(7)).min(600);
                    st.wait_until = Some(crate::time::plus_seconds(now, backoff));
                    st.last_error = Some(e.clone());
                    save(db, &st).await?;
                    d.error = Some(e);
                    d.waiting_until = st.wait_until.clone();
                    break;
                }
                d.events += chosen.len();
                d.batches += 1;
            }
            st.after_seq = through;
            st.failures = 0;
            st.wait_until = None;
            st.last_error = None;
            save(db, &st).await?;
            d.after_seq = through;
        }
        out.push(d);
    }
    Ok(out)
}

/// `stream-only` mode: the bodies of events every sink has acknowledged are pruned (their
/// rows, leaves and a tombstone stay, so the ledger still verifies), with the raw bodies of
/// the deliveries they came from. Returns how many events.
pub async fn prune_delivered<S: Sql>(db: &S, sinks: &[Sink], now: &str) -> Result<u64, DbError> {
    let mut through = i64::MAX;
    for s in sinks {
        through = through.min(state(db, &s.name).await?.after_seq);
    }
    if sinks.is_empty() || through < 0 {
        return Ok(0);
    }
    in_writer(db, async || {
        db.exec(
            "INSERT INTO pruned (seq, policy, pruned_at) SELECT seq, 'stream-only', ? FROM event_bodies WHERE seq <= ?",
            &[Val::text(now), Val::Int(through)],
        )
        .await?;
        let n = db.changes().await?;
        db.exec("DELETE FROM event_bodies WHERE seq <= ?", &[Val::Int(through)])
            .await?;
        // The raw webhook bodies of deliveries whose events the sinks all have go too.
        db.exec(
            "DELETE FROM delivery_bodies WHERE delivery IN (SELECT id FROM deliveries WHERE events = 0 OR first_seq + events - 1 <= ?)",
            &[Val::Int(through)],
        )
        .await?;
        Ok(n)
    })
    .await
}

#[cfg(test)]
mod tests {

    #[test]
    fn mqtt_addresses_get_what_rumqttc_requires() {
        assert_eq!(
            mqtt_connect_address("mqtt://broker:1883", "audit sink", "ab12"),
            "mqtt://broker:1883?client_id=pipetrail-audit-sink-ab12&max_incoming_packet_size_bytes=16777216&max_outgoing_packet_size_bytes=16777216"
        );
        // The operator's own choices stay.
        let own = "mqtt://broker?client_id=mine&max_incoming_packet_size_bytes=1&max_outgoing_packet_size_bytes=2";
        assert_eq!(mqtt_connect_address(own, "s", "n"), own);
        assert_eq!(
            mqtt_connect_address("mqtt://broker?keep_alive_secs=5", "s", "n"),
            "mqtt://broker?keep_alive_secs=5&client_id=pipetrail-s-n&max_incoming_packet_size_bytes=16777216&max_outgoing_packet_size_bytes=16777216"
        );
    }
    use super::*;

    fn ev(seq: u64, action: &str, path: &str) -> StoredEvent {
        let ev = json!({"v": 1, "seq": seq, "id": format!("ev_{seq}"), "action": action, "occurred_at": "2026-11-20T09:00:00.000Z",
               "recorded_at": "2026-11-20T09:00:01.000Z",
               "forge": {"kind": "gitlab", "instance": "g.example"}, "project": {"id": 21, "path": path},
               "actor": {"kind": "user", "username": "dora"}, "attribution": "rails_log",
               "evidence": {"source": "gitlab.rails_log", "payload_sha256": "ab"}});
        StoredEvent {
            seq,
            event: Some(serde_json::from_value(ev).unwrap()),
            leaf_hash: [0; 32],
        }
    }

    fn wants(sink: &Sink, stored: StoredEvent) -> bool {
        sink.wants(stored.event.as_ref().unwrap())
    }

    #[test]
    fn configuration_is_checked_and_filters_apply() {
        let sinks = parse(r#"[{"name":"a","kind":"http","url":"https://x.example/in","format":"splunk_hec","batch":2,"token_header":"Authorization","token":"Splunk t","hmac_key":"k","headers":{"X-Env":"prod"},"filter":{"actions":["pipeline.*","*.canceled"],"projects":["grp/app"]}},{"name":"b","kind":"redis","address":"redis://127.0.0.1:6379"},{"name":"c","kind":"mqtt","address":"mqtt://127.0.0.1:1883"}]"#).unwrap();
        assert_eq!(sinks.len(), 3);
        assert!(wants(&sinks[0], ev(1, "pipeline.created", "grp/app")));
        assert!(wants(&sinks[0], ev(1, "job.canceled", "grp/app")));
        assert!(!wants(&sinks[0], ev(1, "job.created", "grp/app")));
        assert!(!wants(&sinks[0], ev(1, "pipeline.created", "other/x")));
        for bad in [
            r#"{}"#,
            r#"[{"kind":"http","url":"https://x"}]"#,
            r#"[{"name":"a","kind":"ftp"}]"#,
            r#"[{"name":"a","kind":"http","url":"ftp://x"}]"#,
            r#"[{"name":"a","kind":"redis","address":"r"},{"name":"a","kind":"redis","address":"redis://x"}]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("").unwrap(), Vec::new());
    }

    #[test]
    fn messages_per_destination() {
        let sinks = parse(r#"[{"name":"h","kind":"http","url":"https://x.example/in","format":"splunk_hec","token_header":"Authorization","token":"Splunk t","hmac_key":"k"},{"name":"r","kind":"redis","address":"redis://h:6379"},{"name":"m","kind":"mqtt","address":"mqtt://h:1883"}]"#).unwrap();
        let events = [ev(4, "pipeline.canceled", "grp/app"), ev(5, "job.played", "grp/app")];
        let Message::Http { headers, body, .. } = &messages(&sinks[0], &events)[0] else {
            panic!()
        };
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            (first["sourcetype"].as_str(), first["event"]["seq"].as_u64()),
            (Some("pipetrail:event"), Some(4))
        );
        let sig = headers.iter().find(|(k, _)| k == "x-pipetrail-signature").unwrap();
        assert_eq!(sig.1, format!("sha256={}", hex(&hmac_sha256(b"k", body))));
        assert!(headers.contains(&("Authorization".into(), "Splunk t".into())));
        let Message::Redis { command, args, .. } = &messages(&sinks[1], &events)[1] else {
            panic!()
        };
        assert_eq!(
            (command.as_str(), &args[0][..], &args[1][..]),
            ("XADD", &b"pipetrail:events:job.played"[..], &b"5-1"[..])
        );
        let Message::Mqtt { topic, .. } = &messages(&sinks[2], &events)[0] else {
            panic!()
        };
        assert_eq!(topic, "pipetrail/events/pipeline/canceled");
    }
}
