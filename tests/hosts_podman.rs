//! Hosts (issue 5's "How we will know") against a real `podman system
//! service` and a real `docker-registry`: prune removes only the old unused
//! image, `present` pulls and re-pulls after the tag moves, `max_age` stops
//! only the old container, a second apply does nothing; retention keeps what
//! a host's container runs; an unreachable host is unobserved.

mod common;

use common::ago;

use std::time::{Duration, Instant};

use common::podman::Podman;
use common::{block_on, json_plan, open, regimen, run, TestRegistry};
use regimen::testkit::{push_image, ImageSpec};

/// A runnable image (static busybox; `sleep`) created `days` ago, made
/// distinct by a label.
fn runnable(name: &str, days: i64) -> ImageSpec {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: run `bash scripts/test.sh` (installs busybox-static)");
    ImageSpec::new(&ago(days))
        .with_command("bin/busybox", busybox, &["/bin/busybox", "sleep", "3600"])
        .with_label("test.name", name)
}

fn push(reg: &TestRegistry, repo: &str, tag: &str, spec: &ImageSpec) -> String {
    let r = open(&reg.host);
    block_on(push_image(
        r.as_ref(),
        &repo.parse().unwrap(),
        Some(&tag.parse().unwrap()),
        spec,
    ))
    .unwrap()
    .to_string()
}

fn targets(plan: &serde_json::Value, action: &str) -> Vec<String> {
    let mut v: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == action)
        .map(|c| c["target"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The first change with `action` (each plan here has one pull to inspect).
fn first_change<'a>(plan: &'a serde_json::Value, action: &str) -> &'a serde_json::Value {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == action)
        .unwrap()
}

/// `regimen plan --format json` on the policy in `dir`, as every step here reads it.
fn plan_json(dir: &std::path::Path) -> (i32, serde_json::Value, String) {
    json_plan(regimen().args(["plan", "--format", "json", "-C"]).arg(dir))
}

/// `regimen apply --auto-approve` on the policy in `dir`.
fn apply(dir: &std::path::Path) -> (i32, String) {
    run(regimen().args(["apply", "--auto-approve", "-C"]).arg(dir))
}

fn write_policy(dir: &std::path::Path, reg: &TestRegistry, endpoint: &str, extra: &str) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            r#"registries:
  prod: {{url: "http://{host}"}}
hosts:
  build-01:
    endpoint: "{endpoint}"
    images:
      present: [prod/team/api:stable]
      prune: {{older_than: 30d, keep: ["prod/base/*"]}}
    containers:
      max_age: 20s
retention:
  - name: inuse-cleanup
    repos: [prod/team/inuse]
    delete: {{older_than: 30d}}
    min_keep: 0
{extra}"#,
            host = reg.host
        ),
    )
    .unwrap();
}

