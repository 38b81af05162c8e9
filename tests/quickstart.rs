//! End to end on the quickstart: plan, apply, converge, verify with skopeo,
//! and a saved plan that went stale.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

use common::{copy_dir, skopeo};

fn regimen() -> Command {
    Command::cargo_bin("regimen").unwrap()
}

/// A private copy of the quickstart (policy + committed upstream layouts).
fn quickstart() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("quickstart");
    copy_dir(Path::new("examples/quickstart"), &dir);
    let _ = std::fs::remove_dir_all(dir.join("out"));
    (tmp, dir)
}

/// The quickstart copy and its plan saved as `plan.json` in it.
fn quickstart_with_saved_plan() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, dir) = quickstart();
    let planfile = dir.join("plan.json");
    let (code, out) = stdout(
        regimen()
            .arg("plan")
            .arg("-C")
            .arg(&dir)
            .arg("--out")
            .arg(&planfile),
    );
    assert_eq!(code, 0, "{out}");
    (tmp, dir, planfile)
}

/// A saved plan's JSON, to edit as a hand would.
fn plan_json(planfile: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(planfile).unwrap()).unwrap()
}

fn digest_of(layout: &Path, tag: &str) -> String {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:{tag}", layout.display()),
    ]);
    regimen::model::Digest::sha256_of(raw.as_bytes()).to_string()
}

