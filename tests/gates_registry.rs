//! Vulnerability gates and `policies` on a real `docker-registry` (issue 6's
//! "How we will know"): scan reports from `testdata/scans/` attached as
//! referrers (the `sha256-<hex>` tag schema, since Distribution 2.8 has no
//! referrers API), then `regimen plan` and `apply` as a user runs them.

mod common;

use common::{block_on, json_plan, open, regimen, run, TestRegistry};
use regimen::model::{Digest, Timestamp};
use regimen::testkit::{push_image, push_scan_report, ImageSpec};

const SARIF: &str = "application/sarif+json";
const TRIVY: &str = "application/vnd.aquasec.trivy.report+json";
const GRYPE: &str = "application/vnd.anchore.grype+json";

fn days_ago(days: i64) -> Timestamp {
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let now = *NOW.get_or_init(|| Timestamp::now().0);
    Timestamp(now - days * 86_400)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/scans")
            .join(name),
    )
    .unwrap()
}

/// A fixture with its scan time moved to `days` ago (reports in the
/// fixtures are dated; gates compare against the real clock).
fn dated(name: &str, days: i64) -> String {
    let t = days_ago(days).to_rfc3339();
    fixture(name)
        .replace("\"2026-03-02T09:14:27.412705Z\"", &format!("\"{t}\""))
        .replace("\"2026-03-02T10:01:44.918273+01:00\"", &format!("\"{t}\""))
}

/// A tag with an image 3 days old; each report is (artifact type, bytes,
/// referrer `created` annotation).
fn push(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    spec: ImageSpec,
    reports: &[(&str, String, Option<Timestamp>)],
) -> Digest {
    let r = open(&reg.host);
    block_on(async {
        let rp = repo.parse().unwrap();
        let d = push_image(r.as_ref(), &rp, Some(&tag.parse().unwrap()), &spec)
            .await
            .unwrap();
        for (ty, bytes, created) in reports {
            push_scan_report(r.as_ref(), &rp, &d, ty, bytes.as_bytes(), *created)
                .await
                .unwrap();
        }
        d
    })
}

fn image(repo: &str, tag: &str) -> ImageSpec {
    ImageSpec::new(&days_ago(3).to_rfc3339()).with_layer("v", format!("{repo} {tag}"))
}

fn write_policy(dir: &std::path::Path, yaml: &str) {
    std::fs::write(dir.join("policy.yaml"), yaml).unwrap();
}

