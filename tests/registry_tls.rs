//! A registry over HTTPS with a private CA, as most in-house registries are:
//! regimen trusts the system's CAs (here `SSL_CERT_FILE`, which the system
//! trust store honours) and speaks HTTP/2 where the server offers it; a
//! registry whose certificate nobody vouches for is unobserved, with a reason
//! that names it, and nothing is planned against it.
//!
//! `docker-registry` serves TLS from a leaf made by `common::tls` (openssl).

mod common;

use std::path::Path;

use common::tls::{make_ca, make_leaf};
use common::{json_plan, regimen, run, seed_from_layout, TestRegistry};

const LAYOUT: &str = "examples/quickstart/upstream/library/alpine";

fn policy(dir: &Path, tls: &TestRegistry, plain: &TestRegistry) {
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "registries:\n  private: {{url: \"{}\"}}\n  mirror: {{url: \"{}\"}}\n\
             mirrors:\n  - {{from: private/library/alpine, to: mirror/library/alpine}}\n",
            tls.url(),
            plain.url()
        ),
    )
    .unwrap();
}

#[test]
fn private_ca_registry_over_https_and_http2() {
    let certs = tempfile::tempdir().unwrap();
    make_ca(certs.path(), "ca");
    make_leaf(
        certs.path(),
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    );
    let tls = TestRegistry::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server-key.pem"),
    );
    assert!(tls.url().starts_with("https://"));
    let plain = TestRegistry::start();
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join(LAYOUT);
    seed_from_layout(&tls, &layout, "3.19.1", "library/alpine");
    let dir = tempfile::tempdir().unwrap();
    policy(dir.path(), &tls, &plain);
    let ca = certs.path().join("ca.pem");

    // Nobody vouches for the server: the source is unknown, not empty, with
    // a reason that names the registry, the problem and the fix, after one
    // attempt (a refused certificate is not retried).
    let (_, plan, stderr) = json_plan(
        regimen()
            .args(["plan", "--format", "json", "-C"])
            .arg(dir.path())
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR"),
    );
    assert_eq!(plan["complete"], false, "{plan} {stderr}");
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan}");
    let unobserved = &plan["unobserved"][0];
    assert_eq!(unobserved["subject"], "private/library/alpine", "{plan}");
    let reason = unobserved["reason"].as_str().unwrap();
    for want in [
        "registry private",
        "UnknownIssuer",
        "SSL_CERT_FILE",
        "certs.d/127.0.0.1:",
    ] {
        assert!(reason.contains(want), "`{want}` missing from: {reason}");
    }
    assert!(!reason.contains("attempts"), "retried: {reason}");

    // Trusted through the system store: the mirror copies, then converges.
    let (code, out) = run(regimen()
        .args(["apply", "--auto-approve", "-C"])
        .arg(dir.path())
        .env("SSL_CERT_FILE", &ca));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        plain.digest("library/alpine", "3.19.1"),
        tls.digest("library/alpine", "3.19.1")
    );
    let (code, plan, stderr) = json_plan(
        regimen()
            .args(["plan", "--format", "json", "--detailed-exitcode", "-C"])
            .arg(dir.path())
            .env("SSL_CERT_FILE", &ca),
    );
    assert_eq!(code, 0, "second run plans nothing: {plan} {stderr}");

    // The server offered HTTP/2 (ALPN) and regimen took it.
    let log = tls.log();
    // Access-log lines (combined format) of regimen's requests.
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains("\"regimen/"))
        .collect();
    assert!(!ours.is_empty(), "no request from regimen in:\n{log}");
    assert!(
        ours.iter().all(|l| l.contains("HTTP/2.0")),
        "regimen's requests were not HTTP/2:\n{}",
        ours.join("\n")
    );
}
