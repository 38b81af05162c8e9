//! End to end against real registries: Debian's `docker-registry` started on
//! loopback by the tests (one with htpasswd auth), seeded with skopeo from the
//! quickstart's committed OCI layouts, driven through the `regimen` CLI and
//! verified with skopeo and the registry API.

mod common;

use std::path::{Path, PathBuf};

use common::{
    copy_dir, free_port, layout_tags, seed_from_layout, seed_referrers_from_layout, skopeo,
};
use common::{json_plan, regimen, run};
use common::{sha256_digest, TestRegistry};

const SBOM: &str = "application/vnd.cyclonedx+json";

fn upstream() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/upstream")
}

fn policy_dir(yaml: &str) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), yaml).unwrap();
    (tmp, dir.to_str().unwrap().to_string())
}

/// The quickstart's rules with `upstream` → `dev` and `local` → `prod`.
fn quickstart_policy(dev: &TestRegistry, prod: &TestRegistry) -> String {
    format!(
        r#"registries:
  dev: {{url: "{}"}}
  prod: {{url: "{}"}}

mirrors:
  - name: alpine-mirror
    from: dev/library/alpine
    to: prod/mirror/alpine
    tags: {{semver: ">=3.18", exclude: ["-rc"]}}

promotions:
  - name: api-to-prod
    from: dev/team/api
    to: prod/prod/api
    tags: {{semver: ">=1.0.0"}}
    require:
      min_age: 24h
      referrers: [{SBOM}]

retags:
  - tag: prod/prod/api:stable
    from: prod/prod/api:1.1.0
  - tag: prod/mirror/alpine:latest
    newest: {{repo: prod/mirror/alpine, tags: {{semver: "*"}}}}
"#,
        dev.url(),
        prod.url()
    )
}

/// Pushes the whole quickstart upstream (every tag, and the SBOM referrers
/// through the `sha256-<hex>` tag schema) into `reg`.
fn seed_quickstart(reg: &TestRegistry) {
    for repo in ["library/alpine", "team/api"] {
        let layout = upstream().join(repo);
        for tag in layout_tags(&layout) {
            seed_from_layout(reg, &layout, &tag, repo);
        }
    }
    let pairs = seed_referrers_from_layout(reg, &upstream().join("team/api"), "team/api");
    assert_eq!(pairs.len(), 2, "the quickstart has two SBOMs: {pairs:?}");
}

/// The referrer digests listed by the `sha256-<hex>` fallback tag of `subject`.
fn fallback_referrers(reg: &TestRegistry, repo: &str, subject: &str) -> Vec<String> {
    let raw = reg.raw_manifest(repo, &subject.replace(':', "-"));
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mut out: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["artifactType"], SBOM, "{raw}");
            m["digest"].as_str().unwrap().to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn harness_starts_and_skopeo_can_push() {
    let reg = TestRegistry::start();
    let layout = upstream().join("library/alpine");
    seed_from_layout(&reg, &layout, "3.19.1", "library/alpine");
    let want = sha256_digest(
        skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:3.19.1", layout.display()),
        ])
        .as_bytes(),
    );
    assert_eq!(reg.digest("library/alpine", "3.19.1"), want);
    assert_eq!(reg.tags("library/alpine"), Some(vec!["3.19.1".to_string()]));
    assert_eq!(reg.tags("nothing/here"), None);

    // Referrers by digest and their tag-schema index.
    let pairs = seed_referrers_from_layout(&reg, &upstream().join("team/api"), "team/api");
    assert_eq!(pairs.len(), 2);
    for (subject, referrer) in &pairs {
        assert_eq!(&reg.digest("team/api", referrer), referrer);
        assert_eq!(
            fallback_referrers(&reg, "team/api", subject),
            vec![referrer.clone()]
        );
    }

    // With htpasswd: anonymous is refused, the credentials work.
    let secure = TestRegistry::start_with_htpasswd("alice", "wonder-land-42");
    let r = common::try_http(&secure.host, "GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(r.status, 401);
    seed_from_layout(&secure, &layout, "3.18.0", "library/alpine");
    assert_eq!(
        secure.tags("library/alpine"),
        Some(vec!["3.18.0".to_string()])
    );
}