fn stdout(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn plan_apply_converge_and_verify_with_skopeo() {
    let (_tmp, dir) = quickstart();
    let d = dir.to_str().unwrap();

    let (code, plan) = stdout(regimen().args(["plan", "-C", d]));
    assert_eq!(code, 0, "{plan}");
    insta::assert_snapshot!("quickstart_plan", plan);

    let (code, json) =
        stdout(regimen().args(["plan", "-C", d, "--format", "json", "--detailed-exitcode"]));
    assert_eq!(
        code, 2,
        "changes pending means exit 2 with --detailed-exitcode"
    );
    let v: serde_json::Value = serde_json::from_str(
        json.lines()
            .take_while(|l| !l.starts_with("Saved"))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap();
    assert_eq!(v["format_version"], "1");
    assert_eq!(v["summary"]["copy"], 4);
    assert_eq!(v["summary"]["retag"], 2);
    assert_eq!(v["summary"]["blocked"], 1);

    let (code, out) = stdout(regimen().args(["apply", "--auto-approve", "-C", d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 6 done"), "{out}");

    let (code, again) = stdout(regimen().args(["plan", "--detailed-exitcode", "-C", d]));
    assert_eq!(code, 0, "second plan must be empty:\n{again}");
    let (code, out) = stdout(regimen().args(["apply", "--auto-approve", "-C", d]));
    assert_eq!(code, 0);
    assert!(!out.contains("done"), "second apply changes nothing: {out}");

    // An independent reader sees exactly the source digests.
    let up = dir.join("upstream");
    let outdir = dir.join("out");
    for (src, dst, tag) in [
        ("library/alpine", "mirror/alpine", "3.18.0"),
        ("library/alpine", "mirror/alpine", "3.19.1"),
        ("team/api", "prod/api", "1.0.0"),
        ("team/api", "prod/api", "1.1.0"),
    ] {
        assert_eq!(
            digest_of(&up.join(src), tag),
            digest_of(&outdir.join(dst), tag),
            "{dst}:{tag}"
        );
    }
    assert_eq!(
        digest_of(&up.join("team/api"), "1.1.0"),
        digest_of(&outdir.join("prod/api"), "stable")
    );
    assert_eq!(
        digest_of(&up.join("library/alpine"), "3.19.1"),
        digest_of(&outdir.join("mirror/alpine"), "latest")
    );
    // Every platform of the index is readable.
    for arch in ["amd64", "arm64"] {
        let cfg = skopeo(&[
            "--override-arch",
            arch,
            "inspect",
            "--config",
            &format!("oci:{}:3.19.1", outdir.join("mirror/alpine").display()),
        ]);
        assert!(cfg.contains(arch), "{cfg}");
    }
    // Not selected: the rc and the old release; not promoted: 0.9.0 (semver) and 1.2.0 (no SBOM).
    // (skopeo cannot list tags of an OCI layout; the ref names are in index.json.)
    let tags = std::fs::read_to_string(outdir.join("prod/api/index.json")).unwrap();
    assert!(
        tags.contains("\"1.1.0\"") && tags.contains("\"stable\""),
        "{tags}"
    );
    assert!(!tags.contains("0.9.0") && !tags.contains("1.2.0"), "{tags}");
    // The SBOM followed the promotion.
    let index = std::fs::read_to_string(outdir.join("prod/api/index.json")).unwrap();
    assert!(index.contains("application/vnd.cyclonedx+json"), "{index}");
}

#[test]
fn saved_plan_refuses_a_target_changed_meanwhile() {
    let (_tmp, dir, planfile) = quickstart_with_saved_plan();
    let d = dir.to_str().unwrap();

    // Someone pushes another image under a tag the plan will create.
    let up = dir.join("upstream/team/api");
    let target = dir.join("out/prod/api");
    std::fs::create_dir_all(&target).unwrap();
    skopeo(&[
        "copy",
        &format!("oci:{}:0.9.0", up.display()),
        &format!("oci:{}:1.1.0", target.display()),
    ]);
    let foreign = digest_of(&target, "1.1.0");

    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "a stale change makes apply fail:\n{out}");
    assert!(out.contains("copy local/prod/api:1.1.0: STALE"), "{out}");
    assert_eq!(
        digest_of(&target, "1.1.0"),
        foreign,
        "the changed tag is left alone"
    );
    // The other changes went through.
    assert_eq!(digest_of(&up, "1.0.0"), digest_of(&target, "1.0.0"));
}

#[test]
fn saved_plan_refuses_a_policy_where_a_registry_moved() {
    let (_tmp, dir, planfile) = quickstart_with_saved_plan();
    let d = dir.to_str().unwrap();
    // The policy now says `local` is another folder: the plan was not made for it.
    let policy = std::fs::read_to_string(dir.join("policy.yaml")).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        policy.replace("url: oci:out", "url: oci:elsewhere"),
    )
    .unwrap();
    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("was planned with registry `local` at oci:out; the policy in")
            && out.contains("has it at oci:elsewhere")
            && out.contains("Nothing was applied"),
        "{out}"
    );
    assert!(!dir.join("elsewhere").exists() && !dir.join("out").exists());
    // As planned again, and in another checkout (as a CI apply job has):
    // `oci:` paths are compared as the policy writes them.
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    let other = dir.with_file_name("checkout2");
    copy_dir(&dir, &other);
    let (code, out) = stdout(regimen().arg("apply").arg("-C").arg(&other).arg(&planfile));
    assert_eq!(code, 0, "{out}");
    assert!(other.join("out/prod/api").exists(), "{out}");
}

/// A plan made when the policy had a registry it no longer has: applying it
/// would do the other registries' changes and fail these, half-applying it.
#[test]
fn saved_plan_naming_a_registry_the_policy_lacks_is_refused_whole() {
    let (_tmp, dir) = quickstart();
    let d = dir.to_str().unwrap();
    let policy = std::fs::read_to_string(dir.join("policy.yaml")).unwrap();
    let with_extra = policy
        .replace("  local:\n", "  extra:\n    url: oci:extra\n  local:\n")
        .replace("local/mirror/alpine", "extra/mirror/alpine");
    assert_ne!(with_extra, policy);
    std::fs::write(dir.join("policy.yaml"), &with_extra).unwrap();
    let planfile = dir.join("plan.json");
    let (code, out) = stdout(regimen().args(["plan", "-C", d, "--out"]).arg(&planfile));
    assert_eq!(code, 0, "{out}");
    std::fs::write(dir.join("policy.yaml"), &policy).unwrap();

    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("changes registry `extra`, which the policy in")
            && out.contains("Nothing was applied"),
        "{out}"
    );
    assert!(
        !dir.join("out").exists() && !dir.join("extra").exists(),
        "{out}"
    );

    // Without its `endpoints` (an older regimen's plan, or an edited one)
    // the names are still checked.
    let mut json = plan_json(&planfile);
    json.as_object_mut().unwrap().remove("endpoints");
    std::fs::write(&planfile, json.to_string()).unwrap();
    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("changes registry `extra`") && out.contains("records no registry endpoints"),
        "{out}"
    );
    assert!(
        !dir.join("out").exists() && !dir.join("extra").exists(),
        "{out}"
    );

    // Such a plan still applies where every name it uses is defined.
    std::fs::write(dir.join("policy.yaml"), &with_extra).unwrap();
    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    assert!(dir.join("extra/mirror/alpine").exists(), "{out}");
}

