//! Hosts over `tcp://`: a real `podman system service` behind a forwarder on
//! loopback TCP that terminates TLS and requires a client certificate from a
//! test CA (mutual TLS, as `dockerd --tlsverify`). The policy's `tls: {ca,
//! cert, key}` files (relative to the policy directory) get `plan` to see the
//! host and `apply` to prune its old image; a client with a certificate from
//! another CA, a missing key or CA file, or a CA that did not sign the server
//! leaves the host unobserved with a reason naming the host and the problem.
//! Plain `tcp://` without `tls` works too.
//!
//! Certificates are made with the `openssl` CLI (`common::tls`); the forwarder is
//! `tests/common/tcp_forward.py` (Python 3 standard library).

mod common;

use common::ago;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::podman::Podman;
use common::tls::{make_ca, make_leaf};
use common::{json_plan, open, regimen, run, TestRegistry};
use regimen::testkit::{push_image, ImageSpec};

fn push(reg: &TestRegistry, repo: &str, tag: &str, spec: &ImageSpec) {
    let r = open(&reg.host);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(push_image(
            r.as_ref(),
            &repo.parse().unwrap(),
            Some(&tag.parse().unwrap()),
            spec,
        ))
        .unwrap();
}

/// `ca` signs the server (IP 127.0.0.1) and `client`; `other` is a second CA
/// that signs `rogue`, a client the server must refuse.
fn make_certs(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "other");
    make_leaf(
        dir,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    );
    make_leaf(dir, "client", "ca", "extendedKeyUsage=clientAuth");
    make_leaf(dir, "rogue", "other", "extendedKeyUsage=clientAuth");
}

