//! Pull-request and scale-out features on the CLI: `plan --base REV` (policy
//! diff, introduced vs drift), `validate --format github`, and `--shard`
//! (N shard plans together are exactly the unsharded plan).

mod common;

use std::path::{Path, PathBuf};

use common::{git, json_plan, regimen, run};

/// A Git repository whose `policy/` folder reads the quickstart's committed
/// upstream layouts and writes to a local layout.
fn repo() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    let upstream = std::fs::canonicalize("examples/quickstart/upstream").unwrap();
    std::fs::write(
        dir.join("registries.yaml"),
        format!(
            "registries:\n  upstream: {{url: \"oci:{}\"}}\n  local: {{url: \"oci:out\"}}\n",
            upstream.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("mirrors.yaml"),
        "mirrors:\n  - name: alpine\n    from: upstream/library/alpine\n    to: local/mirror/alpine\n    tags: [\"3.18.0\"]\n",
    )
    .unwrap();
    git(tmp.path(), &["init", "-q", "-b", "main"]);
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-q", "-m", "base"]);
    (tmp, dir)
}

/// The working tree's change: one more tag, a new retag.
fn change(dir: &Path) {
    std::fs::write(
        dir.join("mirrors.yaml"),
        "mirrors:\n  - name: alpine\n    from: upstream/library/alpine\n    to: local/mirror/alpine\n    tags: [\"3.18.0\", \"3.19.1\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("retags.yaml"),
        "retags:\n  - tag: local/mirror/alpine:stable\n    from: local/mirror/alpine:3.19.1\n",
    )
    .unwrap();
}

#[test]
fn plan_base_shows_the_policy_diff_and_marks_introduced_changes() {
    let (_tmp, dir) = repo();
    change(&dir);
    let (code, out) = run(regimen()
        .args(["plan", "--base", "HEAD", "-C"])
        .arg(&dir)
        .env("NO_COLOR", "1"));
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("plan_base_text", out);

    let (code, md) = run(regimen()
        .args(["plan", "--base", "HEAD", "--format", "markdown", "-C"])
        .arg(&dir));
    assert_eq!(code, 0, "{md}");
    let sha = regex::Regex::new("[0-9a-f]{40}").unwrap();
    insta::assert_snapshot!("plan_base_markdown", sha.replace_all(&md, "<sha>"));

    let (_, v, out) = json_plan(
        regimen()
            .args(["plan", "--base", "HEAD", "--format", "json", "-C"])
            .arg(&dir),
    );
    assert_eq!(
        v["base"]["drift"],
        serde_json::json!(["local/mirror/alpine:3.18.0"]),
        "{out}"
    );
    assert_eq!(
        v["base"]["introduced"],
        serde_json::json!(["local/mirror/alpine:3.19.1", "local/mirror/alpine:stable"]),
        "{out}"
    );
    // Still a plan `apply` reads.
    assert_eq!(v["format_version"], "1");
    // The plan is of edited files, not of the commit alone: it says so.
    assert_eq!(v["revision_modified"], true, "{out}");
    let clean = |v: &serde_json::Value| v.get("revision_modified").is_none();
    git(dir.parent().unwrap(), &["add", "-A"]);
    git(dir.parent().unwrap(), &["commit", "-q", "-m", "change"]);
    let (_, v, out) = json_plan(regimen().args(["plan", "--format", "json", "-C"]).arg(&dir));
    assert!(clean(&v), "committed: {out}");
    // Edits elsewhere in the repository are not the policy's.
    std::fs::write(dir.parent().unwrap().join("README"), "notes").unwrap();
    let (_, v, out) = json_plan(regimen().args(["plan", "--format", "json", "-C"]).arg(&dir));
    assert!(clean(&v), "outside the policy folder: {out}");
    std::fs::write(dir.join("new.yaml"), "# nothing yet\n").unwrap();
    let (_, v, out) = json_plan(regimen().args(["plan", "--format", "json", "-C"]).arg(&dir));
    assert_eq!(v["revision_modified"], true, "a new file in it: {out}");
}

#[test]
fn plan_base_with_an_unknown_revision_is_an_error() {
    let (_tmp, dir) = repo();
    let (code, out) = run(regimen()
        .args(["plan", "--base", "no-such-branch", "-C"])
        .arg(&dir));
    assert_eq!(code, 1);
    assert!(out.contains("--base no-such-branch"), "{out}");
}