/// A plan whose `endpoints` leave out one registry its changes use (edited
/// by hand): where that registry was cannot be checked, and apply says so.
#[test]
fn saved_plan_missing_one_endpoint_is_applied_with_a_warning() {
    let (_tmp, dir, planfile) = quickstart_with_saved_plan();
    let d = dir.to_str().unwrap();
    let mut json = plan_json(&planfile);
    let registries = json["endpoints"]["registries"].as_object_mut().unwrap();
    assert!(registries.remove("local").is_some(), "{json}");
    assert!(!registries.is_empty(), "{json}");
    std::fs::write(&planfile, json.to_string()).unwrap();
    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("records no endpoint for registry `local` (edited?)"),
        "{out}"
    );
    assert!(
        !out.contains("records no endpoint for registry `upstream`"),
        "{out}"
    );
}

#[test]
fn target_glob_limits_the_run() {
    let (_tmp, dir) = quickstart();
    let d = dir.to_str().unwrap();
    let (code, out) = stdout(regimen().args([
        "apply",
        "--auto-approve",
        "-C",
        d,
        "--target",
        "local/mirror/*",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 3 done"), "{out}");
    assert!(!dir.join("out/prod").exists());
    // A target nothing matches plans nothing, which is not "everything matches".
    let (code, out) = stdout(regimen().args(["plan", "-C", d, "--target", "nomatch/*"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        "No changes within --target nomatch/* (the rest of the policy was not planned).",
    );
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let (_tmp, dir) = quickstart();
    let (code, out) = stdout(
        regimen()
            .args(["apply", "-C", dir.to_str().unwrap()])
            .write_stdin(""),
    );
    assert_eq!(code, 1);
    assert!(out.contains("--auto-approve"), "{out}");
    assert!(!dir.join("out").exists(), "nothing applied");
}

#[test]
fn markdown_plan_for_a_pull_request() {
    let (_tmp, dir) = quickstart();
    let (code, md) =
        stdout(regimen().args(["plan", "--format", "markdown", "-C", dir.to_str().unwrap()]));
    assert_eq!(code, 0);
    insta::assert_snapshot!("quickstart_markdown", md);
}

#[test]
fn platform_filtered_mirror_applies_and_converges() {
    let (_tmp, dir) = quickstart();
    std::fs::write(
        dir.join("policy.yaml"),
        "registries:\n  upstream: {url: oci:upstream}\n  local: {url: oci:out}\n\
         mirrors:\n  - {from: upstream/library/alpine, to: local/amd64/alpine, tags: [\"3.19.1\"], platforms: [linux/amd64]}\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let (code, plan) = stdout(regimen().args(["plan", "-C", d]));
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("filtered to linux/amd64"), "{plan}");
    let (code, out) = stdout(regimen().args(["apply", "--auto-approve", "-C", d]));
    assert_eq!(code, 0, "{out}");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:3.19.1", dir.join("out/amd64/alpine").display()),
    ]);
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64"]);
    let (code, again) = stdout(regimen().args(["plan", "--detailed-exitcode", "-C", d]));
    assert_eq!(code, 0, "{again}");
}

/// A saved plan whose copy shows one digest and names another as its source
/// (edited by hand) is not applied as the source says: what lands must be
/// what reviewers saw.
#[test]
fn saved_plan_whose_digest_was_edited_is_not_applied() {
    let (_tmp, dir, planfile) = quickstart_with_saved_plan();
    let d = dir.to_str().unwrap();
    let mut json = plan_json(&planfile);
    let change = json["changes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["action"] == "copy" && c["source"].as_str().is_some_and(|s| s.contains('@')))
        .expect("a copy from a digest");
    let target = change["target"].as_str().unwrap().to_string();
    change["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    std::fs::write(&planfile, json.to_string()).unwrap();
    let (code, out) = stdout(regimen().args(["apply", "-C", d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("copy {target}: FAILED")) && out.contains("was the plan edited?"),
        "{out}"
    );
}
