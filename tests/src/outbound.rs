//! Host side of `spin:redis/redis@3.0.0` and `spin:mqtt/mqtt@3.0.0`: Spin's outbound Redis
//! and MQTT, over real connections to real servers. A component may reach only addresses
//! its `allowed_outbound_hosts` lists, by Spin's rules (`allowed_hosts.rs`). MQTT is Spin's
//! own client, rumqttc; Redis is the small part of RESP2 the interface needs.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use wasmtime::component::{Accessor, Resource};

use crate::host::Ctx;
use crate::spin::Spin;
use crate::spin::spin::mqtt::mqtt::{self, Qos};
use crate::spin::spin::redis::redis::{self, RedisParameter, RedisResult};

pub struct RedisConn {
    stream: Arc<Mutex<BufReader<TcpStream>>>,
}

pub struct MqttConn {
    client: rumqttc::AsyncClient,
    event_loop: Arc<Mutex<rumqttc::EventLoop>>,
}

/// `scheme://[user[:password]@]host[:port]` → (host, port).
fn host_port(address: &str, scheme: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = address.strip_prefix(&format!("{scheme}://"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let rest = rest.split(['/', '?']).next()?;
    match rest.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((rest.to_string(), default_port)),
    }
}

async fn connect(
    allowed: &crate::allowed_hosts::AllowedHosts,
    address: &str,
    scheme: &str,
    port: u16,
) -> Result<TcpStream, String> {
    let (host, port) = host_port(address, scheme, port).ok_or("invalid address")?;
    if !allowed.check(address, scheme) {
        return Err(format!("{scheme}://{host}:{port} is not in allowed_outbound_hosts"));
    }
    TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))
}

// ------------------------------------------------------------------ Redis (RESP2)

async fn command(stream: &Mutex<BufReader<TcpStream>>, args: &[Vec<u8>]) -> Result<Vec<RedisResult>, redis::Error> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    let mut s = stream.lock().await;
    let other = |e: std::io::Error| redis::Error::Other(e.to_string());
    s.get_mut().write_all(&out).await.map_err(other)?;
    let mut results = Vec::new();
    read_reply(&mut s, &mut results).await?;
    Ok(results)
}

async fn line(s: &mut BufReader<TcpStream>) -> Result<String, redis::Error> {
    let mut l = String::new();
    s.read_line(&mut l)
        .await
        .map_err(|e| redis::Error::Other(e.to_string()))?;
    if l.is_empty() {
        return Err(redis::Error::Other("connection closed".into()));
    }
    Ok(l.trim_end_matches("\r\n").to_string())
}

/// Reads one reply; an array's elements are flattened into `out`, as Spin's host does.
fn read_reply<'a>(
    s: &'a mut BufReader<TcpStream>,
    out: &'a mut Vec<RedisResult>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), redis::Error>> + Send + 'a>> {
    Box::pin(async move {
        let l = line(s).await?;
        let (kind, rest) = l.split_at(1.min(l.len()));
        match kind {
            "+" => out.push(RedisResult::Status(rest.to_string())),
            "-" => return Err(redis::Error::Other(rest.to_string())),
            ":" => out.push(RedisResult::Int64(rest.parse().map_err(|_| redis::Error::TypeError)?)),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| redis::Error::TypeError)?;
                if n < 0 {
                    out.push(RedisResult::Nil);
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    s.read_exact(&mut buf)
                        .await
                        .map_err(|e| redis::Error::Other(e.to_string()))?;
                    buf.truncate(n as usize);
                    out.push(RedisResult::Binary(buf));
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| redis::Error::TypeError)?;
                for _ in 0..n.max(0) {
                    read_reply(s, out).await?;
                }
            }
            _ => return Err(redis::Error::Other(format!("unexpected reply {l:?}"))),
        }
        Ok(())
    })
}

/// A command that answers how many items it changed (DEL, SADD, SREM).
async fn counted(
    s: &Mutex<BufReader<TcpStream>>,
    verb: &str,
    key: Option<String>,
    items: Vec<String>,
) -> Result<u32, redis::Error> {
    let mut args = vec![verb.as_bytes().to_vec()];
    args.extend(key.map(String::into_bytes));
    args.extend(items.into_iter().map(String::into_bytes));
    match command(s, &args).await?.first() {
        Some(RedisResult::Int64(n)) => Ok(*n as u32),
        _ => Err(redis::Error::TypeError),
    }
}

fn redis_conn<U>(
    store: &Accessor<U, Spin>,
    conn: &Resource<RedisConn>,
) -> wasmtime::Result<Arc<Mutex<BufReader<TcpStream>>>> {
    store.with(|mut view| Ok(view.get().table.get(conn)?.stream.clone()))
}

impl redis::Host for Ctx {}

