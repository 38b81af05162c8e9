//! A token server for the Docker/OCI bearer token flow, in front of a real
//! `docker-registry` started with `auth: token:` (see
//! [`TestRegistry::start_with_token`](super::TestRegistry::start_with_token)).
//!
//! It serves `GET /token?service=S&scope=..[&scope=..]` on 127.0.0.1 with
//! HTTP basic auth, as Docker Hub's and Harbor's do: wrong or missing
//! credentials get a 401; otherwise a JWT (RS256, signed by the `openssl`
//! CLI) granting, for each asked `repository:NAME:ACTIONS`, the actions the
//! user is allowed (fewer than asked is not an error: the registry then
//! refuses the request, as real token servers do). The key's self-signed
//! certificate travels in the token's `x5c` header and is the registry's
//! `rootcertbundle`.
//!
//! Every token request is recorded (user, scopes asked, answer) so tests can
//! count them, and the lifetime of the tokens it issues can be changed at
//! any time to force an expiry.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

/// The `service` the registry names in its challenges (the tokens' `aud`).
pub const SERVICE: &str = "regimen-test-registry";
/// The tokens' `iss`, which the registry trusts.
pub const ISSUER: &str = "regimen-test-token-issuer";
/// Distribution accepts a token this long past its `exp` (and before its
/// `nbf`): `token.Leeway` in registry/auth/token. A token meant to be
/// refused after `L` seconds carries `exp = now + L - LEEWAY`.
pub const LEEWAY: i64 = 60;

/// One account of the token server.
#[derive(Clone, Debug)]
pub struct User {
    pub password: String,
    /// The actions granted on every repository (`pull`, `push`, `delete`).
    pub actions: Vec<String>,
}

/// One `GET /token` the server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The user of the basic credentials (`None`: none were sent).
    pub user: Option<String>,
    pub service: Option<String>,
    /// The `scope` parameters, in the order sent.
    pub scopes: Vec<String>,
    /// 200, or 401 for missing or wrong credentials.
    pub status: u16,
    /// `repository:NAME:ACTIONS` actually granted (actions sorted).
    pub granted: Vec<String>,
}

struct State {
    users: BTreeMap<String, User>,
    /// Seconds the registry accepts a token for, from its issue.
    lifetime: i64,
    /// `expires_in` in the answer; `None`: the lifetime.
    expires_in: Option<u64>,
    requests: Vec<TokenRequest>,
    issued: u64,
    /// Every token handed out (to check none is ever printed).
    tokens: Vec<String>,
}

/// Signs tokens: the key and certificate, made with the `openssl` CLI.
pub struct Issuer {
    key: PathBuf,
    /// The certificate, PEM (the registry's `rootcertbundle`).
    pub cert: PathBuf,
    /// The certificate, DER in standard base64 (the tokens' `x5c`).
    x5c: String,
    _dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        super::tls::openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token-key.pem",
                "-out",
                "token.pem",
                "-subj",
                "/CN=regimen-test-token-issuer",
                "-days",
                "2",
            ],
        );
        super::tls::openssl(
            dir.path(),
            &[
                "x509",
                "-in",
                "token.pem",
                "-outform",
                "DER",
                "-out",
                "token.der",
            ],
        );
        let der = std::fs::read(dir.path().join("token.der")).unwrap();
        Issuer {
            key: dir.path().join("token-key.pem"),
            cert: dir.path().join("token.pem"),
            x5c: STANDARD.encode(der),
            _dir: dir,
        }
    }

    /// A JWT for `sub` granting `access` (`[{type, name, actions}]`),
    /// accepted by the registry for `lifetime` seconds from now.
    pub fn mint(&self, sub: &str, access: &Value, lifetime: i64, jti: u64) -> String {
        let now = unix_now();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": ISSUER,
            "sub": sub,
            "aud": SERVICE,
            "exp": now + lifetime - LEEWAY,
            "nbf": now - 1,
            "iat": now,
            "jti": format!("regimen-test-{jti}"),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is missing: run `bash scripts/test.sh`, which installs it");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl dgst -sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }

    /// A token granting pull, push and delete on `repo` (for the harness's
    /// own requests, which the server's log does not see).
    pub fn admin_token(&self, repo: &str) -> String {
        let access =
            json!([{"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]}]);
        self.mint("harness", &access, 300, 0)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The token server; stops accepting when dropped.
pub struct TokenServer {
    pub port: u16,
    /// `127.0.0.1:PORT`
    pub host: String,
    pub issuer: Arc<Issuer>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// A server with no users yet (add them with [`TokenServer::user`]),
    /// issuing tokens that live 300 s.
    pub fn start() -> TokenServer {
        let issuer = Arc::new(Issuer::new());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State {
            users: BTreeMap::new(),
            lifetime: 300,
            expires_in: None,
            requests: Vec::new(),
            issued: 0,
            tokens: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, stop, issuer) = (state.clone(), stop.clone(), issuer.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, issuer) = (state.clone(), issuer.clone());
                    std::thread::spawn(move || {
                        let _ = handle(conn, &state, &issuer);
                    });
                }
            });
        }
        TokenServer {
            port,
            host,
            issuer,
            state,
            stop,
        }
    }

    /// Adds (or replaces) `name` with `password`, allowed `actions` on every
    /// repository.
    pub fn user(&self, name: &str, password: &str, actions: &[&str]) -> &TokenServer {
        self.state.lock().unwrap().users.insert(
            name.to_string(),
            User {
                password: password.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            },
        );
        self
    }

    /// Tokens issued from now on are accepted by the registry for `secs`
    /// seconds, and the answer says `expires_in` (`None`: `secs`).
    pub fn set_lifetime(&self, secs: i64, expires_in: Option<u64>) {
        let mut st = self.state.lock().unwrap();
        st.lifetime = secs;
        st.expires_in = expires_in;
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.host)
    }

    /// The registry's `auth:` configuration for this server.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.issuer.cert.display()
        )
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The token requests so far made as `user`.
    pub fn requests_by(&self, user: &str) -> Vec<TokenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.user.as_deref() == Some(user))
            .collect()
    }

    /// Every token handed out so far.
    pub fn tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

