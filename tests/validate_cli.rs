//! `regimen validate` and `regimen schema` as a user runs them.

use assert_cmd::Command;

fn regimen() -> Command {
    Command::cargo_bin("regimen").unwrap()
}

#[test]
fn full_spec_policy_is_valid() {
    regimen().args(["validate", "-C", "testdata/full"]).assert().success();
}

#[test]
fn ten_mistakes_in_three_files_give_ten_located_errors() {
    let out = regimen().args(["validate", "-C", "testdata/errors"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    insta::assert_snapshot!(stderr);
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = regimen().arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("schemas/regimen.schema.json").unwrap()).unwrap();
    assert_eq!(printed, committed, "run `cargo run -- schema > schemas/regimen.schema.json`");
}
