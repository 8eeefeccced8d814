//! Host side of `spin:redis/redis@3.0.0` and `spin:mqtt/mqtt@3.0.0`: Spin's outbound Redis
//! and MQTT, over real connections to real servers. A component may reach only addresses
//! its `allowed_outbound_hosts` lists (`redis://host:port`, `mqtt://host:port`), as in Spin.
//! The wire protocols are the small parts of RESP and MQTT 3.1.1 these interfaces need.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use wasmtime::component::{Accessor, Resource};

use crate::host::Ctx;
use crate::manifest::outbound_allowed;
use crate::spin::Spin;
use crate::spin::spin::mqtt::mqtt::{self, Qos};
use crate::spin::spin::redis::redis::{self, RedisParameter, RedisResult};

pub struct RedisConn {
    stream: Arc<Mutex<BufReader<TcpStream>>>,
}

pub struct MqttConn {
    stream: Arc<Mutex<TcpStream>>,
    next_id: AtomicU16,
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

async fn connect(ctx_allowed: &[String], address: &str, scheme: &str, port: u16) -> Result<TcpStream, String> {
    let (host, port) = host_port(address, scheme, port).ok_or("invalid address")?;
    if !outbound_allowed(ctx_allowed, scheme, &host, port) {
        eprintln!("testhost: outbound {scheme} connection to {host}:{port} denied: not in allowed_outbound_hosts");
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

impl<U> redis::HostConnectionWithStore<U> for Spin {
    async fn open(
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

    async fn publish(
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

    async fn get(
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

    async fn set(
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

    async fn incr(
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

    async fn del(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(counted(&s, "DEL", None, keys).await)
    }

    async fn sadd(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(counted(&s, "SADD", Some(key), values).await)
    }

    async fn smembers(
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

    async fn srem(
        store: &Accessor<U, Self>,
        conn: Resource<RedisConn>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, redis::Error>> {
        let s = redis_conn(store, &conn)?;
        Ok(counted(&s, "SREM", Some(key), values).await)
    }

    async fn execute(
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

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// Reads one packet: (first byte, body).
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

impl mqtt::Host for Ctx {}

impl mqtt::HostConnection for Ctx {
    fn drop(&mut self, conn: Resource<MqttConn>) -> wasmtime::Result<()> {
        if let Ok(c) = self.table.delete(conn) {
            // A clean DISCONNECT, as a client closing normally sends.
            tokio::spawn(async move {
                let _ = c.stream.lock().await.write_all(&[0xe0, 0x00]).await;
            });
        }
        Ok(())
    }
}

impl<U> mqtt::HostConnectionWithStore<U> for Spin {
    async fn open(
        store: &Accessor<U, Self>,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<MqttConn>, mqtt::Error>> {
        let allowed = store.with(|mut view| view.get().component.allowed_outbound_hosts.clone());
        let mut stream = match connect(&allowed, &address, "mqtt", 1883).await {
            Ok(s) => s,
            Err(e) if e == "invalid address" => return Ok(Err(mqtt::Error::InvalidAddress)),
            Err(e) => return Ok(Err(mqtt::Error::ConnectionFailed(e))),
        };
        let mut body = Vec::new();
        string(b"MQTT", &mut body);
        body.push(4); // protocol level 3.1.1
        let mut flags = 0x02; // clean session
        if !username.is_empty() {
            flags |= 0x80;
        }
        if !password.is_empty() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&(keep_alive_interval_in_secs.min(u16::MAX as u64) as u16).to_be_bytes());
        let client_id = format!("pipetrail-{}", std::process::id());
        string(client_id.as_bytes(), &mut body);
        if !username.is_empty() {
            string(username.as_bytes(), &mut body);
        }
        if !password.is_empty() {
            string(password.as_bytes(), &mut body);
        }
        let fail = |e: std::io::Error| mqtt::Error::ConnectionFailed(e.to_string());
        if let Err(e) = stream.write_all(&packet(0x10, &body)).await {
            return Ok(Err(fail(e)));
        }
        match read_packet(&mut stream).await {
            Ok((0x20, ack)) if ack.get(1) == Some(&0) => {}
            Ok((_, ack)) => {
                return Ok(Err(mqtt::Error::ConnectionFailed(format!(
                    "the broker refused the connection (code {:?})",
                    ack.get(1)
                ))));
            }
            Err(e) => return Ok(Err(fail(e))),
        }
        store.with(|mut view| {
            let conn = MqttConn {
                stream: Arc::new(Mutex::new(stream)),
                next_id: AtomicU16::new(1),
            };
            Ok(Ok(view.get().table.push(conn)?))
        })
    }

    async fn publish(
        store: &Accessor<U, Self>,
        conn: Resource<MqttConn>,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
    ) -> wasmtime::Result<Result<(), mqtt::Error>> {
        let (stream, id) = store.with(|mut view| -> wasmtime::Result<_> {
            let c = view.get().table.get(&conn)?;
            let id = c.next_id.fetch_add(1, Ordering::Relaxed).max(1);
            Ok((c.stream.clone(), id))
        })?;
        let mut body = Vec::new();
        string(topic.as_bytes(), &mut body);
        let kind = match qos {
            Qos::AtMostOnce => 0x30,
            Qos::AtLeastOnce => {
                body.extend_from_slice(&id.to_be_bytes());
                0x32
            }
            Qos::ExactlyOnce => {
                return Ok(Err(mqtt::Error::Other(
                    "QoS 2 is not implemented by the test host".into(),
                )));
            }
        };
        body.extend_from_slice(&payload);
        let mut s = stream.lock().await;
        let other = |e: std::io::Error| mqtt::Error::Other(e.to_string());
        if let Err(e) = s.write_all(&packet(kind, &body)).await {
            return Ok(Err(other(e)));
        }
        if qos == Qos::AtLeastOnce {
            // The broker's PUBACK for this packet id is the acknowledgement.
            loop {
                match read_packet(&mut s).await {
                    Ok((0x40, ack)) if ack[..] == id.to_be_bytes() => break,
                    Ok(_) => continue,
                    Err(e) => return Ok(Err(other(e))),
                }
            }
        }
        Ok(Ok(()))
    }
}
