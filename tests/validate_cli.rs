//! `regimen validate` and `regimen schema` as a user runs them.

use assert_cmd::Command;

fn regimen() -> Command {
    Command::cargo_bin("regimen").unwrap()
}

/// `regimen validate -C dir` on a policy that must be refused (exit 1); its
/// stderr, where the tests look for each error at its place.
fn validate_refused(dir: &str) -> String {
    let out = regimen().args(["validate", "-C", dir]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8(out.stderr).unwrap()
}

/// [`validate_refused`] on a policy of one file, `p.yaml`, holding `yaml`.
fn rejected_policy(yaml: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("p.yaml"), yaml).unwrap();
    validate_refused(tmp.path().to_str().unwrap())
}

#[test]
fn full_spec_policy_is_valid() {
    regimen()
        .args(["validate", "-C", "testdata/full"])
        .assert()
        .success();
}

#[test]
fn ten_mistakes_in_three_files_give_ten_located_errors() {
    let stderr = validate_refused("testdata/errors");
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(".y") && l.split(':').nth(2).is_some())
        .collect();
    assert_eq!(located.len(), 10, "{stderr}");
    assert!(stderr.ends_with("10 errors in the policy\n"), "{stderr}");
    for file in ["a.yaml", "b.yaml", "sub/c.yml"] {
        assert!(
            located.iter().any(|l| l.starts_with(file)),
            "no error in {file}"
        );
    }
    insta::assert_snapshot!(stderr);
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = regimen().arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("schemas/regimen.schema.json").unwrap())
            .unwrap();
    assert_eq!(
        printed, committed,
        "run `cargo run -- schema > schemas/regimen.schema.json`"
    );
}

#[test]
fn values_that_would_break_later_are_rejected_at_their_place() {
    let stderr = rejected_policy(
        "registries:\n  dev: {url: \"http://127.0.0.1:5000\", rate: 0.00000000001}\n\
         retention:\n  - {name: r, repos: [dev/Team/API], delete: {older_than: 1d}}\n",
    );
    assert!(
        stderr.contains("p.yaml:2:") && stderr.contains("`rate`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.yaml:4:") && stderr.contains("not a repository name"),
        "{stderr}"
    );
}

#[test]
fn tls_only_where_it_applies() {
    let stderr = rejected_policy(
        "hosts:\n  a:\n    endpoint: unix:///run/docker.sock\n    tls: {ca: ca.pem, cert: c.pem, key: k.pem}\n\
         \x20 b:\n    endpoint: https://10.0.0.2:2376\n\
         \x20 c:\n    endpoint: tcp://10.0.0.3:2376\n    tls: {ca: ca.pem, cert: c.pem, key: k.pem}\n",
    );
    assert!(
        stderr.contains("p.yaml:3:") && stderr.contains("a unix:// socket has no TLS"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.yaml:6:") && stderr.contains("needs `tls: {ca, cert, key}`"),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors in the policy"), "{stderr}");
}

/// The located error lines of a refused policy.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("p.yaml:"))
        .collect()
}

#[test]
fn durations_too_long_are_refused_not_wrapped_around() {
    let stderr = rejected_policy(
        "registries:\n  dev: {url: \"http://127.0.0.1:5000\"}\n\
         retention:\n\
         \x20 - {name: a, repos: [dev/x], delete: {older_than: \"106751991167301d\"}}\n\
         \x20 - {name: b, repos: [dev/x], delete: {older_than: 9223372036854775808s}}\n\
         \x20 - {name: c, repos: [dev/x], delete: {older_than: 18446744073709551615s}}\n\
         policies: {max_age: 106751991167301d}\n",
    );
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 4, "{stderr}");
    for (line, at) in lines
        .iter()
        .zip(["p.yaml:4:52", "p.yaml:5:52", "p.yaml:6:52", "p.yaml:7:21"])
    {
        assert!(
            line.starts_with(at) && line.contains("is too long"),
            "{stderr}"
        );
    }
}