fn blocked(plan: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    plan["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["subject"].as_str().unwrap().to_string(),
                b["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn copies(plan: &serde_json::Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "copy")
        .map(|c| c["target"].as_str().unwrap().to_string())
        .collect()
}

/// `regimen plan --format json` on the policy in `dir`, the plan every test reads.
fn plan_json(dir: &std::path::Path) -> (i32, serde_json::Value, String) {
    json_plan(
        regimen()
            .arg("plan")
            .arg("-C")
            .arg(dir)
            .args(["--format", "json"]),
    )
}

/// `regimen apply --auto-approve` on the policy in `dir`, as both tests apply it.
fn apply(dir: &std::path::Path) -> (i32, String) {
    run(regimen()
        .arg("apply")
        .arg("-C")
        .arg(dir)
        .arg("--auto-approve"))
}

#[test]
fn scan_reports_gate_promotions() {
    let reg = TestRegistry::start();
    // team/api: max_severity high, reports at most 7 days old.
    push(
        &reg,
        "team/api",
        "1.5.0",
        image("api", "1.5.0"),
        &[(TRIVY, dated("trivy-critical.json", 1), None)],
    );
    push(
        &reg,
        "team/api",
        "1.4.9",
        image("api", "1.4.9"),
        &[(SARIF, fixture("trivy-low.sarif.json"), Some(days_ago(1)))],
    );
    push(&reg, "team/api", "1.4.8", image("api", "1.4.8"), &[]);
    push(
        &reg,
        "team/api",
        "1.4.7",
        image("api", "1.4.7"),
        &[(SARIF, fixture("trivy-low.sarif.json"), Some(days_ago(30)))],
    );
    push(
        &reg,
        "team/api",
        "1.4.6",
        image("api", "1.4.6"),
        &[(SARIF, "{\"runs\": 42}".into(), Some(days_ago(1)))],
    );
    // team/worker: two scanners required.
    push(
        &reg,
        "team/worker",
        "2.0.0",
        image("worker", "2.0.0"),
        &[(GRYPE, dated("grype-high.json", 1), None)],
    );
    push(
        &reg,
        "team/worker",
        "2.0.1",
        image("worker", "2.0.1"),
        &[
            (GRYPE, dated("grype-high.json", 1), None),
            (SARIF, fixture("trivy-low.sarif.json"), Some(days_ago(1))),
        ],
    );
    // team/tools: medium at most; the one high finding has no fix.
    for repo in ["team/tools", "team/tools-strict"] {
        push(
            &reg,
            repo,
            "3.0.0",
            image("tools", "3.0.0"),
            &[(GRYPE, dated("grype-high.json", 1), None)],
        );
    }

    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &format!(
            r#"registries:
  staging: {{url: "{url}"}}
promotions:
  - name: api
    from: staging/team/api
    to: staging/prod/api
    require:
      min_age: 1d
      vulnerabilities: {{max_severity: high, max_report_age: 7d}}
  - name: worker
    from: staging/team/worker
    to: staging/prod/worker
    require:
      vulnerabilities: {{max_severity: high, scanners: 2}}
  - name: tools
    from: staging/team/tools
    to: staging/prod/tools
    require:
      vulnerabilities: {{max_severity: medium, ignore_unfixed: true}}
  - name: tools-strict
    from: staging/team/tools-strict
    to: staging/prod/tools-strict
    require:
      vulnerabilities: {{max_severity: medium}}
"#,
            url = reg.url()
        ),
    );
    let (code, plan, out) = plan_json(dir.path());
    assert_eq!(code, 0, "{out}");
    assert_eq!(plan["complete"], true, "{out}");
    let b = blocked(&plan);
    // The fixture's UNKNOWN-severity finding counts as critical too.
    assert_eq!(
        b["staging/team/api:1.5.0"],
        "critical vulnerabilities CVE-2026-1234 (trivy), CVE-2025-9999 (trivy, unknown severity)",
        "{out}"
    );
    assert_eq!(b["staging/team/api:1.4.8"], "no scan report");
    assert_eq!(
        b["staging/team/api:1.4.7"],
        "scan report from trivy is too old: 30d old, max_report_age 7d"
    );
    assert!(
        b["staging/team/api:1.4.6"].starts_with("scan report unreadable: report sha256:")
            && b["staging/team/api:1.4.6"].ends_with("SARIF `runs` is not a list"),
        "{}",
        b["staging/team/api:1.4.6"]
    );
    assert_eq!(
        b["staging/team/worker:2.0.0"],
        "scan reports from 1 scanner (grype), scanners: 2 required"
    );
    assert_eq!(
        b["staging/team/tools-strict:3.0.0"],
        "high vulnerability CVE-2025-0665 (grype)"
    );
    assert_eq!(b.len(), 6, "{b:#?}");
    let mut c = copies(&plan);
    c.sort();
    assert_eq!(
        c,
        [
            "staging/prod/api:1.4.9",
            "staging/prod/tools:3.0.0",
            "staging/prod/worker:2.0.1"
        ]
    );

    // The text plan shows the blocked reason as SPEC's example does.
    let (code, text) = run(regimen().arg("plan").arg("-C").arg(dir.path()));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines().any(|l| l.contains("! blocked")
            && l.contains("staging/team/api:1.5.0")
            && l.contains("critical vulnerabilities CVE-2026-1234 (trivy)")),
        "{text}"
    );

    // Apply promotes the clean ones with their reports; a second plan only
    // has the same blocked items left.
    let (code, out) = apply(dir.path());
    assert_eq!(code, 0, "{out}");
    let (code, again, out) = json_plan(regimen().arg("plan").arg("-C").arg(dir.path()).args([
        "--format",
        "json",
        "--detailed-exitcode",
    ]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(blocked(&again), b);
    let promoted = reg.tags("prod/api").unwrap_or_default();
    assert!(promoted.contains(&"1.4.9".to_string()), "{promoted:?}");
}

#[test]
fn policy_violations_show_in_every_format_and_fail_exits_1() {
    let reg = TestRegistry::start();
    let base_ok = format!("{}/mirror/debian:12-slim", reg.host);
    push(
        &reg,
        "app",
        "good",
        image("app", "good").with_annotation("org.opencontainers.image.base.name", &base_ok),
        &[],
    );
    push(&reg, "app", "nobase", image("app", "nobase"), &[]);
    push(
        &reg,
        "app",
        "old",
        ImageSpec::new("2020-01-01T00:00:00Z")
            .with_layer("v", "old")
            .with_label(
                "org.opencontainers.image.base.name",
                "docker.io/library/debian:10",
            ),
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = |on: &str| {
        format!(
            r#"registries:
  prod: {{url: "{url}"}}
retags:
  - tag: prod/app:stable
    from: prod/app:good
policies:
  base_images: ["prod/mirror/*"]
  max_age: 180d
  on_violation: {on}
"#,
            url = reg.url()
        )
    };
    write_policy(dir.path(), &policy("fail"));
    let (code, plan, out) = plan_json(dir.path());
    assert_eq!(code, 1, "on_violation: fail exits 1\n{out}");
    let v: Vec<(String, String, String)> = plan["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["policy"].as_str().unwrap().into(),
                v["kind"].as_str().unwrap_or("").into(),
                v["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        v,
        [
            s("base_images", "missing", "prod/app:nobase"),
            s("base_images", "not_allowed", "prod/app:old"),
            s("max_age", "", "prod/app:old"),
        ],
        "{out}"
    );
    assert_eq!(plan["summary"]["violations"], 3);

    // Text and Markdown: the rendered violations (ages and the digests of
    // images built relative to now vary with the clock).
    let varying = regex::Regex::new(r"created \d+d ago|sha256:[0-9a-f]{12}").unwrap();
    let redact = |s: &str| {
        varying
            .replace_all(s, |c: &regex::Captures| {
                if c[0].starts_with("created") {
                    "created Nd ago"
                } else {
                    "sha256:DIGEST"
                }
            })
            .into_owned()
    };
    let (code, text) = run(regimen().arg("plan").arg("-C").arg(dir.path()));
    assert_eq!(code, 1, "{text}");
    let text = redact(&text);
    insta::assert_snapshot!("violations_text", text);
    let (code, md) = run(regimen()
        .arg("plan")
        .arg("-C")
        .arg(dir.path())
        .args(["--format", "markdown"]));
    assert_eq!(code, 1, "{md}");
    let md = redact(&md);
    insta::assert_snapshot!("violations_markdown", md);

    // A saved plan applied under fail: exit 1, and why, with the violations
    // (this run never showed them).
    let planfile = dir.path().join("plan.json");
    let (code, out) = run(regimen()
        .arg("plan")
        .arg("-C")
        .arg(dir.path())
        .arg("--out")
        .arg(&planfile));
    assert_eq!(code, 1, "{out}");
    let (code, out) = run(regimen()
        .arg("apply")
        .arg("-C")
        .arg(dir.path())
        .arg(&planfile));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    assert!(
        out.contains("3 policy violations: `on_violation: fail` makes the exit status 1."),
        "{out}"
    );
    assert!(
        out.contains("! violation base_images(missing) prod/app:nobase: no base image"),
        "{out}"
    );

    // apply under fail, nothing left to do: exit 1, and why.
    let (code, out) = apply(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("3 policy violations: `on_violation: fail`"),
        "{out}"
    );

    // `run --once` under fail logs each violation, and why it failed.
    let (code, out) = run(regimen()
        .args(["--log-format", "text", "run", "--once", "-C"])
        .arg(dir.path()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("violation: base_images(missing) prod/app:nobase: no base image"),
        "{out}"
    );
    assert!(
        out.contains("3 policy violations (logged above) under on_violation: fail"),
        "{out}"
    );

    // warn: same violations, exit 0.
    write_policy(dir.path(), &policy("warn"));
    let (code, plan, out) = plan_json(dir.path());
    assert_eq!(code, 0, "{out}");
    assert_eq!(plan["summary"]["violations"], 3, "{out}");
}

/// The `sha256-<hex>` tag is only a list anyone can write: a report's type
/// is what its own manifest says, not what its entry there claims. A
/// critical report whose entry leaves out (or lies about) its type must
/// still block; an entry claiming a report type for another artifact must
/// not count as a report.
#[test]
fn report_types_come_from_the_manifests_not_the_tag_list() {
    let reg = TestRegistry::start();
    let hidden = push(
        &reg,
        "team/api",
        "1.0.0",
        image("api", "1.0.0"),
        &[
            (SARIF, fixture("trivy-low.sarif.json"), Some(days_ago(1))),
            (TRIVY, dated("trivy-critical.json", 1), None),
        ],
    );
    let faked = push(
        &reg,
        "team/api",
        "2.0.0",
        image("api", "2.0.0"),
        &[("application/x-other", "{}".into(), Some(days_ago(1)))],
    );
    let rewrite = |subject: &Digest, edit: &dyn Fn(&mut serde_json::Value)| {
        let tag = format!("sha256-{}", subject.as_str().trim_start_matches("sha256:"));
        let mut index: serde_json::Value =
            serde_json::from_str(&reg.raw_manifest("team/api", &tag)).unwrap();
        for entry in index["manifests"].as_array_mut().unwrap() {
            edit(entry);
        }
        let bytes = serde_json::to_vec(&index).unwrap();
        reg.push_manifest(
            "team/api",
            &tag,
            "application/vnd.oci.image.index.v1+json",
            &bytes,
        );
    };
    rewrite(&hidden, &|e| {
        if e["artifactType"] == TRIVY {
            e.as_object_mut().unwrap().remove("artifactType");
        }
    });
    rewrite(&faked, &|e| e["artifactType"] = SARIF.into());

    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &format!(
            r#"registries:
  staging: {{url: "{url}"}}
promotions:
  - name: api
    from: staging/team/api
    to: staging/prod/api
    require:
      vulnerabilities: {{max_severity: high}}
"#,
            url = reg.url()
        ),
    );
    let (code, plan, out) = plan_json(dir.path());
    assert_eq!(code, 0, "{out}");
    let b = blocked(&plan);
    assert!(
        b["staging/team/api:1.0.0"].starts_with("critical vulnerabilities CVE-2026-1234 (trivy)"),
        "{out}"
    );
    assert_eq!(b["staging/team/api:2.0.0"], "no scan report", "{out}");
    assert!(copies(&plan).is_empty(), "{out}");
}
