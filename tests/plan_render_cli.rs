//! What `regimen plan` prints, through the CLI on OCI-layout registries:
//! no claim of a match when something could not be read, every tag and
//! name a removal takes, retention counts also when nothing changes, and a
//! saved plan's apply hint that works when pasted.

mod common;

use common::{ago, tag as t};

use common::oci_tags as tags;

use std::path::Path;

use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::testkit::{push_image, ImageSpec};

use common::{regimen, run};

const NO_CHANGES: &str = "No changes. Registries and hosts match the policy.";

/// stdout alone (the plan), stderr alone (the hint), and the exit code.
fn plan_out(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = regimen()
        .arg("plan")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `dev/team/api` under `root/dev`: `pr-2` and `pr-2-alias` on one old
/// image, `pr-1` alone on another old one, `main` young.
async fn seed_shared_tags(root: &Path) -> OciLayout {
    let reg = OciLayout::new("dev".parse().unwrap(), root.join("dev"));
    let api: Repo = "team/api".parse().unwrap();
    let img = |n: &str, days: i64| ImageSpec::new(&ago(days)).with_layer("v", n.to_string());
    push_image(&reg, &api, Some(&t("pr-1")), &img("1", 120))
        .await
        .unwrap();
    for tag in ["pr-2", "pr-2-alias"] {
        push_image(&reg, &api, Some(&t(tag)), &img("2", 100))
            .await
            .unwrap();
    }
    push_image(&reg, &api, Some(&t("main")), &img("3", 1))
        .await
        .unwrap();
    reg
}

const PR_CLEANUP: &str = "registries:\n  dev: {url: oci:dev}\n\
     retention:\n  - name: pr-cleanup\n    repos: [dev/team/api]\n\
     \x20   delete: {older_than: 30d, tags: {regex: \"^pr-\"}}\n";

#[test]
fn incomplete_plan_without_changes_does_not_claim_a_match() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // dev/team/api is a layout whose index cannot be parsed; the host's socket does not exist.
    let api = dir.join("dev/team/api");
    std::fs::create_dir_all(&api).unwrap();
    std::fs::write(api.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(api.join("index.json"), "{not json").unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\n\
         mirrors:\n  - {from: dev/team/api, to: dev/mirror/api}\n\
         hosts:\n  gone: {endpoint: \"unix:///nonexistent/regimen-test.sock\"}\n",
    )
    .unwrap();
    let said = "No changes in what could be read; 1 repository and 1 host could not be observed";

    let (code, text, err) = plan_out(dir, &["--detailed-exitcode"]);
    // SPEC: 2 only when the plan has changes; an incomplete plan without
    // changes exits 0, and says loudly that it is incomplete.
    assert_eq!(code, 0, "{text}{err}");
    assert!(!text.contains("match the policy"), "{text}");
    assert!(
        text.contains(&format!("{said} (listed above).\n")),
        "{text}"
    );
    assert!(text.contains("The plan is incomplete"), "{text}");
    assert!(
        text.contains("? dev/team/api") && text.contains("? host:gone"),
        "{text}"
    );

    let (code, md, err) = plan_out(dir, &["--format", "markdown", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{md}{err}");
    assert!(!md.contains("match the policy"), "{md}");
    assert!(md.contains(&format!("{said} (listed below).\n")), "{md}");
    assert!(md.contains("> **Warning:** The plan is incomplete"), "{md}");

    let (code, json, _) = plan_out(dir, &["--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_shows_every_tag_that_goes_with_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed_shared_tags(tmp.path()).await;
    std::fs::write(tmp.path().join("policy.yaml"), PR_CLEANUP).unwrap();

    let (code, text, err) = plan_out(tmp.path(), &[]);
    assert_eq!(code, 0, "{text}{err}");
    let line = text
        .lines()
        .find(|l| l.starts_with("  - delete dev/team/api:pr-2 "))
        .unwrap_or_else(|| panic!("no delete of pr-2:\n{text}"));
    assert!(
        line.ends_with("(100d old; also removes tag pr-2-alias)"),
        "{line}"
    );
    assert!(
        !text.contains("delete dev/team/api:pr-2-alias"),
        "one delete for the image: {text}"
    );
    let single = text
        .lines()
        .find(|l| l.starts_with("  - delete dev/team/api:pr-1 "))
        .unwrap_or_else(|| panic!("no delete of pr-1:\n{text}"));
    assert!(
        single.ends_with("(120d old)"),
        "nothing else goes: {single}"
    );

    let (_, md, _) = plan_out(tmp.path(), &["--format", "markdown"]);
    let line = md
        .lines()
        .find(|l| l.starts_with("- delete dev/team/api:pr-2 "))
        .unwrap_or_else(|| panic!("no delete of pr-2:\n{md}"));
    assert!(
        line.ends_with("(100d old; also removes tag pr-2-alias)"),
        "{line}"
    );

    // What the plan said is what goes.
    let (code, out) = run(regimen()
        .args(["apply", "--auto-approve", "-C"])
        .arg(tmp.path()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/api").await, ["main"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_counts_and_keep_reasons_show_when_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let api: Repo = "team/api".parse().unwrap();
    for i in 0..10 {
        let spec = ImageSpec::new(&ago(100 + i)).with_layer("v", format!("{i}"));
        push_image(&reg, &api, Some(&t(&format!("v{i}"))), &spec)
            .await
            .unwrap();
    }
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\n\
         retention:\n  - name: dev-cleanup\n    repos: [dev/team/api]\n\
         \x20   delete: {older_than: 30d}\n    keep: {newest: 10}\n",
    )
    .unwrap();

    // Without -v: the sentence alone, as before.
    let (code, text, err) = plan_out(tmp.path(), &["--detailed-exitcode"]);
    assert_eq!(code, 0, "{text}{err}");
    assert_eq!(text, format!("{NO_CHANGES}\n"));

    for v in ["-v", "-vv"] {
        let (code, text, err) = plan_out(tmp.path(), &[v, "--detailed-exitcode"]);
        assert_eq!(code, 0, "{text}{err}");
        assert!(
            text.contains("  dev-cleanup: deletes 0 of 10 tags in dev/team/api\n"),
            "{v}: {text}"
        );
        assert_eq!(
            text.matches("keep.newest: one of the 10 newest images (dev-cleanup)")
                .count(),
            10,
            "{v}: {text}"
        );
        assert!(text.ends_with(&format!("\n{NO_CHANGES}\n")), "{v}: {text}");
        if v == "-v" {
            insta::assert_snapshot!("no_changes_retention_verbose", text);
        }
    }

    let (code, md, err) = plan_out(tmp.path(), &["--format", "markdown"]);
    assert_eq!(code, 0, "{md}{err}");
    assert!(md.contains(NO_CHANGES), "{md}");
    assert!(
        md.contains("| dev-cleanup | `dev/team/api` | 0 of 10 tags |\n"),
        "{md}"
    );
    insta::assert_snapshot!("no_changes_retention_markdown", md);
}

/// The hint after `Apply it with: `, run by `sh` from `cwd` with the
/// regimen under test in place of `regimen`.
fn run_hint(hint: &str, cwd: &Path) -> (i32, String) {
    let rest = hint
        .strip_prefix("regimen ")
        .unwrap_or_else(|| panic!("hint is not a regimen command: {hint}"));
    let bin = env!("CARGO_BIN_EXE_regimen");
    assert!(!bin.contains('\''), "{bin}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{bin}' {rest}"))
        .current_dir(cwd)
        .env("DOCKER_CONFIG", common::empty_docker_config())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn hint_of(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|l| l.split_once("Apply it with: ").map(|(_, h)| h))
        .unwrap_or_else(|| panic!("no apply hint in: {stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_saved_plan_hint_names_the_policy_dir_and_works_when_pasted() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("my policy");
    let reg = seed_shared_tags(&policy).await;
    std::fs::write(policy.join("policy.yaml"), PR_CLEANUP).unwrap();
    std::fs::create_dir_all(tmp.path().join("saved plans")).unwrap();

    let out = regimen()
        .current_dir(tmp.path())
        .args(["plan", "-C", "my policy", "--out", "saved plans/it's.json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let hint = hint_of(&stderr);
    assert_eq!(
        hint,
        r"regimen apply -C 'my policy' 'saved plans/it'\''s.json'"
    );
    // Pasted into a shell where the plan was made, it applies that plan to that policy.
    let (code, out) = run_hint(hint, tmp.path());
    assert_eq!(code, 0, "{hint}: {out}");
    assert!(out.contains("Apply complete: 2 done"), "{out}");
    assert_eq!(tags(&reg, "team/api").await, ["main"]);
}

#[test]
fn the_saved_plan_hint_has_no_dir_for_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\n",
    )
    .unwrap();
    let out = regimen()
        .current_dir(tmp.path())
        .args(["plan", "--out", "plan.json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(hint_of(&stderr), "regimen apply plan.json");
    let (code, out) = run_hint(hint_of(&stderr), tmp.path());
    assert_eq!(code, 0, "{out}");
}