#[test]
fn quickstart_over_http_mirrors_promotes_retags_and_converges() {
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    seed_quickstart(&dev);
    let (_tmp, d) = policy_dir(&quickstart_policy(&dev, &prod));

    let (code, plan) = run(regimen().args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{plan}");
    for line in [
        "dev/library/alpine:3.18.0 -> prod/mirror/alpine:3.18.0",
        "dev/library/alpine:3.19.1 -> prod/mirror/alpine:3.19.1",
        "dev/team/api:1.0.0 -> prod/prod/api:1.0.0",
        "dev/team/api:1.1.0 -> prod/prod/api:1.1.0",
        "prod/mirror/alpine:latest",
        "prod/prod/api:stable",
        "blocked dev/team/api:1.2.0",
        "missing referrer: application/vnd.cyclonedx+json",
        "Plan: 4 to copy, 2 to retag, 0 to untag, 0 to delete, 0 host changes; 1 blocked",
    ] {
        assert!(plan.contains(line), "`{line}` missing from:\n{plan}");
    }
    assert!(
        !plan.contains("could not observe"),
        "both registries are up:\n{plan}"
    );
    assert!(!plan.contains("3.17.0") && !plan.contains("3.20.0-rc1") && !plan.contains("0.9.0"));

    let (code, v, out) =
        json_plan(regimen().args(["plan", "-C", &d, "--format", "json", "--detailed-exitcode"]));
    assert_eq!(code, 2, "changes pending: {out}");
    assert_eq!(v["complete"], true, "{out}");
    assert_eq!(v["summary"]["copy"], 4, "{out}");
    assert_eq!(v["summary"]["retag"], 2, "{out}");
    assert_eq!(v["summary"]["blocked"], 1, "{out}");

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 6 done"), "{out}");

    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "second plan must be empty:\n{again}");
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("done"), "second apply changes nothing: {out}");

    // An independent reader sees exactly the source digests.
    for (src, dst, tag) in [
        ("library/alpine", "mirror/alpine", "3.18.0"),
        ("library/alpine", "mirror/alpine", "3.19.1"),
        ("team/api", "prod/api", "1.0.0"),
        ("team/api", "prod/api", "1.1.0"),
    ] {
        assert_eq!(dev.digest(src, tag), prod.digest(dst, tag), "{dst}:{tag}");
        assert_eq!(
            dev.raw_manifest(src, tag),
            prod.raw_manifest(dst, tag),
            "{dst}:{tag} byte for byte"
        );
    }
    assert_eq!(
        dev.digest("team/api", "1.1.0"),
        prod.digest("prod/api", "stable")
    );
    assert_eq!(
        dev.digest("library/alpine", "3.19.1"),
        prod.digest("mirror/alpine", "latest")
    );
    // A container engine pulls what regimen wrote, and sees the source digest.
    podman_pull_digest_matches(
        &prod,
        "prod/api",
        "stable",
        &dev.digest("team/api", "1.1.0"),
    );
    podman_pull_digest_matches(
        &prod,
        "mirror/alpine",
        "3.19.1",
        &dev.digest("library/alpine", "3.19.1"),
    );
    // Every platform of the index is readable.
    for arch in ["amd64", "arm64"] {
        let cfg = skopeo(&[
            "--override-arch",
            arch,
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{}/mirror/alpine:3.19.1", prod.host),
        ]);
        assert!(cfg.contains(arch), "{cfg}");
    }
    // Only what the rules select.
    assert_eq!(
        prod.tags("mirror/alpine"),
        Some(vec![
            "3.18.0".to_string(),
            "3.19.1".to_string(),
            "latest".to_string()
        ])
    );
    let api_tags = prod.tags("prod/api").unwrap();
    let plain: Vec<&String> = api_tags
        .iter()
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    assert_eq!(plain, ["1.0.0", "1.1.0", "stable"], "{api_tags:?}");

    // The SBOMs followed the promotion, readable through the tag schema.
    for tag in ["1.0.0", "1.1.0"] {
        let subject = dev.digest("team/api", tag);
        let want = fallback_referrers(&dev, "team/api", &subject);
        assert_eq!(want.len(), 1);
        assert!(
            api_tags.contains(&subject.replace(':', "-")),
            "no referrers tag for {tag} on prod: {api_tags:?}"
        );
        assert_eq!(fallback_referrers(&prod, "prod/api", &subject), want);
        assert_eq!(
            prod.raw_manifest("prod/api", &want[0]),
            dev.raw_manifest("team/api", &want[0]),
            "SBOM of {tag} byte for byte"
        );
    }
}