#[test]
fn host_reconciliation_prune_present_max_age_and_protection() {
    let reg = TestRegistry::start();
    let podman = Podman::start(&[&reg.host]);
    let h = &reg.host;

    // The registry: images of several ages.
    push(&reg, "team/old", "1", &runnable("old", 60));
    push(&reg, "team/inuse", "1", &runnable("inuse", 60));
    push(&reg, "team/inuse", "2", &runnable("inuse-unused", 60));
    push(&reg, "team/fresh", "1", &runnable("fresh", 1));
    push(&reg, "base/keep", "1", &runnable("base", 60));
    push(&reg, "team/runner", "1", &runnable("runner", 1));
    let api_v1 = push(&reg, "team/api", "stable", &runnable("api-v1", 1));

    // The host: a long-running container first (max_age counts from its start).
    for repo in [
        "team/old:1",
        "team/inuse:1",
        "team/fresh:1",
        "base/keep:1",
        "team/runner:1",
    ] {
        podman.run(&["pull", "-q", &format!("{h}/{repo}")]);
    }
    let old_started = Instant::now();
    podman.start_container("old-runner", &format!("{h}/team/runner:1"));

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &reg, &podman.endpoint(), "");

    // Containers started after max_age has passed for the first one.
    let wait = Duration::from_secs(23).saturating_sub(old_started.elapsed());
    std::thread::sleep(wait);
    podman.start_container("inuse", &format!("{h}/team/inuse:1"));
    podman.start_container("young-runner", &format!("{h}/team/runner:1"));

    let (code, plan, out) = plan_json(dir.path());
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        targets(&plan, "pull"),
        vec!["host:build-01/prod/team/api:stable"],
        "{out}"
    );
    assert_eq!(
        targets(&plan, "remove_image"),
        vec!["host:build-01/prod/team/old:1"],
        "{out}"
    );
    assert_eq!(
        targets(&plan, "stop_container"),
        vec!["host:build-01/container/old-runner"],
        "{out}"
    );
    let pull = first_change(&plan, "pull");
    assert_eq!(pull["digest"], api_v1.as_str());
    assert_eq!(pull["expect"], "absent");
    // Retention: the image a container runs stays; its unused sibling goes.
    assert_eq!(targets(&plan, "delete"), vec!["prod/team/inuse:2"], "{out}");
    let kept = plan["kept"].as_array().unwrap();
    assert!(
        kept.iter().any(|k| k["subject"] == "prod/team/inuse:1"
            && k["reason"]
                .as_str()
                .unwrap()
                .contains("run by container inuse on host build-01")),
        "{out}"
    );
    assert!(
        kept.iter()
            .any(|k| k["subject"] == "host:build-01/prod/team/inuse:1"
                && k["reason"]
                    .as_str()
                    .unwrap()
                    .contains("used by container inuse")),
        "{out}"
    );

    // Text plan names the host changes the way a reviewer reads them.
    let (_, text) = run(regimen().args(["plan", "-C"]).arg(dir.path()));
    assert!(
        text.contains("host:build-01/container/old-runner"),
        "{text}"
    );
    assert!(text.contains("1 to delete, 3 host changes"), "{text}");

    let (code, out) = apply(dir.path());
    assert_eq!(code, 0, "{out}");

    let images = podman.image_names();
    let has = |n: &str| images.iter().any(|i| i == &format!("{h}/{n}"));
    assert!(!has("team/old:1"), "pruned: {images:?}");
    for kept in [
        "team/inuse:1",
        "team/fresh:1",
        "base/keep:1",
        "team/api:stable",
        "team/runner:1",
    ] {
        assert!(has(kept), "{kept} must stay: {images:?}");
    }
    let api_digest = podman.image_digest(&format!("{h}/team/api:stable"));
    assert_eq!(api_digest, api_v1);
    assert_eq!(podman.running(), vec!["inuse", "young-runner"]);
    assert_eq!(reg.tags("team/inuse").unwrap(), vec!["1"]);

    // Apply twice: nothing the second time.
    let (code, out) = run(regimen()
        .args(["plan", "--detailed-exitcode", "-C"])
        .arg(dir.path()));
    assert_eq!(code, 0, "second plan must be empty:\n{out}");

    // The tag moves in the registry: the host re-pulls it.
    let api_v2 = push(&reg, "team/api", "stable", &runnable("api-v2", 1));
    let (_, plan, out) = plan_json(dir.path());
    assert_eq!(
        targets(&plan, "pull"),
        vec!["host:build-01/prod/team/api:stable"],
        "{out}"
    );
    let pull = first_change(&plan, "pull");
    assert_eq!(pull["digest"], api_v2.as_str());
    assert!(
        pull["reason"].as_str().unwrap().contains("the tag moved"),
        "{out}"
    );
    assert_ne!(pull["expect"], "absent");
    let (code, out) = apply(dir.path());
    assert_eq!(code, 0, "{out}");
    let api_digest = podman.image_digest(&format!("{h}/team/api:stable"));
    assert_eq!(api_digest, api_v2);

    // An unreachable host: unobserved, no changes there, and retention
    // deletes nothing (what it runs is unknown); the reachable host proceeds.
    podman.run(&["rmi", &format!("{h}/team/api:stable")]);
    push(&reg, "team/inuse", "3", &runnable("inuse-unused-3", 60));
    let missing = dir.path().join("nowhere.sock");
    write_policy(
        dir.path(),
        &reg,
        &podman.endpoint(),
        "  - name: more\n    repos: [prod/team/old]\n    delete: {older_than: 1d}\n    min_keep: 0\n",
    );
    let extra_host = format!(
        "\n  offline:\n    endpoint: \"unix://{}\"\n    containers: {{max_age: 1s}}\n",
        missing.display()
    );
    let text = std::fs::read_to_string(dir.path().join("policy.yaml")).unwrap();
    let text = text.replace(
        "retention:\n",
        &format!("{}retention:\n", extra_host.trim_start_matches('\n')),
    );
    std::fs::write(dir.path().join("policy.yaml"), text).unwrap();
    let (code, plan, out) = plan_json(dir.path());
    assert_eq!(code, 0, "{out}");
    assert_eq!(plan["complete"], false);
    assert!(
        plan["unobserved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["subject"] == "host:offline"),
        "{out}"
    );
    assert!(targets(&plan, "delete").is_empty(), "{out}");
    assert_eq!(
        targets(&plan, "pull"),
        vec!["host:build-01/prod/team/api:stable"],
        "{out}"
    );
    assert!(
        plan["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["rule"] == "inuse-cleanup"
                && b["reason"]
                    .as_str()
                    .unwrap()
                    .contains("host offline could not be read")),
        "{out}"
    );
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["target"].as_str().unwrap().starts_with("host:offline")),
        "{out}"
    );
}

