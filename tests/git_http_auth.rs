//! `regimen run --git` against a Git remote that wants credentials: Git's
//! own `git http-backend` behind a small HTTP front that demands Basic auth
//! (the https token flow of GitHub/GitLab, minus TLS). Checks that the
//! `REGIMEN_GIT_*` credentials are used, that a refused token ends in one
//! clear error (not a retry loop), and that the secret is never printed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{git_plan_once, policy_remote, run};

const USER: &str = "robot";
const TOKEN: &str = "s3cret-token";
/// base64("robot:s3cret-token")
const GOOD_AUTH: &str = "Basic cm9ib3Q6czNjcmV0LXRva2Vu";

/// Serves `root` over Git's smart HTTP protocol, answering 401 to any
/// request without the right Basic credentials. Returns the port and a
/// counter of refused requests.
fn serve_git(root: PathBuf) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let root = root.clone();
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = handle(s, &root, &count);
            });
        }
    });
    (port, refused)
}

fn handle(
    mut s: TcpStream,
    root: &Path,
    refused: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2]; // data + CRLF
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse().ok()) {
        body = vec![0; n];
        r.read_exact(&mut body)?;
    }
    if headers.get("authorization").map(String::as_str) != Some(GOOD_AUTH) {
        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"git\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env(
            "CONTENT_TYPE",
            headers.get("content-type").cloned().unwrap_or_default(),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    cgi.stdin.take().unwrap().write_all(&body)?;
    let out = cgi.wait_with_output()?;
    // CGI output: headers, a blank line, the body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap_or((out.stdout.len(), 0));
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
    let payload = &out.stdout[(split.0 + split.1).min(out.stdout.len())..];
    let mut status = "200 OK".to_string();
    let mut resp_headers = String::new();
    for h in head.lines() {
        if let Some(v) = h.strip_prefix("Status:") {
            status = v.trim().to_string();
        } else if !h.trim().is_empty() {
            resp_headers.push_str(h.trim());
            resp_headers.push_str("\r\n");
        }
    }
    write!(
        s,
        "HTTP/1.1 {status}\r\n{resp_headers}content-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    )?;
    s.write_all(payload)
}

/// One `run --once` against the http remote on `port`; exit code and output.
fn run_once(port: u16, cache: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = git_plan_once(&format!("http://127.0.0.1:{port}/policy.git"), cache);
    cmd.envs(env.iter().copied());
    run(&mut cmd)
}

#[test]
fn git_remote_with_token_auth() {
    let (tmp, sha) = policy_remote();
    let (port, refused) = serve_git(tmp.path().to_path_buf());

    // No credentials: one clear error saying what to set.
    let (code, out) = run_once(port, &tmp.path().join("cache0"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REGIMEN_GIT_TOKEN"), "{out}");

    // A refused token: an error, quickly, not a loop of retries.
    let before = refused.load(std::sync::atomic::Ordering::SeqCst);
    let (code, out) = run_once(
        port,
        &tmp.path().join("cache1"),
        &[
            ("REGIMEN_GIT_USERNAME", USER),
            ("REGIMEN_GIT_TOKEN", "wrong"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(!out.contains("wrong"), "the token is never printed:\n{out}");
    let tries = refused.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(tries <= 2, "{tries} refused requests for one bad token");

    // The right token: the policy is fetched and planned at that commit.
    let (code, out) = run_once(
        port,
        &tmp.path().join("cache2"),
        &[("REGIMEN_GIT_USERNAME", USER), ("REGIMEN_GIT_TOKEN", TOKEN)],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&sha[..12]), "the revision is logged:\n{out}");
    assert!(!out.contains(TOKEN), "the token is never printed:\n{out}");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                out.push(p);
            }
        }
    }
    out
}

/// Some Git hosts take a token in the URL's query: it is never written
/// into the cache (Git's FETCH_HEAD would record the whole URL there, on a
/// volume often shared), nor printed.
#[test]
fn a_query_token_in_the_git_url_stays_out_of_the_cache() {
    let (tmp, sha) = policy_remote();
    let (port, _) = serve_git(tmp.path().to_path_buf());
    let cache = tmp.path().join("cache-q");
    let url = format!("http://127.0.0.1:{port}/policy.git?private_token=QSEKRIT");
    let mut cmd = git_plan_once(&url, &cache);
    cmd.envs([("REGIMEN_GIT_USERNAME", USER), ("REGIMEN_GIT_TOKEN", TOKEN)]);
    let (code, out) = run(&mut cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&sha[..12]), "{out}");
    assert!(!out.contains("QSEKRIT"), "{out}");
    assert_eq!(files_containing(&cache, "QSEKRIT"), Vec::<PathBuf>::new());
    assert_eq!(files_containing(&cache, TOKEN), Vec::<PathBuf>::new());
}
