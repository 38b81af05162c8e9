//! A small fault-injecting HTTP/1.1 reverse proxy on 127.0.0.1 in front of
//! a [`TestRegistry`](super::TestRegistry), for the hostile cases: a status
//! (503, 429 with `Retry-After`) a few times or always, a connection dropped
//! after some bytes of a response body, a body whose bytes are not the ones
//! its digest names (a lying registry).
//!
//! One request per connection: the request's `Connection` header is
//! rewritten to `close`, the upstream answers and closes, and the answer is
//! copied back to the client (so the client opens a fresh connection for
//! the next request). `Location` headers naming the upstream are rewritten
//! to the proxy, so uploads keep going through it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a rule does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and these headers (empty body) without
    /// asking the upstream.
    Status(u16, Vec<(String, String)>),
    /// Forward, but close the connection after this many bytes of the
    /// response body.
    DropAfter(usize),
    /// Forward, but flip the bits of every body byte from this offset on
    /// (same length, same headers: the digest no longer matches).
    Corrupt(usize),
    /// Forward, but replace these bytes of the body by others of the same
    /// length wherever they occur within one read (for small bodies such as
    /// manifests: still valid JSON, but not the bytes the digest names).
    Replace(Vec<u8>, Vec<u8>),
    /// Forward after holding the request this long (a slow registry).
    Delay(Duration),
}

/// Which requests a rule matches: method (any when `None`) and a path
/// substring (or prefix).
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<String>,
    pub path: String,
    pub prefix: bool,
    pub fault: Fault,
    /// How many matching requests get the fault; the rest pass through.
    pub times: usize,
    /// How many matching requests pass through before the first fault.
    pub skip: usize,
    /// Matching requests seen so far.
    pub seen: usize,
    /// Faults injected so far.
    pub injected: usize,
}

/// One request that went through the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The index of the rule that injected a fault, if any.
    pub fault: Option<usize>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Seen>,
}