/// `regimen plan --out FILE` on the policy in `dir`, then the saved plan as JSON.
fn save_plan(dir: &std::path::Path, file: &std::path::Path) -> serde_json::Value {
    let (code, out) = run(regimen()
        .args(["plan", "--out"])
        .arg(file)
        .arg("-C")
        .arg(dir));
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// `regimen apply FILE` on the policy in `dir`.
fn apply_saved(dir: &std::path::Path, file: &std::path::Path) -> (i32, String) {
    run(regimen().arg("apply").arg(file).arg("-C").arg(dir))
}

/// The apply output line of `action target`.
fn outcome<'a>(out: &'a str, action: &str, target: &str) -> &'a str {
    let head = format!("{action} {target}: ");
    out.lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no line for {head}:\n{out}"))
}

#[test]
fn saved_host_changes_are_stale_when_the_host_changed_since_the_plan() {
    let reg = TestRegistry::start();
    let podman = Podman::start(&[&reg.host]);
    let h = &reg.host;
    push(&reg, "team/old", "1", &runnable("old", 100));
    push(&reg, "team/built", "1", &runnable("built", 100));
    push(&reg, "team/runner", "1", &runnable("runner", 1));
    for repo in ["team/old:1", "team/built:1", "team/runner:1"] {
        podman.run(&["pull", "-q", &format!("{h}/{repo}")]);
    }
    podman.start_container("fresh", &format!("{h}/team/runner:1"));
    podman.start_container("frozen", &format!("{h}/team/runner:1"));
    podman.run(&["pause", "frozen"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            r#"registries:
  prod: {{url: "http://{h}"}}
hosts:
  build-01:
    endpoint: "{endpoint}"
    images:
      prune: {{older_than: 30d, keep: ["prod/team/base*"]}}
    containers:
      max_age: 2s
"#,
            endpoint = podman.endpoint()
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let file = dir.path().join("plan.json");
    let plan = save_plan(dir.path(), &file);
    let old = "host:build-01/prod/team/old:1";
    let built = "host:build-01/prod/team/built:1";
    assert_eq!(targets(&plan, "remove_image"), [built, old], "{plan}");
    assert_eq!(
        targets(&plan, "stop_container"),
        [
            "host:build-01/container/fresh",
            "host:build-01/container/frozen"
        ],
        "{plan}"
    );

    // After the plan: the old image gets a name `keep` protects, `fresh`
    // restarts (a new run, not the long one the plan showed), buildah
    // starts a working container on `built` (Podman does not list it).
    podman.run(&[
        "tag",
        &format!("{h}/team/old:1"),
        &format!("{h}/team/base:important"),
    ]);
    podman.run(&["restart", "-t", "0", "fresh"]);
    podman.buildah(&["from", "--pull=never", &format!("{h}/team/built:1")]);

    let (code, out) = apply_saved(dir.path(), &file);
    assert_eq!(code, 1, "{out}");
    let line = outcome(&out, "remove_image", old);
    assert!(
        line.contains("STALE") && line.contains(&format!("{h}/team/base:important")),
        "{out}"
    );
    let line = outcome(&out, "stop_container", "host:build-01/container/fresh");
    assert!(
        line.contains("STALE") && line.contains("restarted since the plan"),
        "{out}"
    );
    let line = outcome(&out, "remove_image", built);
    assert!(
        line.contains("STALE") && line.contains("in use") && line.contains("external"),
        "{out}"
    );
    // A paused container is unpaused, then stopped.
    assert!(
        outcome(&out, "stop_container", "host:build-01/container/frozen").ends_with("done"),
        "{out}"
    );
    let images = podman.image_names();
    for name in ["team/old:1", "team/base:important", "team/built:1"] {
        assert!(
            images.contains(&format!("{h}/{name}")),
            "{name}: {images:?}"
        );
    }
    assert_eq!(podman.running(), ["fresh"]);

    // Planned again: the external container keeps its image, `keep` keeps
    // the renamed one; nothing fails on every apply.
    let (_, plan, out) = plan_json(dir.path());
    assert!(targets(&plan, "remove_image").is_empty(), "{out}");
    let kept = |s: &str| {
        plan["kept"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["subject"] == s)
            .map(|k| k["reason"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        kept(built),
        "used by 1 container the engine does not list (external, e.g. buildah's)",
        "{out}"
    );
    assert!(kept(old).starts_with("keep matches"), "{out}");
}

#[test]
fn registry_deletions_spare_what_host_containers_use_by_any_name() {
    let reg = TestRegistry::start();
    // The host also reaches the registry as `localhost:PORT`, a name the
    // policy (`http://127.0.0.1:PORT`) does not write.
    let alias_host = format!("localhost:{}", reg.port);
    let mut podman = Podman::start(&[&reg.host, &alias_host]);
    let h = &reg.host;
    push(&reg, "team/race", "1", &runnable("race-1", 100));
    push(&reg, "team/race", "2", &runnable("race-2", 100));
    let shared = runnable("shared", 100);
    push(&reg, "team/race", "3", &shared);
    push(&reg, "team/alias", "1", &shared);
    podman.run(&["pull", "-q", &format!("{alias_host}/team/alias:1")]);
    podman.start_container("aliased", &format!("{alias_host}/team/alias:1"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            r#"registries:
  prod: {{url: "http://{h}"}}
hosts:
  build-01:
    endpoint: "{endpoint}"
retention:
  - name: cleanup
    repos: [prod/team/race]
    delete: {{older_than: 30d}}
    min_keep: 0
"#,
            endpoint = podman.endpoint()
        ),
    )
    .unwrap();
    let file = dir.path().join("plan.json");
    let plan = save_plan(dir.path(), &file);
    // race:3 is the digest the container runs, pulled as another name.
    assert_eq!(
        targets(&plan, "delete"),
        ["prod/team/race:1", "prod/team/race:2"],
        "{plan}"
    );
    assert!(
        plan["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["subject"] == "prod/team/race:3"
                && k["reason"] == "run by container aliased on host build-01"),
        "{plan}"
    );

    // After the plan, a container starts on race:1: its deletion is stale.
    podman.start_container("racer", &format!("{h}/team/race:1"));
    let (code, out) = apply_saved(dir.path(), &file);
    assert_eq!(code, 1, "{out}");
    let line = outcome(&out, "delete", "prod/team/race:1");
    assert!(
        line.contains("STALE") && line.contains("used by container racer on host build-01"),
        "{out}"
    );
    assert!(
        outcome(&out, "delete", "prod/team/race:2").ends_with("done"),
        "{out}"
    );
    assert_eq!(reg.tags("team/race").unwrap(), ["1", "3"]);

    // A host that cannot be read at apply: what it runs is unknown, so the
    // saved plan's deletion does not happen.
    push(&reg, "team/race", "4", &runnable("race-4", 100));
    let file = dir.path().join("plan2.json");
    let plan = save_plan(dir.path(), &file);
    assert_eq!(targets(&plan, "delete"), ["prod/team/race:4"], "{plan}");
    podman.stop_service();
    let (code, out) = apply_saved(dir.path(), &file);
    assert_eq!(code, 1, "{out}");
    let line = outcome(&out, "delete", "prod/team/race:4");
    assert!(
        line.contains("FAILED")
            && line.contains("host build-01")
            && line.contains("what its containers use is unknown"),
        "{out}"
    );
    assert_eq!(reg.tags("team/race").unwrap(), ["1", "3", "4"]);
}

#[test]
fn a_moved_present_tag_leaves_nothing_to_prune_after_apply() {
    let reg = TestRegistry::start();
    let podman = Podman::start(&[&reg.host]);
    let h = &reg.host;
    push(&reg, "team/api", "stable", &runnable("api-v1", 50));
    podman.run(&["pull", "-q", &format!("{h}/team/api:stable")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            r#"registries:
  prod: {{url: "http://{h}"}}
hosts:
  build-01:
    endpoint: "{endpoint}"
    images:
      present: [prod/team/api:stable]
      prune: {{older_than: 30d}}
"#,
            endpoint = podman.endpoint()
        ),
    )
    .unwrap();
    let plan_exit = || {
        run(regimen()
            .args(["plan", "--detailed-exitcode", "-C"])
            .arg(dir.path()))
    };
    let (code, out) = plan_exit();
    assert_eq!(code, 0, "{out}");
    let v1_id = podman
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{h}/team/api:stable"),
        ])
        .trim()
        .to_string();

    let v2 = push(&reg, "team/api", "stable", &runnable("api-v2", 1));
    let (_, plan, out) = plan_json(dir.path());
    assert_eq!(
        targets(&plan, "pull"),
        ["host:build-01/prod/team/api:stable"],
        "{out}"
    );
    let rm = first_change(&plan, "remove_image");
    assert_eq!(rm["target"], format!("host:build-01/{}", &v1_id[..12]));
    assert!(
        rm["reason"]
            .as_str()
            .unwrap()
            .starts_with("unused once the pull replaces it"),
        "{out}"
    );
    let (code, out) = apply(dir.path());
    assert_eq!(code, 0, "{out}");
    assert_eq!(podman.image_digest(&format!("{h}/team/api:stable")), v2);
    let (code, out) = plan_exit();
    assert_eq!(
        code, 0,
        "the plan after a successful apply must be empty:\n{out}"
    );
}

/// The audit's saved-plan case: `enforce` stops a container running an
/// image by a name no policy registry has (`quay.io/…`), and a `present`
/// tag rolled back to an image the host still has by digest. The saved
/// plan applies as a whole, stops the container, puts the tag on the image
/// that was there (and removes nothing), and the next plan is empty.
#[test]
fn a_saved_plan_enforces_and_rolls_a_present_tag_back_onto_an_image_here() {
    let reg = TestRegistry::start();
    let podman = Podman::start(&[&reg.host]);
    let h = &reg.host;
    let v1 = runnable("api-v1", 100);
    let d1 = push(&reg, "team/api", "stable", &v1);
    push(&reg, "team/api", "stable", &runnable("api-v2", 90));
    // v1 by digest only (as a `present` pull leaves an image once its tag
    // moved on), v2 by tag, and v2 again under a name from elsewhere,
    // running.
    podman.run(&["pull", "-q", &format!("{h}/team/api@{d1}")]);
    podman.run(&["pull", "-q", &format!("{h}/team/api:stable")]);
    podman.run(&[
        "tag",
        &format!("{h}/team/api:stable"),
        "quay.io/evil/tool:1",
    ]);
    podman.start_container("foreign", "quay.io/evil/tool:1");
    // Rolled back: `stable` is v1 again in the registry.
    assert_eq!(push(&reg, "team/api", "stable", &v1), d1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            r#"registries:
  prod: {{url: "http://{h}"}}
hosts:
  build-01:
    endpoint: "{endpoint}"
    images:
      present: [prod/team/api:stable]
      prune: {{older_than: 30d}}
policies:
  registries: [prod]
  on_violation: enforce
"#,
            endpoint = podman.endpoint()
        ),
    )
    .unwrap();
    let file = dir.path().join("plan.json");
    let plan = save_plan(dir.path(), &file);
    assert_eq!(
        targets(&plan, "pull"),
        ["host:build-01/prod/team/api:stable"],
        "{plan}"
    );
    assert_eq!(first_change(&plan, "pull")["digest"], d1.as_str());
    // v1 is what the pull names: not pruned under it.
    assert!(targets(&plan, "remove_image").is_empty(), "{plan}");
    let stop = first_change(&plan, "stop_container");
    assert_eq!(stop["target"], "host:build-01/container/foreign");
    assert_eq!(stop["source"], "quay.io/evil/tool:1");
    // The stop ends the violation: none left, one resolved by it.
    assert_eq!(plan["violations"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["summary"]["violations"], 0);
    let resolved = plan["resolved_violations"].as_array().unwrap();
    assert_eq!(resolved.len(), 1, "{plan}");
    assert_eq!(resolved[0]["subject"], "host:build-01/container/foreign");
    assert_eq!(resolved[0]["by"], "host:build-01/container/foreign");

    let (code, out) = apply_saved(dir.path(), &file);
    assert_eq!(code, 0, "{out}");
    assert!(
        outcome(&out, "stop_container", "host:build-01/container/foreign").ends_with("done"),
        "{out}"
    );
    assert!(podman.running().is_empty(), "{:?}", podman.running());
    assert_eq!(podman.image_digest(&format!("{h}/team/api:stable")), d1);

    // Converged; the image `stable` names is shown by that tag, not by the
    // digest name the pull also gave it.
    let (code, out) = run(regimen()
        .args(["plan", "--detailed-exitcode", "--format", "json", "-C"])
        .arg(dir.path()));
    assert_eq!(code, 0, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kept: Vec<(&str, &str)> = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["subject"].as_str().unwrap(),
                k["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        kept.contains(&(
            "host:build-01/prod/team/api:stable",
            "listed in present (prod/team/api:stable)"
        )),
        "{kept:?}"
    );
}