#[test]
fn credentials_in_a_registry_url_are_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.yaml"),
        "registries:\n  dev: {url: \"http://alice:TOPSECRET42@host\"}\n",
    )
    .unwrap();
    let out = regimen()
        .args(["validate", "-C"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("TOPSECRET42") && !all.contains("alice"),
        "{all}"
    );
    assert!(
        all.contains("p.yaml:2:14: ") && all.contains("`auth:`") && all.contains("password_env"),
        "{all}"
    );
}

#[test]
fn a_key_given_twice_is_said_in_plain_words_with_both_places() {
    let stderr = rejected_policy(
        "registries:\n  dev: {url: \"http://127.0.0.1:5000\"}\n\
         policies: {on_violation: warn}\n\
         policies: {on_violation: fail}\n\
         mirrors: [{from: dev/a, to: dev/b, prune: maybe}]\n",
    );
    assert!(!stderr.contains("DuplicateKeyPolicy"), "{stderr}");
    let lines = error_lines(&stderr);
    // The rest of the file is still checked.
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("p.yaml:4:1: key `policies` is given twice")
            && lines[0].contains("keep one")
            && lines[0].contains("p.yaml:3:1"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_value_is_not_also_reported_missing() {
    let stderr = rejected_policy(
        "registries:\n  a: {url: \"http://127.0.0.1:5000\"}\n\
         retention:\n  - {name: r, repos: [a/x], delete: {older_than: 10y}}\n\
         retags:\n  - {tag: a/y:t, from: \"a/y@sha256:abc\"}\n",
    );
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("p.yaml:4:") && lines[0].contains("`10y`"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("p.yaml:6:") && lines[1].contains("`sha256:abc`"),
        "{stderr}"
    );
}

#[test]
fn a_tag_read_as_a_number_is_quoted_as_written() {
    let stderr = rejected_policy(
        "registries:\n  a: {url: \"http://127.0.0.1:5000\"}\n\
         mirrors: [{from: a/x, to: a/y, tags: [1.10]}]\n",
    );
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("p.yaml:3:39: ")
            && lines[0].contains("`1.10`")
            && lines[0].contains("`\"1.10\"`")
            && !lines[0].contains("`1.1`"),
        "{stderr}"
    );
}

#[test]
fn schema_defaults_are_the_real_ones() {
    let out = regimen().arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let default = |def: &str, key: &str| schema["$defs"][def]["properties"][key]["default"].clone();
    assert_eq!(default("Mirror", "referrers"), true);
    assert_eq!(default("Retention", "min_keep"), 1);
    assert_eq!(default("Registry", "concurrency"), 8);
    assert_eq!(default("Policies", "on_violation"), "warn");
}

#[test]
fn a_folder_without_policy_files_is_an_error_not_an_empty_policy() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("README.md"), "# policy\n").unwrap();
    let stderr = validate_refused(tmp.path().to_str().unwrap());
    assert!(stderr.contains("no policy files here"), "{stderr}");
    let out = regimen()
        .args(["plan", "-C", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("No changes"));
}

/// A rule name given twice is reported even when a definition has another
/// error (every error is reported, not only the first of a rule).
#[test]
fn a_rule_name_given_twice_is_reported_beside_the_rules_other_errors() {
    let stderr = rejected_policy(
        "registries:\n  dev: {url: \"http://127.0.0.1:5000\"}\n\
         retention:\n\
         \x20 - {name: a, repos: [dev/team/x], delete: {older_then: 30d}}\n\
         \x20 - {name: a, repos: [dev/team/y], delete: {older_than: 30d}}\n\
         mirrors:\n\
         \x20 - {name: m, from: dev/a, to: dev/b, tags: {semver: \">=banana\"}}\n\
         \x20 - {name: m, from: dev/c, to: dev/d, tags: {semver: \">=banana\"}}\n",
    );
    assert!(
        stderr.contains("p.yaml:4:45: unknown key `older_then` in `delete`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.yaml:5:5: rule `a` is defined twice: here and at p.yaml:4:5"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.yaml:8:5: rule `m` is defined twice: here and at p.yaml:7:5"),
        "{stderr}"
    );
    assert!(stderr.ends_with("5 errors in the policy\n"), "{stderr}");
}