/// The proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    /// `127.0.0.1:PORT`
    pub host: String,
    upstream: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            let upstream = upstream.to_string();
            let me = host.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let upstream = upstream.clone();
                    let me = me.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &upstream, &me, &state);
                    });
                }
            });
        }
        FaultProxy {
            port,
            host,
            upstream: upstream.to_string(),
            state,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    fn add(
        &self,
        method: Option<&str>,
        path: &str,
        prefix: bool,
        fault: Fault,
        times: usize,
    ) -> usize {
        let mut st = self.state.lock().unwrap();
        st.rules.push(Rule {
            method: method.map(str::to_string),
            path: path.to_string(),
            prefix,
            fault,
            times,
            skip: 0,
            seen: 0,
            injected: 0,
        });
        st.rules.len() - 1
    }

    /// The first `times` requests with `method` whose path contains `path`
    /// are answered with `status` (and `headers`). Returns the rule's index.
    pub fn status_times(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: usize,
    ) -> usize {
        let h = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.add(Some(method), path, false, Fault::Status(status, h), times)
    }

    /// [`FaultProxy::status_times`], after `skip` matching requests have
    /// passed through untouched.
    pub fn status_after(
        &self,
        method: &str,
        path: &str,
        status: u16,
        skip: usize,
        times: usize,
    ) -> usize {
        let i = self.status_times(method, path, status, &[], times);
        self.state.lock().unwrap().rules[i].skip = skip;
        i
    }

    /// Every request (any method) whose path starts with `prefix` is
    /// answered with `status`.
    pub fn always_status_prefix(&self, prefix: &str, status: u16) -> usize {
        self.add(
            None,
            prefix,
            true,
            Fault::Status(status, vec![]),
            usize::MAX,
        )
    }

    /// The first `times` matching requests lose their connection after
    /// `after` bytes of response body.
    pub fn drop_after(&self, method: &str, path: &str, after: usize, times: usize) -> usize {
        self.add(Some(method), path, false, Fault::DropAfter(after), times)
    }

    /// Every matching response has its body corrupted from byte `from` on.
    pub fn corrupt(&self, method: &str, path: &str, from: usize) -> usize {
        self.add(Some(method), path, false, Fault::Corrupt(from), usize::MAX)
    }

    /// Every matching response has `from` replaced by `to` (same length) in
    /// its body.
    pub fn replace(&self, method: &str, path: &str, from: &str, to: &str) -> usize {
        assert_eq!(from.len(), to.len(), "a replacement keeps the length");
        let fault = Fault::Replace(from.as_bytes().to_vec(), to.as_bytes().to_vec());
        self.add(Some(method), path, false, fault, usize::MAX)
    }

    /// The first `times` matching requests wait `delay` before they are forwarded.
    pub fn delay(&self, method: &str, path: &str, delay: Duration, times: usize) -> usize {
        self.add(Some(method), path, false, Fault::Delay(delay), times)
    }

    /// Removes every rule (counters of past requests stay in the log).
    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap();
        for r in &mut st.rules {
            r.times = 0;
        }
    }

    /// `(seen, injected)` of rule `i`.
    pub fn counts(&self, i: usize) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.rules[i].seen, st.rules[i].injected)
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests so far with `method` whose path contains `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.log()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.host);
    }
}

/// Reads until the end of an HTTP head; returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_string();
            return Ok((head, buf[p + 4..].to_vec()));
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("HTTP head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

fn handle(
    mut client: TcpStream,
    upstream: &str,
    me: &str,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (head, rest) = read_head(&mut client)?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();

    // Decide on a fault.
    let fault = {
        let mut st = state.lock().unwrap();
        let mut chosen = None;
        for (i, r) in st.rules.iter_mut().enumerate() {
            let method_ok = r.method.as_deref().is_none_or(|m| m == method);
            let path_ok = if r.prefix {
                path.starts_with(&r.path)
            } else {
                path.contains(&r.path)
            };
            if method_ok && path_ok {
                r.seen += 1;
                if chosen.is_none() && r.seen > r.skip && r.injected < r.times {
                    r.injected += 1;
                    chosen = Some((i, r.fault.clone()));
                }
            }
        }
        st.log.push(Seen {
            method: method.clone(),
            path: path.clone(),
            fault: chosen.as_ref().map(|(i, _)| *i),
        });
        chosen.map(|(_, f)| f)
    };

    if let Some(Fault::Status(status, headers)) = &fault {
        let mut resp = format!("HTTP/1.1 {status} {}\r\n", reason(*status));
        for (k, v) in headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(resp.as_bytes())?;
        client.flush()?;
        // Let the client finish sending whatever body it had before closing.
        let _ = client.shutdown(Shutdown::Write);
        client.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut sink = [0u8; 8192];
        while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        return Ok(());
    }

    if let Some(Fault::Delay(d)) = &fault {
        std::thread::sleep(*d);
    }

    // Forward the request with `Connection: close`.
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = format!("{request_line}\r\n");
    for l in lines {
        let name = l.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&rest)?;
    up.flush()?;

    // The rest of the request body, client -> upstream, until either closes.
    {
        let mut c = client.try_clone()?;
        let mut u = up.try_clone()?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut c, &mut u);
        });
    }

    // The response: head (Location rewritten), then the body with any fault.
    let (rhead, mut body_start) = read_head(&mut up)?;
    let mut rout = String::new();
    for (i, l) in rhead.split("\r\n").enumerate() {
        let name = l.split(':').next().unwrap_or_default().trim();
        if i > 0 && name.eq_ignore_ascii_case("location") {
            rout.push_str(&l.replace(upstream, me));
        } else {
            rout.push_str(l);
        }
        rout.push_str("\r\n");
    }
    rout.push_str("\r\n");
    client.write_all(rout.as_bytes())?;

    let mut sent = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pending = std::mem::take(&mut body_start);
    loop {
        let mut data = if pending.is_empty() {
            let n = match up.read(&mut chunk) {
                Ok(n) => n,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            chunk[..n].to_vec()
        } else {
            std::mem::take(&mut pending)
        };
        match &fault {
            Some(Fault::DropAfter(after)) => {
                let room = after.saturating_sub(sent);
                if data.len() >= room {
                    client.write_all(&data[..room])?;
                    client.flush()?;
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = up.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
            Some(Fault::Corrupt(from)) => {
                for (i, b) in data.iter_mut().enumerate() {
                    if sent + i >= *from {
                        *b = !*b;
                    }
                }
            }
            Some(Fault::Replace(from, to)) if !from.is_empty() => {
                let mut i = 0;
                while i + from.len() <= data.len() {
                    if data[i..i + from.len()] == from[..] {
                        data[i..i + from.len()].copy_from_slice(to);
                        i += from.len();
                    } else {
                        i += 1;
                    }
                }
            }
            _ => {}
        }
        client.write_all(&data)?;
        sent += data.len();
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    Ok(())
}