const USER: &str = "regimen-bot";
const PASS: &str = "Sup3r-s3cret-Pa55word";

fn auth_policy(secure: &TestRegistry) -> String {
    format!(
        r#"registries:
  secure:
    url: "{}"
    auth: {{username_env: REG_USER, password_env: REG_PASS}}

mirrors:
  - name: alpine-mirror
    from: secure/library/alpine
    to: secure/mirror/alpine
    tags: [3.18.0, 3.19.1]
"#,
        secure.url()
    )
}

/// The password, and the Basic header it would travel in, appear nowhere.
fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PASS),
        "the password leaked into {what}:\n{text}"
    );
    let basic = {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s '{USER}:{PASS}' | base64 -w0")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(!basic.is_empty());
    assert!(
        !text.contains(&basic),
        "the Basic credentials leaked into {what}:\n{text}"
    );
}

#[test]
fn authenticated_registry_with_env_credentials_and_no_secret_in_output() {
    let secure = TestRegistry::start_with_htpasswd(USER, PASS);
    let layout = upstream().join("library/alpine");
    for tag in ["3.18.0", "3.19.1"] {
        seed_from_layout(&secure, &layout, tag, "library/alpine");
    }
    let (tmp, d) = policy_dir(&auth_policy(&secure));
    let planfile = tmp.path().join("plan.json");

    // Without credentials: the registry is reported unobserved (naming the
    // missing variable), nothing is planned or written, and that is not an error.
    let (code, out) = run(regimen()
        .env_remove("REG_USER")
        .env_remove("REG_PASS")
        .args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("could not observe"), "{out}");
    assert!(
        out.contains("REG_USER") || out.contains("REG_PASS"),
        "the reason names the missing variable:\n{out}"
    );
    assert!(!out.contains("+ copy"), "{out}");
    let (code, v, out) = json_plan(
        regimen()
            .env_remove("REG_USER")
            .env_remove("REG_PASS")
            .args(["plan", "-C", &d, "--format", "json"]),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["complete"], false, "{out}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 0, "{out}");
    let (code, out) = run(regimen()
        .env_remove("REG_USER")
        .env_remove("REG_PASS")
        .args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(secure.tags("mirror/alpine"), None, "nothing written");

    // A wrong password: one clear error, not a retry storm, and it is not printed.
    let before = secure.log().lines().count();
    let (code, out) = run(regimen()
        .env("REG_USER", USER)
        .env("REG_PASS", "wrong-Pa55word-zz")
        .args(["plan", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("could not observe"), "{out}");
    let lower = out.to_lowercase();
    assert!(
        [
            "denied",
            "unauthorized",
            "401",
            "credential",
            "authentication"
        ]
        .iter()
        .any(|w| lower.contains(w)),
        "the reason says the credentials were refused:\n{out}"
    );
    assert!(!out.contains("wrong-Pa55word-zz"), "{out}");
    let log = secure.log();
    let requests = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
        .count();
    assert!(
        requests <= 12,
        "a refused password must not cause a retry storm ({requests} requests):\n{log}"
    );

    // With credentials: plan, save, apply, converge.
    let with_env = |args: &[&str]| {
        let mut c = regimen();
        c.env("REG_USER", USER).env("REG_PASS", PASS).args(args);
        c
    };
    let (code, out) = run(&mut with_env(&[
        "plan",
        "-v",
        "-C",
        &d,
        "--out",
        planfile.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}");
    assert_no_secret("plan output", &out);
    assert!(!out.contains("could not observe"), "{out}");
    assert!(
        out.contains("secure/library/alpine:3.18.0 -> secure/mirror/alpine:3.18.0"),
        "{out}"
    );
    let saved = std::fs::read_to_string(&planfile).unwrap();
    assert_no_secret("the saved plan", &saved);

    let (code, out) = run(&mut with_env(&[
        "apply",
        "-v",
        "-C",
        &d,
        planfile.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 2 done"), "{out}");
    assert_no_secret("apply output", &out);

    let (code, out) = run(&mut with_env(&["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "converged:\n{out}");
    assert_no_secret("plan output", &out);
    for tag in ["3.18.0", "3.19.1"] {
        assert_eq!(
            secure.digest("library/alpine", tag),
            secure.digest("mirror/alpine", tag),
            "{tag}"
        );
    }
}

#[test]
fn authenticated_registry_with_docker_config_json() {
    let secure = TestRegistry::start_with_htpasswd(USER, PASS);
    seed_from_layout(
        &secure,
        &upstream().join("library/alpine"),
        "3.18.0",
        "library/alpine",
    );
    let (tmp, d) = policy_dir(&format!(
        r#"registries:
  secure: {{url: "{}"}}

mirrors:
  - name: alpine-mirror
    from: secure/library/alpine
    to: secure/mirror/alpine
    tags: [3.18.0]
"#,
        secure.url()
    ));
    let cfg = common::docker_config(tmp.path(), &secure.host, USER, PASS);

    let (code, out) =
        run(regimen()
            .env("DOCKER_CONFIG", &cfg)
            .args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    assert_no_secret("apply output", &out);
    assert_eq!(
        secure.digest("library/alpine", "3.18.0"),
        secure.digest("mirror/alpine", "3.18.0")
    );
    let (code, out) =
        run(regimen()
            .env("DOCKER_CONFIG", &cfg)
            .args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "converged:\n{out}");

    // Without the config.json the registry cannot be read: unobserved, nothing written.
    let (code, v, out) = json_plan(regimen().args(["plan", "-C", &d, "--format", "json"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["complete"], false, "{out}");
}

#[test]
fn unreachable_registry_is_unknown_not_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upstream");
    copy_dir(&upstream(), &up);
    let dead = free_port();
    let (_p, d) = policy_dir(&format!(
        r#"registries:
  upstream: {{url: "oci:{}"}}
  prod: {{url: "http://127.0.0.1:{dead}"}}

mirrors:
  - name: alpine-mirror
    from: upstream/library/alpine
    to: prod/mirror/alpine
    tags: {{semver: ">=3.18", exclude: ["-rc"]}}
"#,
        up.display()
    ));

    let (code, out) = run(regimen().args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("# could not observe"), "{out}");
    assert!(out.contains("prod"), "{out}");
    assert!(out.contains("incomplete"), "{out}");
    assert!(
        !out.contains("+ copy"),
        "no changes where regimen could not look:\n{out}"
    );

    let (code, v, out) = json_plan(regimen().args(["plan", "-C", &d, "--format", "json"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["complete"], false, "{out}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 0, "{out}");
    let unobserved = v["unobserved"].as_array().unwrap();
    assert!(
        unobserved
            .iter()
            .any(|u| u["subject"].as_str().unwrap().starts_with("prod")),
        "{out}"
    );

    let (code, out) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(
        code, 0,
        "nothing to change where nothing could be seen:\n{out}"
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Apply complete"), "{out}");
}

/// `podman pull` into a private store; the pulled image's digest must be `want`.
/// podman is a required test tool (scripts/test.sh installs it).
fn podman_pull_digest_matches(reg: &TestRegistry, repo: &str, tag: &str, want: &str) {
    let store = tempfile::tempdir().unwrap();
    let root = store.path().join("root");
    let runroot = store.path().join("run");
    let image = format!("{}/{repo}:{tag}", reg.host);
    let base = |args: &[&str]| {
        let out = std::process::Command::new("podman")
            .args([
                "--root",
                root.to_str().unwrap(),
                "--runroot",
                runroot.to_str().unwrap(),
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .output()
            .expect("podman is required: run scripts/test.sh, which installs it");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    base(&["pull", "-q", "--tls-verify=false", &image]);
    let digest = base(&["image", "inspect", "--format", "{{.Digest}}", &image]);
    assert_eq!(digest.trim(), want, "podman sees {image} at another digest");
}

/// `docker-registry`'s access-log lines since line `from` answered with `status`.
fn answered(reg: &TestRegistry, from: usize, status: &str) -> usize {
    reg.log()
        .lines()
        .skip(from)
        .filter(|l| l.contains("HTTP/1.1\" ") && l.contains(&format!("\" {status} ")))
        .count()
}

#[test]
fn a_wrong_password_is_refused_once_per_registry_not_once_per_repo() {
    let secure = TestRegistry::start_with_htpasswd(USER, PASS);
    let mut yaml = format!(
        "registries:\n  secure:\n    url: \"{}\"\n    auth: {{username_env: REG_USER, password_env: REG_PASS}}\nmirrors:\n",
        secure.url()
    );
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - name: m{i}\n    from: secure/library/app{i}\n    to: secure/mirror/app{i}\n    tags: [\"1.0\"]\n"
        ));
    }
    let (_tmp, d) = policy_dir(&yaml);
    let before = secure.log().lines().count();
    let (code, out) = run(regimen()
        .env("REG_USER", USER)
        .env("REG_PASS", "wrong-Pa55word-zz")
        .args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("could not observe"), "{out}");
    assert!(out.contains("check the user name and password"), "{out}");
    assert!(!out.contains("wrong-Pa55word-zz"), "{out}");
    let refused = answered(&secure, before, "401");
    assert!(
        refused <= 3,
        "10 repos, one wrong password: {refused} refused requests:\n{}",
        secure.log()
    );
}

#[test]
fn an_unset_password_env_names_the_registry_its_place_and_the_variable() {
    let secure = TestRegistry::start_with_htpasswd(USER, PASS);
    let (_tmp, d) = policy_dir(&auth_policy(&secure));
    let (code, out) = run(regimen()
        .env("REG_USER", USER)
        .env_remove("REG_PASS")
        .args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("registry `secure` (")
            && out.contains("policy.yaml:3:")
            && out.contains("`REG_PASS` (password_env) is not set"),
        "{out}"
    );
}

/// A `docker-credential-NAME` stand-in in `dir` running `body`.
fn helper_script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn docker_config_helpers_fall_back_to_anonymous_and_bad_configs_are_not_quoted() {
    let open_reg = TestRegistry::start();
    let secure = TestRegistry::start_with_htpasswd(USER, PASS);
    seed_from_layout(
        &open_reg,
        &upstream().join("library/alpine"),
        "3.18.0",
        "library/alpine",
    );
    let (tmp, d) = policy_dir(&format!(
        r#"registries:
  open: {{url: "{}"}}
  secure: {{url: "{}"}}

mirrors:
  - name: alpine-mirror
    from: open/library/alpine
    to: secure/mirror/alpine
    tags: [3.18.0]
"#,
        open_reg.url(),
        secure.url()
    ));
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    helper_script(
        &bin,
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let cfg = tmp.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();

    // A credHelpers helper with nothing for the host: anonymous, as with
    // docker; a credsStore that is not installed: anonymous, and the 401 says so.
    std::fs::write(
        cfg.join("config.json"),
        serde_json::json!({
            "credHelpers": {open_reg.host.clone(): "empty"},
            "credsStore": "regimen-not-installed"
        })
        .to_string(),
    )
    .unwrap();
    let (code, v, out) = json_plan(
        regimen()
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", path_with(&bin))
            .args(["plan", "-C", &d, "--format", "json"]),
    );
    assert_eq!(code, 0, "{out}");
    let unobserved = v["unobserved"].to_string();
    assert!(!unobserved.contains("open"), "{out}");
    assert!(
        unobserved.contains("docker-credential-regimen-not-installed")
            && unobserved.contains("could not be run"),
        "{out}"
    );

    // A malformed config.json: located, never quoted.
    let enc = common::base64(format!("{USER}:{PASS}").as_bytes());
    for text in [
        format!(
            r#"{{"auths":{{"{}":{{"username":"u","password":98765432101}}}}}}"#,
            secure.host
        ),
        format!(r#"{{"auths":{{"{}":"{enc}"}}}}"#, secure.host),
    ] {
        std::fs::write(cfg.join("config.json"), &text).unwrap();
        let (code, out) = run(regimen()
            .env("DOCKER_CONFIG", &cfg)
            .args(["plan", "-C", &d]));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("config.json:1:"), "{out}");
        assert!(!out.contains("98765432101") && !out.contains(&enc), "{out}");
        assert_no_secret("plan output", &out);
    }
}

/// Many tags on one image (a CI that tags every build of an unchanged
/// image): its manifest and referrers are read from the source once per
/// run, not once per tag.
#[test]
fn many_tags_of_one_image_read_it_once() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = common::open(&src.host);
    let digest = common::block_on(async {
        let repo: regimen::model::Repo = "ci/app".parse().unwrap();
        let spec = regimen::testkit::ImageSpec::new("2026-01-02T03:04:05Z").with_layer("a", "one");
        let d = regimen::testkit::push_image(s.as_ref(), &repo, Some(&common::tag("b-0")), &spec)
            .await
            .unwrap();
        let m = s.get_manifest(&repo, d.as_str()).await.unwrap().unwrap();
        for i in 1..30 {
            s.put_manifest(&repo, Some(&common::tag(&format!("b-{i}"))), &m)
                .await
                .unwrap();
        }
        d
    });
    let (_tmp, dir) = policy_dir(&format!(
        "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
         mirrors:\n  - {{from: src/ci/app, to: dst/ci/app}}\n",
        src.host, dst.host
    ));
    let before = src.log();
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("30 done"), "{out}");
    let log = src.log()[before.len()..].to_string();
    let by_digest = log
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/ci/app/manifests/{digest} ")))
        .count();
    let referrers_tag = log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "\"GET /v2/ci/app/manifests/{} ",
                digest.referrers_tag()
            ))
        })
        .count();
    assert_eq!((by_digest, referrers_tag), (1, 1), "{log}");
    assert_eq!(dst.digest("ci/app", "b-29"), digest.to_string());
}

/// A platform-filtered mirror's plan reads each source index once (one
/// manifest GET), never its children or their configs: on a registry that
/// counts manifest GETs as pulls (Docker Hub), every child would count.
#[test]
fn a_filtered_mirror_plan_reads_only_the_source_index() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let layout = upstream().join("library/alpine");
    for tag in ["3.19.1", "3.18.0"] {
        seed_from_layout(&src, &layout, tag, "library/alpine");
    }
    let (_tmp, dir) = policy_dir(&format!(
        "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
         mirrors:\n  - {{from: src/library/alpine, to: dst/amd64/alpine, referrers: false, platforms: [linux/amd64]}}\n",
        src.host, dst.host
    ));
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 0, "{out}");
    let before = src.log().len();
    let (code, out) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &dir]));
    assert_eq!(code, 0, "a filtered mirror converges: {out}");
    let log = src.log()[before..].to_string();
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/library/alpine/"))
        .filter(|l| !l.contains("/tags/list"))
        .collect();
    let index = src.digest("library/alpine", "3.19.1");
    assert_eq!(gets.len(), 1, "one GET, of the index:\n{}", gets.join("\n"));
    assert!(
        gets[0].contains(&format!("/manifests/{index} ")),
        "{}",
        gets[0]
    );
}