impl redis::HostConnection for Ctx {
    fn drop(&mut self, conn: Resource<RedisConn>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl redis::HostConnectionWithStore for Spin {
    async fn open<U>(
        store: &Accessor<U, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConn>, redis::Error>> {
        let allowed = store.with(|mut view| view.get().component.allowed_outbound_hosts.clone());
        let stream = match connect(&allowed, &address, "redis", 6379).await {
            Ok(s) => s,
            Err(e) if e.contains("allowed_outbound_hosts") || e == "invalid address" => {
                return Ok(Err(redis::Error::InvalidAddress));
            }
            Err(e) => return Ok(Err(redis::Error::Other(e))),
        };
        store.with(|mut view| {
            let conn = RedisConn {
                stream: Arc::new(Mutex::new(BufReader::new(stream))),
            };
            Ok(Ok(view.get().table.push(conn)?))
        })
    }

    async fn publish<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(command(&s, &[b"PUBLISH".to_vec(), channel.into_bytes(), payload])
            .await
            .map(|_| ()))
    }

    async fn get<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(command(&s, &[b"GET".to_vec(), key.into_bytes()])
            .await
            .map(|r| match r.into_iter().next() {
                Some(RedisResult::Binary(b)) => Some(b),
                _ => None,
            }))
    }

    async fn set<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(command(&s, &[b"SET".to_vec(), key.into_bytes(), value])
            .await
            .map(|_| ()))
    }

    async fn incr<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
    ) -> wasmtime::Result<Result<i64, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(command(&s, &[b"INCR".to_vec(), key.into_bytes()])
            .await
            .and_then(|r| match r.first() {
                Some(RedisResult::Int64(n)) => Ok(*n),
                _ => Err(redis::Error::TypeError),
            }))
    }

    async fn del<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(counted(&s, "DEL", None, keys).await)
    }

    async fn sadd<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(counted(&s, "SADD", Some(key), values).await)
    }

    async fn smembers<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(command(&s, &[b"SMEMBERS".to_vec(), key.into_bytes()]).await.map(|r| {
            r.into_iter()
                .filter_map(|v| match v {
                    RedisResult::Binary(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn srem<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(counted(&s, "SREM", Some(key), values).await)
    }

    async fn execute<U>(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        name: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        let mut args = vec![name.into_bytes()];
        args.extend(arguments.into_iter().map(|a| match a {
            RedisParameter::Int64(n) => n.to_string().into_bytes(),
            RedisParameter::Binary(b) => b,
        }));
        Ok(command(&s, &args).await)
    }
}

// ------------------------------------------------------------------ MQTT 3.1.1

impl mqtt::Host for Ctx {}

impl mqtt::HostConnection for Ctx {
    fn drop(&mut self, conn: Resource<MqttConn>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

/// Spin's MQTT client (`crates/factor-outbound-mqtt`): the address parsed by rumqttc's own
/// `MqttOptions::parse_url` (so `client_id` is required, and its packet limits, 10 KiB
/// outgoing by default, apply), credentials and keep-alive set, 1,000 requests of channel.
fn mqtt_client(address: &str, username: String, password: String, keep_alive: u64) -> Result<MqttConn, mqtt::Error> {
    let mut options = rumqttc::MqttOptions::parse_url(address).map_err(|e| {
        eprintln!("testhost: MQTT URL parse error: {e:?}");
        mqtt::Error::InvalidAddress
    })?;
    options.set_credentials(username, password);
    options.set_keep_alive(std::time::Duration::from_secs(keep_alive.max(5)));
    let (client, event_loop) = rumqttc::AsyncClient::new(options, 1000);
    Ok(MqttConn {
        client,
        event_loop: Arc::new(Mutex::new(event_loop)),
    })
}

impl mqtt::HostConnectionWithStore for Spin {
    async fn open<U>(
        store: &Accessor<U, Self>,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<MqttConn>, mqtt::Error>> {
        let allowed = store.with(|mut view| view.get().component.allowed_outbound_hosts.clone());
        if !allowed.check(&address, "mqtt") {
            return Ok(Err(mqtt::Error::ConnectionFailed(format!(
                "{address} is not in allowed_outbound_hosts"
            ))));
        }
        let conn = match mqtt_client(&address, username, password, keep_alive_interval_in_secs) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        store.with(|mut view| Ok(Ok(view.get().table.push(conn)?)))
    }

    async fn publish<U>(
        store: &Accessor<U, Self>,
        conn: Resource<MqttConn>,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
    ) -> wasmtime::Result<Result<(), mqtt::Error>> {
        use rumqttc::{Event, Incoming, Outgoing, QoS};
        let (client, event_loop) = store.with(|mut view| -> wasmtime::Result<_> {
            let c = view.get().table.get(&conn)?;
            Ok((c.client.clone(), c.event_loop.clone()))
        })?;
        let qos = match qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
            Qos::ExactlyOnce => QoS::ExactlyOnce,
        };
        if let Err(e) = client.publish_bytes(topic, qos, false, payload.into()).await {
            return Ok(Err(mqtt::Error::Other(e.to_string())));
        }
        // As Spin: drive the event loop until this publish is sent (QoS 0), acknowledged
        // (QoS 1) or completed (QoS 2); a packet over the size limit fails here.
        let mut event_loop = event_loop.lock().await;
        loop {
            match event_loop.poll().await {
                Ok(event) => match (qos, event) {
                    (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                    | (QoS::AtLeastOnce, Event::Incoming(Incoming::PubAck(_)))
                    | (QoS::ExactlyOnce, Event::Incoming(Incoming::PubComp(_))) => return Ok(Ok(())),
                    _ => continue,
                },
                Err(e) => return Ok(Err(mqtt::Error::ConnectionFailed(e.to_string()))),
            }
        }
    }
}
