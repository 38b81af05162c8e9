//! `regimen inventory` (issue 6) against a real `docker-registry` seeded
//! with annotated images, an SBOM and scan reports as referrers, and a real
//! `podman system service` host: JSON and CSV contents, the text table as a
//! snapshot, and the HTML report rendered by headless Chromium.

mod common;

use std::path::Path;
use std::process::Command;

use common::podman::Podman;
use common::{block_on, open, regimen, TestRegistry};
use regimen::model::{Digest, Timestamp};
use regimen::testkit::{push_image, push_referrer, push_scan_report, ImageSpec};

const SARIF: &str = "application/sarif+json";
const TRIVY: &str = "application/vnd.aquasec.trivy.report+json";
const CYCLONEDX: &str = "application/vnd.cyclonedx+json";

fn days_ago(days: i64) -> Timestamp {
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let now = *NOW.get_or_init(|| Timestamp::now().0);
    Timestamp(now - days * 86_400)
}

/// A scan-report fixture with its own scan time moved to `days` ago.
fn report(name: &str, days: i64) -> String {
    let t = days_ago(days).to_rfc3339();
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/scans")
            .join(name),
    )
    .unwrap()
    .replace("\"2026-03-02T09:14:27.412705Z\"", &format!("\"{t}\""))
}

fn push(reg: &TestRegistry, repo: &str, tags: &[&str], spec: &ImageSpec) -> Digest {
    let r = open(&reg.host);
    block_on(async {
        let rp = repo.parse().unwrap();
        let mut d = None;
        for t in tags {
            d = Some(
                push_image(r.as_ref(), &rp, Some(&t.parse().unwrap()), spec)
                    .await
                    .unwrap(),
            );
        }
        d.unwrap()
    })
}

/// prod/team/api: `1.0` old, annotated, off-policy base, an SBOM and a
/// critical Trivy report; `1.1`+`stable` fresh, owner label, allowed base,
/// an older critical report and a newer low SARIF one (the latest wins);
/// `2.0` with no annotations and no report.
fn seed(reg: &TestRegistry, runnable: Option<Vec<u8>>) {
    let r = open(&reg.host);
    let old = ImageSpec::new(&days_ago(400).to_rfc3339())
        .with_layer("v", "api 1.0")
        .with_annotation(
            "org.opencontainers.image.authors",
            "API team <api@example.com>",
        )
        .with_annotation(
            "org.opencontainers.image.source",
            "https://git.example.com/team/api",
        )
        .with_annotation(
            "org.opencontainers.image.base.name",
            "docker.io/library/debian:12",
        );
    let d10 = push(reg, "team/api", &["1.0"], &old);
    let mut fresh = ImageSpec::new(&days_ago(3).to_rfc3339())
        .with_layer("v", "api 1.1")
        .with_label("com.example.team", "payments")
        .with_label("org.opencontainers.image.base.name", "prod/base/debian:12");
    if let Some(busybox) = runnable {
        fresh = fresh.with_command("bin/busybox", busybox, &["/bin/busybox", "sleep", "3600"]);
    }
    let d11 = push(reg, "team/api", &["1.1", "stable"], &fresh);
    push(
        reg,
        "team/api",
        &["2.0"],
        &ImageSpec::new(&days_ago(1).to_rfc3339()).with_layer("v", "api 2.0"),
    );
    block_on(async {
        let rp = "team/api".parse().unwrap();
        push_referrer(
            r.as_ref(),
            &rp,
            &d10,
            CYCLONEDX,
            br#"{"bomFormat":"CycloneDX"}"#,
        )
        .await
        .unwrap();
        // (subject, artifact type, fixture, days since the scan, `created`)
        for (subject, ty, fixture, days, created) in [
            (&d10, TRIVY, "trivy-critical.json", 10, None),
            (&d11, TRIVY, "trivy-critical.json", 5, None),
            (&d11, SARIF, "trivy-low.sarif.json", 1, Some(days_ago(1))),
        ] {
            push_scan_report(
                r.as_ref(),
                &rp,
                subject,
                ty,
                report(fixture, days).as_bytes(),
                created,
            )
            .await
            .unwrap();
        }
    });
}

fn write_policy(dir: &Path, reg: &TestRegistry, hosts: &str) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            r#"registries:
  prod: {{url: "http://{host}"}}
retention:
  - name: api-cleanup
    repos: [prod/team/api]
    delete: {{older_than: 3650d}}