/// `tests/common/tcp_forward.py`: 127.0.0.1:PORT → the podman socket,
/// optionally behind mutual TLS.
struct Forward {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Forward {
    /// `tls`: `(server cert, server key, CA clients must be signed by)`.
    fn start(socket: &Path, tls: Option<(&Path, &Path, &Path)>) -> Forward {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/tcp_forward.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(socket).arg(&port_file);
        if let Some((cert, key, ca)) = tls {
            cmd.arg("--tls").arg(cert).arg(key).arg(ca);
        }
        let log = std::fs::File::create(dir.path().join("forward.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 is missing: run `bash scripts/test.sh`, which installs it");
        let mut f = Forward {
            child,
            dir,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                f.port = port;
                return f;
            }
            if let Ok(Some(status)) = f.child.try_wait() {
                panic!("forwarder exited ({status}):\n{}", f.log());
            }
            assert!(
                Instant::now() < deadline,
                "forwarder did not start:\n{}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("forward.log")).unwrap_or_default()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_policy(
    dir: &Path,
    reg: &TestRegistry,
    host: &str,
    endpoint: &str,
    tls: Option<[&str; 3]>,
) {
    let tls = tls
        .map(|[ca, cert, key]| format!("    tls: {{ca: {ca}, cert: {cert}, key: {key}}}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "registries:\n  prod: {{url: \"http://{}\"}}\nhosts:\n  {host}:\n    endpoint: \"{endpoint}\"\n{tls}    images:\n      prune: {{older_than: 30d}}\n",
            reg.host
        ),
    )
    .unwrap();
}

fn plan_json(dir: &Path) -> (serde_json::Value, String) {
    let (code, plan, out) = json_plan(regimen().args(["plan", "--format", "json", "-C"]).arg(dir));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("panicked"), "{out}");
    (plan, out)
}

fn removals(plan: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "remove_image")
        .map(|c| c["target"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The reason `host:NAME` is unobserved (the plan must say it is incomplete
/// and plan nothing there).
fn unobserved_reason(plan: &serde_json::Value, out: &str, host: &str) -> String {
    assert_eq!(plan["complete"], false, "{out}");
    assert!(removals(plan).is_empty(), "{out}");
    plan["unobserved"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["subject"] == format!("host:{host}"))
        .unwrap_or_else(|| panic!("host:{host} must be unobserved:\n{out}"))["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

fn copy_certs(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for n in names {
        std::fs::copy(from.join(n), to.join(n)).unwrap();
    }
}

#[test]
fn hosts_over_mutual_tls_and_plain_tcp() {
    let reg = TestRegistry::start();
    let podman = Podman::start(&[&reg.host]);
    let h = &reg.host;
    push(
        &reg,
        "team/old",
        "1",
        &ImageSpec::new(&ago(60)).with_label("t", "old"),
    );
    push(
        &reg,
        "team/fresh",
        "1",
        &ImageSpec::new(&ago(1)).with_label("t", "fresh"),
    );
    for image in ["team/old:1", "team/fresh:1"] {
        podman.run(&["pull", "-q", &format!("{h}/{image}")]);
    }

    // The CA and server key stay out of the policy directory; the client
    // gets its own certificate, key and the CA that signed the server.
    let pki = tempfile::tempdir().unwrap();
    make_certs(pki.path());
    let dir = tempfile::tempdir().unwrap();
    let certs: PathBuf = dir.path().join("certs");
    copy_certs(
        pki.path(),
        &certs,
        &[
            "ca.pem",
            "client.pem",
            "client-key.pem",
            "other.pem",
            "rogue.pem",
            "rogue-key.pem",
        ],
    );
    let fwd = Forward::start(
        &podman.socket,
        Some((
            &pki.path().join("server.pem"),
            &pki.path().join("server-key.pem"),
            &pki.path().join("ca.pem"),
        )),
    );
    let good = ["certs/ca.pem", "certs/client.pem", "certs/client-key.pem"];
    write_policy(dir.path(), &reg, "tls1", &fwd.endpoint(), Some(good));

    // Plan and apply over mutual TLS: the old unused image goes, the fresh one stays.
    let (plan, out) = plan_json(dir.path());
    assert_eq!(plan["complete"], true, "{out}");
    assert_eq!(removals(&plan), vec!["host:tls1/prod/team/old:1"], "{out}");
    let (_, text) = run(regimen().args(["plan", "-C"]).arg(dir.path()));
    assert!(text.contains("host:tls1/prod/team/old:1"), "{text}");
    let (code, out) = run(regimen()
        .args(["apply", "--auto-approve", "-C"])
        .arg(dir.path()));
    assert_eq!(code, 0, "{out}");
    let images = podman.image_names();
    assert!(!images.contains(&format!("{h}/team/old:1")), "{images:?}");
    assert!(images.contains(&format!("{h}/team/fresh:1")), "{images:?}");
    assert!(fwd.log().contains("accepted: client"), "{}", fwd.log());
    let (code, out) = run(regimen()
        .args(["plan", "--detailed-exitcode", "-C"])
        .arg(dir.path()));
    assert_eq!(code, 0, "a second plan must be empty:\n{out}");

    // A client certificate from another CA: the server refuses it.
    push(
        &reg,
        "team/old2",
        "1",
        &ImageSpec::new(&ago(60)).with_label("t", "old2"),
    );
    podman.run(&["pull", "-q", &format!("{h}/team/old2:1")]);
    write_policy(
        dir.path(),
        &reg,
        "tls1",
        &fwd.endpoint(),
        Some(["certs/ca.pem", "certs/rogue.pem", "certs/rogue-key.pem"]),
    );
    let (plan, out) = plan_json(dir.path());
    let reason = unobserved_reason(&plan, &out, "tls1");
    assert!(
        reason.starts_with(&format!("host tls1: cannot reach {}: ", fwd.endpoint())),
        "{reason}"
    );
    assert!(reason.contains("UnknownCA"), "{reason}");
    assert!(
        reason.contains(&format!(
            "the engine refused the client certificate tls.cert {}",
            certs.join("rogue.pem").display()
        )),
        "{reason}"
    );
    assert!(fwd.log().contains("refused:"), "{}", fwd.log());
    let mut outputs = out;

    // The server's certificate is not signed by the CA the policy trusts.
    write_policy(
        dir.path(),
        &reg,
        "tls1",
        &fwd.endpoint(),
        Some([
            "certs/other.pem",
            "certs/client.pem",
            "certs/client-key.pem",
        ]),
    );
    let (plan, out) = plan_json(dir.path());
    let reason = unobserved_reason(&plan, &out, "tls1");
    assert!(reason.starts_with("host tls1: "), "{reason}");
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    assert!(
        reason.contains(&format!(
            "the engine's certificate is not signed by tls.ca {}",
            certs.join("other.pem").display()
        )),
        "{reason}"
    );
    outputs += &out;
    // Trusting the engine's CA system-wide changes nothing: only tls.ca counts,
    // as with `docker --tlsverify --tlscacert`.
    let (code, plan, out) = json_plan(
        regimen()
            .env("SSL_CERT_FILE", pki.path().join("ca.pem"))
            .args(["plan", "--format", "json", "-C"])
            .arg(dir.path()),
    );
    assert_eq!(code, 0, "{out}");
    let reason = unobserved_reason(&plan, &out, "tls1");
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    outputs += &out;

    // Missing or wrong files are named (relative paths resolved against the
    // policy directory) before any connection is tried.
    // The forwarder logs a refused handshake once it has ended, which may
    // be after the client that made it has exited: wait for the log to settle.
    let mut connections = fwd.log().lines().count();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = fwd.log().lines().count();
        if now == connections {
            break;
        }
        connections = now;
    }
    for (files, problem) in [
        (
            ["certs/ca.pem", "certs/client.pem", "certs/nokey.pem"],
            format!(
                "cannot read tls.key file {}: No such file or directory",
                certs.join("nokey.pem").display()
            ),
        ),
        (
            ["certs/noca.pem", "certs/client.pem", "certs/client-key.pem"],
            format!(
                "cannot read tls.ca file {}: No such file or directory",
                certs.join("noca.pem").display()
            ),
        ),
        (
            ["certs/ca.pem", "certs/client.pem", "certs/client.pem"],
            format!(
                "tls.key file {} is not a PEM private key",
                certs.join("client.pem").display()
            ),
        ),
    ] {
        write_policy(dir.path(), &reg, "tls1", &fwd.endpoint(), Some(files));
        let (plan, out) = plan_json(dir.path());
        let reason = unobserved_reason(&plan, &out, "tls1");
        assert!(reason.starts_with("host tls1: "), "{reason}");
        assert!(reason.contains(&problem), "{reason}");
        let (_, text) = run(regimen().args(["plan", "-C"]).arg(dir.path()));
        assert!(text.contains(&problem), "{text}");
        outputs += &out;
        outputs += &text;
    }
    assert_eq!(fwd.log().lines().count(), connections, "{}", fwd.log());

    // No output ever carries key material.
    let key = std::fs::read_to_string(certs.join("client-key.pem")).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    assert!(
        !outputs.contains("PRIVATE KEY") && !outputs.contains(key_body),
        "{outputs}"
    );

    // Plain tcp:// (no `tls`) to a forwarder without TLS.
    let plain = Forward::start(&podman.socket, None);
    write_policy(dir.path(), &reg, "plain", &plain.endpoint(), None);
    let (plan, out) = plan_json(dir.path());
    assert_eq!(plan["complete"], true, "{out}");
    assert_eq!(
        removals(&plan),
        vec!["host:plain/prod/team/old2:1"],
        "{out}"
    );
}