/// The change that fixes a broken main must still get its plan (and its PR
/// comment): the base's errors are reported, every change counts as introduced.
#[test]
fn plan_base_with_an_invalid_base_policy_plans_the_head() {
    let (tmp, dir) = repo();
    std::fs::write(dir.join("retags.yaml"), "retags: {oops\n").unwrap();
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-q", "-m", "broken"]);
    std::fs::remove_file(dir.join("retags.yaml")).unwrap();
    change(&dir);

    let (code, out) = run(regimen()
        .args(["plan", "--base", "HEAD", "-C"])
        .arg(&dir)
        .env("NO_COLOR", "1"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the policy at --base HEAD is invalid (1 error; first:"),
        "{out}"
    );
    assert!(
        out.contains("3 come from this policy change and 0 would happen anyway"),
        "{out}"
    );
    assert!(
        out.contains("introduced copy local/mirror/alpine:3.18.0"),
        "{out}"
    );

    let (code, md) = run(regimen()
        .args(["plan", "--base", "HEAD", "--format", "markdown", "-C"])
        .arg(&dir));
    assert_eq!(code, 0, "{md}");
    assert!(md.contains("is invalid (1 error;"), "{md}");
    assert!(md.contains("introduces 3 of 3 planned changes"), "{md}");

    let (_, v, out) = json_plan(
        regimen()
            .args(["plan", "--base", "HEAD", "--format", "json", "-C"])
            .arg(&dir),
    );
    assert!(
        v["base"]["base_invalid"]
            .as_str()
            .is_some_and(|s| s.contains("is invalid (1 error;")),
        "{out}"
    );
    assert_eq!(v["base"]["drift"], serde_json::json!([]), "{out}");
}

#[test]
fn validate_github_prints_annotations_for_every_error() {
    let (_tmp, dir) = repo();
    std::fs::write(
        dir.join("mirrors.yaml"),
        "mirrors:\n  - name: alpine\n    from: upstream/library/alpine\n    to: local/mirror/alpine\n    pruen: true\n    tags: {semvr: \"*\"}\n",
    )
    .unwrap();
    let out = regimen()
        .args(["validate", "--format", "github", "-C", "policy"])
        .current_dir(dir.parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    insta::assert_snapshot!("validate_github", stdout);
}

#[test]
fn shards_partition_the_plan_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let upstream = std::fs::canonicalize("examples/quickstart/upstream").unwrap();
    let mut policy = format!(
        "registries:\n  upstream: {{url: \"oci:{}\"}}\n  local: {{url: \"oci:out\"}}\nmirrors:\n",
        upstream.display()
    );
    for i in 0..12 {
        policy.push_str(&format!(
            "  - {{name: m{i}, from: upstream/library/alpine, to: local/team{i}/alpine}}\n"
        ));
    }
    policy.push_str("  - {name: api, from: upstream/team/api, to: local/prod/api}\n");
    std::fs::write(dir.join("regimen.yaml"), policy).unwrap();

    let changes = |args: &[&str]| -> Vec<serde_json::Value> {
        let (code, v, out) = json_plan(
            regimen()
                .args(["plan", "--format", "json", "-C"])
                .arg(dir)
                .args(args),
        );
        assert_eq!(code, 0, "{out}");
        v["changes"].as_array().unwrap().clone()
    };
    let all = changes(&[]);
    assert!(all.len() > 20, "{}", all.len());
    for n in [2u32, 3, 5] {
        let mut union = Vec::new();
        let mut repos_seen: std::collections::BTreeMap<String, u32> = Default::default();
        for i in 0..n {
            let part = changes(&["--shard", &format!("{i}/{n}")]);
            for c in &part {
                let target = c["target"].as_str().unwrap();
                let repo = target.rsplit_once(':').unwrap().0.to_string();
                // A repository belongs to one shard only.
                if let Some(other) = repos_seen.insert(repo.clone(), i) {
                    assert_eq!(other, i, "{repo} in shards {other} and {i}");
                }
            }
            union.extend(part);
        }
        let key = |c: &serde_json::Value| c.to_string();
        let mut a: Vec<String> = all.iter().map(key).collect();
        let mut b: Vec<String> = union.iter().map(key).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{n} shards together differ from the unsharded plan");
        assert!(
            repos_seen
                .values()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1,
            "all in one shard with N={n}"
        );
    }
    // The index can come from an Indexed Job.
    let (code, out) = run(regimen()
        .args(["plan", "--format", "json", "--shard", "3", "-C"])
        .arg(dir)
        .env("JOB_COMPLETION_INDEX", "1"));
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(regimen().args(["plan", "--shard", "3/3", "-C"]).arg(dir));
    assert_eq!(code, 1);
    assert!(out.contains("the index must be below the count"), "{out}");
}