policies:
  registries: [prod]
  base_images: ["prod/base/*"]
  max_age: 180d
  owner_label: com.example.team
{hosts}"#,
            host = reg.host
        ),
    )
    .unwrap();
}

fn inventory(dir: &Path, format: &str) -> String {
    let out = regimen()
        .args(["inventory", "-C"])
        .arg(dir)
        .args(["--format", format])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inventory {format}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn row<'a>(inv: &'a serde_json::Value, location: &str, tag: &str) -> &'a serde_json::Value {
    inv["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["location"] == location && r["tags"].as_array().unwrap().iter().any(|t| t == tag)
        })
        .unwrap_or_else(|| panic!("no row {location} {tag} in {inv:#}"))
}

fn policies(r: &serde_json::Value) -> Vec<String> {
    r["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v["kind"].as_str() {
            Some(k) => format!("{}({k})", v["policy"].as_str().unwrap()),
            None => v["policy"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn registry_inventory_in_every_format() {
    let reg = TestRegistry::start();
    seed(&reg, None);
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &reg, "");

    // JSON: the documented shape and the facts.
    let inv: serde_json::Value = serde_json::from_str(&inventory(dir.path(), "json")).unwrap();
    assert_eq!(inv["format_version"], "1");
    assert_eq!(inv["complete"], true, "{inv:#}");
    assert_eq!(inv["images"].as_array().unwrap().len(), 3);
    assert_eq!(inv["summary"]["images"], 3);
    assert_eq!(inv["summary"]["violating"], 2);
    assert_eq!(inv["summary"]["locations"][0]["location"], "prod");
    assert_eq!(inv["summary"]["locations"][0]["images"], 3);

    let old = row(&inv, "prod/team/api", "1.0");
    assert_eq!(old["owner"], "API team <api@example.com>");
    assert_eq!(old["source"], "https://git.example.com/team/api");
    assert_eq!(old["base_image"], "docker.io/library/debian:12");
    assert_eq!(old["platforms"], serde_json::json!([]));
    assert_eq!(old["age_seconds"].as_i64().unwrap() / 86_400, 400);
    assert!(old["size"].as_u64().unwrap() > 0);
    assert_eq!(
        old["referrers"],
        serde_json::json!({"sbom": 1, "signature": 0, "scan": 1, "other": 0})
    );
    assert_eq!(old["scan"]["status"], "scanned");
    assert_eq!(old["scan"]["worst_severity"], "critical");
    assert_eq!(old["scan"]["tools"], serde_json::json!(["trivy"]));
    assert_eq!(policies(old), ["base_images(not_allowed)", "max_age"]);
    assert!(old.get("containers").is_none());

    let fresh = row(&inv, "prod/team/api", "stable");
    assert_eq!(fresh["tags"], serde_json::json!(["1.1", "stable"]));
    assert_eq!(fresh["owner"], "payments", "owner_label wins over authors");
    assert_eq!(fresh["source"], serde_json::Value::Null);
    assert_eq!(fresh["base_image"], "prod/base/debian:12");
    assert_eq!(fresh["referrers"]["scan"], 2);
    // The newer (SARIF, low) report is the latest, not the older critical one.
    assert_eq!(fresh["scan"]["worst_severity"], "low", "{fresh:#}");
    assert_eq!(fresh["scan"]["findings"], 2);
    assert_eq!(policies(fresh), Vec::<String>::new());

    let bare = row(&inv, "prod/team/api", "2.0");
    assert_eq!(bare["scan"]["status"], "no_report");
    assert_eq!(bare["scan"]["worst_severity"], serde_json::Value::Null);
    assert_eq!(bare["owner"], serde_json::Value::Null);
    assert_eq!(policies(bare), ["base_images(missing)"]);

    // CSV: header, then one row per image per location.
    let csv = inventory(dir.path(), "csv");
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert_eq!(
        lines[0],
        "location,kind,tags,digest,created,age_days,size_bytes,platforms,base_image,owner,source,referrers,worst_severity,verdicts,violations,containers"
    );
    assert!(
        lines[1].starts_with("prod/team/api,registry,1.0,sha256:"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains(",400,"), "{}", lines[1]);
    assert!(
        lines[1].contains(",docker.io/library/debian:12,API team <api@example.com>,https://git.example.com/team/api,sbom scan,critical,base_images(not_allowed) max_age,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("prod/team/api,registry,1.1 stable,"),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains(",payments,unknown,scan×2,low,ok,,"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains(",unknown,unknown,unknown,none,no report,base_images(missing),"),
        "{}",
        lines[3]
    );

    // Text: the table, volatile digests redacted.
    let text = inventory(dir.path(), "text");
    let redacted = regex::Regex::new("sha256:[0-9a-f]{12}")
        .unwrap()
        .replace_all(&text, "sha256:<digest>    ");
    insta::assert_snapshot!("inventory_text", redacted);

    // HTML: one file that headless Chromium renders.
    let html_path = dir.path().join("inventory.html");
    let out = regimen()
        .args(["inventory", "-C"])
        .arg(dir.path())
        .args(["--format", "html", "--out"])
        .arg(&html_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    for external in ["src=", "href=", "@import", "url(", "<link"] {
        assert!(
            !html.contains(external),
            "the report loads nothing: {external}"
        );
    }
    assert!(!html.contains("<script"), "no scripts");
    check_in_chromium(&html_path);
}

/// A headless Chromium (Debian's `chromium`): the screenshot is a real
/// picture and the DOM has the summary and the table rows. Missing Chromium
/// is a failure, like every other tool the tests drive.
fn check_in_chromium(html: &Path) {
    let Some(bin) = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        panic!("chromium is missing: run `bash scripts/test.sh`, which installs it");
    };
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("inventory.png");
    let url = format!("file://{}", html.display());
    let chromium = |extra: &[&str]| {
        let mut c = Command::new(bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .args(extra)
        .arg(&url);
        c.output().unwrap()
    };
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "screenshot is only {} bytes", png.len());
    if let Ok(keep) = std::env::var("REGIMEN_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    assert!(dom.contains("id=\"summary\""), "{dom}");
    assert!(dom.contains("Locations") && dom.contains("Age") && dom.contains("Violations"));
    assert!(dom.contains("base_images(missing)"), "{dom}");
    assert_eq!(dom.matches("<tr class=").count(), 3, "{dom}");
}

#[test]
fn host_images_with_their_containers() {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: run `bash scripts/test.sh` (installs busybox-static)");
    let reg = TestRegistry::start();
    seed(&reg, Some(busybox));
    let podman = Podman::start(&[&reg.host]);
    let h = &reg.host;
    podman.run(&["pull", "-q", &format!("{h}/team/api:1.0")]);
    podman.start_container("api", &format!("{h}/team/api:stable"));
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &reg,
        &format!("hosts:\n  build-01: {{endpoint: \"{}\"}}\n  gone: {{endpoint: \"unix:///nonexistent/docker.sock\"}}\n", podman.endpoint()),
    );

    let inv: serde_json::Value = serde_json::from_str(&inventory(dir.path(), "json")).unwrap();
    // The unreachable host is unobserved, not empty.
    assert_eq!(inv["complete"], false);
    let unobserved: Vec<&str> = inv["unobserved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["subject"].as_str().unwrap())
        .collect();
    assert_eq!(unobserved, ["host:gone"]);

    let running = row(&inv, "host:build-01", "prod/team/api:stable");
    assert_eq!(running["kind"], "host");
    assert!(running["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(running["containers"][0]["name"], "api");
    assert_eq!(running["containers"][0]["running"], true);
    assert!(
        running["containers"][0]["running_for_seconds"]
            .as_i64()
            .unwrap()
            >= 0
    );
    // From the registry copy it was pulled as.
    assert_eq!(running["scan"]["worst_severity"], "low", "{running:#}");
    assert_eq!(running["owner"], "payments");
    assert_eq!(policies(running), Vec::<String>::new());

    let old = row(&inv, "host:build-01", "prod/team/api:1.0");
    assert_eq!(old["containers"], serde_json::json!([]));
    assert_eq!(policies(old), ["max_age(host_image)"]);
    assert_eq!(old["scan"]["worst_severity"], "critical");

    let text = inventory(dir.path(), "text");
    eprintln!("{text}");
    assert!(text.contains("api (running "), "{text}");
    assert!(
        text.contains("! max_age(host_image) host:build-01/prod/team/api:1.0: created 400d ago"),
        "{text}"
    );
    assert!(text.contains("? unobserved host:gone: "), "{text}");
    assert!(text.contains("incomplete"), "{text}");

    let csv = inventory(dir.path(), "csv");
    let host_lines: Vec<&str> = csv
        .split("\r\n")
        .filter(|l| l.starts_with("host:build-01,host,"))
        .collect();
    assert_eq!(host_lines.len(), 2, "{csv}");
    assert!(
        host_lines.iter().any(|l| l.contains("api (running ")),
        "{csv}"
    );
}