/// `%XX` and `+` decoded (a form-encoded query value).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(s: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Status",
    };
    let mut r = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let _ = s.write_all(r.as_bytes());
    let _ = s.flush();
    let _ = s.shutdown(Shutdown::Write);
}

fn handle(mut s: TcpStream, state: &Mutex<State>, issuer: &Issuer) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 16 {
            return Ok(());
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        respond(&mut s, 404, &[], r#"{"error":"not found"}"#);
        return Ok(());
    }
    let (mut service, mut scopes) = (None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "service" => service = Some(decode(v)),
            // One parameter may hold several scopes, space-separated.
            "scope" => scopes.extend(
                decode(v)
                    .split(' ')
                    .filter(|x| !x.is_empty())
                    .map(String::from),
            ),
            _ => {}
        }
    }
    let basic = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.trim().strip_prefix("Basic ").map(str::to_string))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| {
            up.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });

    let mut st = state.lock().unwrap();
    let user = basic.as_ref().map(|(u, _)| u.clone());
    let account = basic
        .as_ref()
        .and_then(|(u, p)| st.users.get(u).filter(|a| &a.password == p).cloned());
    let Some(account) = account else {
        st.requests.push(TokenRequest {
            user,
            service,
            scopes,
            status: 401,
            granted: vec![],
        });
        drop(st);
        respond(
            &mut s,
            401,
            &[("WWW-Authenticate", "Basic realm=\"regimen-test-token\"")],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        return Ok(());
    };
    let mut access = Vec::new();
    let mut granted = Vec::new();
    for scope in &scopes {
        // `repository:NAME:ACTIONS`; NAME has no `:` (no port in a repo name).
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if kind != "repository" {
            continue;
        }
        let mut ok: Vec<&str> = actions
            .split(',')
            .filter(|a| account.actions.iter().any(|x| x == a))
            .collect();
        ok.sort();
        ok.dedup();
        granted.push(format!("{kind}:{name}:{}", ok.join(",")));
        access.push(json!({"type": kind, "name": name, "actions": ok}));
    }
    st.issued += 1;
    let (lifetime, jti) = (st.lifetime, st.issued);
    let expires_in = st.expires_in.unwrap_or(lifetime.max(0) as u64);
    st.requests.push(TokenRequest {
        user: user.clone(),
        service,
        scopes,
        status: 200,
        granted,
    });
    drop(st);
    let token = issuer.mint(
        user.as_deref().unwrap_or(""),
        &Value::Array(access),
        lifetime,
        jti,
    );
    state.lock().unwrap().tokens.push(token.clone());
    let body = json!({"token": token, "access_token": token, "expires_in": expires_in});
    respond(&mut s, 200, &[], &body.to_string());
    Ok(())
}

/// The repository a registry API path names (`/v2/NAME/manifests/..`,
/// `/v2/NAME/blobs/..`, `/v2/NAME/tags/list`), if any.
pub fn repo_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let rest = rest.split('?').next().unwrap_or(rest);
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map(|i| rest[..i].to_string())
}
