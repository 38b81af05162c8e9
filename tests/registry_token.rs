//! The bearer token flow against a real Debian `docker-registry`
//! (Distribution 2.8) configured with `auth: token:`, backed by the test
//! token server in tests/common/token.rs: mirrors within one registry and
//! between two, token caching per scope set, cross-repo mounts asking one
//! token for pull on the source and push on the target, retention asking
//! `delete` (and refused it), a token expiring mid-run, a wrong password,
//! and credentials from docker's config.json. Everything goes through the
//! `regimen` binary and is checked with skopeo, the registry's access log
//! and the token server's record of what it was asked.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::proxy::FaultProxy;
use common::token::TokenServer;
use common::{regimen, run, seed_from_layout, skopeo, TestRegistry};

/// The account skopeo seeds and reads with (everything allowed).
const ADMIN: (&str, &str) = ("admin", "Adm1n-Pa55word");
/// regimen's account.
const BOT: &str = "regimen-bot";
const PASS: &str = "T0ken-fl0w-s3cret-Pa55";
/// An account allowed to pull and push, not to delete.
const NODEL: &str = "no-delete-bot";

fn upstream() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/upstream")
}

fn alpine() -> PathBuf {
    upstream().join("library/alpine")
}

/// A token server with the admin, `BOT` (pull, push, delete) and `NODEL`
/// (pull, push), and a registry trusting it.
fn token_registry() -> (TokenServer, TestRegistry) {
    let ts = TokenServer::start();
    ts.user(ADMIN.0, ADMIN.1, &["pull", "push", "delete"])
        .user(BOT, PASS, &["pull", "push", "delete"])
        .user(NODEL, PASS, &["pull", "push"]);
    let reg = TestRegistry::start_with_token(&ts, ADMIN);
    (ts, reg)
}

fn policy_dir(yaml: &str) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), yaml).unwrap();
    (tmp, dir.to_str().unwrap().to_string())
}

/// `name: {url, auth from REG_USER / REG_PASS}`.
fn registry_yaml(name: &str, url: &str) -> String {
    format!(
        "  {name}:\n    url: \"{url}\"\n    auth: {{username_env: REG_USER, password_env: REG_PASS}}\n"
    )
}

/// regimen with `user` / `pass` in REG_USER / REG_PASS.
fn as_user(user: &str, pass: &str) -> assert_cmd::Command {
    let mut c = regimen();
    c.env("REG_USER", user)
        .env("REG_PASS", pass)
        .timeout(Duration::from_secs(120));
    c
}

/// Copies `oci:LAYOUT:FROM_TAG` to `REPO:TAG` (digests preserved).
fn seed_as(reg: &TestRegistry, layout: &Path, from_tag: &str, repo: &str, tag: &str) {
    let (u, p) = reg.creds.clone().unwrap();
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{u}:{p}"),
        &format!("oci:{}:{from_tag}", layout.display()),
        &format!("docker://{}/{repo}:{tag}", reg.host),
    ]);
}

/// The registry's access-log lines after the first `from` lines.
fn access_log(reg: &TestRegistry, from: usize) -> Vec<String> {
    reg.log()
        .lines()
        .skip(from)
        .filter(|l| l.contains(" HTTP/1.1\" "))
        .map(str::to_string)
        .collect()
}

fn log_len(reg: &TestRegistry) -> usize {
    reg.log().lines().count()
}

/// The password, its Basic header and every token handed out appear nowhere.
fn assert_no_secret(ts: &TokenServer, what: &str, text: &str) {
    assert!(
        !text.contains(PASS),
        "the password leaked into {what}:\n{text}"
    );
    let basic = common::base64(format!("{BOT}:{PASS}").as_bytes());
    assert!(
        !text.contains(&basic),
        "the Basic credentials leaked into {what}:\n{text}"
    );
    for t in ts.tokens() {
        // The signature alone is enough to recognise a token.
        let sig = t.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "a token leaked into {what}:\n{text}");
    }
}

/// Asserts no scope set was asked for more than `n` times in `reqs`.
/// `regimen apply` plans, then applies with registries opened anew: each
/// phase has its own token cache, so a set may be asked twice there.
fn assert_each_set_asked_at_most(reqs: &[common::token::TokenRequest], n: usize) {
    let mut count: std::collections::BTreeMap<Vec<String>, usize> = Default::default();
    for r in reqs {
        let mut s = r.scopes.clone();
        s.sort();
        *count.entry(s).or_default() += 1;
    }
    let over: Vec<_> = count.iter().filter(|(_, c)| **c > n).collect();
    assert!(
        over.is_empty(),
        "scope sets asked more than {n} times: {over:?}\nall requests: {reqs:#?}"
    );
}

/// The distinct scope sets in `reqs` (each sorted).
fn scope_sets(reqs: &[common::token::TokenRequest]) -> BTreeSet<Vec<String>> {
    reqs.iter()
        .map(|r| {
            let mut s = r.scopes.clone();
            s.sort();
            s
        })
        .collect()
}

#[test]
fn harness_token_registry_takes_the_servers_tokens_only() {
    let (ts, reg) = token_registry();
    // Anonymous: refused with a Bearer challenge naming the token server.
    let r = common::try_http(&reg.host, "GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(r.status, 401);
    let ch = r.header("www-authenticate").unwrap_or_default().to_string();
    assert!(
        ch.starts_with("Bearer ") && ch.contains(&ts.realm()),
        "{ch}"
    );
    // skopeo goes through the token flow with the admin's password.
    seed_from_layout(&reg, &alpine(), "3.18.0", "library/alpine");
    assert_eq!(reg.tags("library/alpine"), Some(vec!["3.18.0".to_string()]));
    let asked = ts.requests_by(ADMIN.0);
    assert!(!asked.is_empty(), "skopeo asked the token server");
    assert!(
        asked.iter().any(|r| r
            .scopes
            .contains(&"repository:library/alpine:pull,push".to_string())),
        "{asked:?}"
    );
    // A wrong password is refused by the token server.
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{BOT}:wrong"),
            &format!("docker://{}/library/alpine:3.18.0", reg.host),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(ts
        .requests()
        .iter()
        .any(|r| r.user.as_deref() == Some(BOT) && r.status == 401));
    // A token lacking the action is refused by the registry.
    let r = tags_list_with_token(&ts, &reg, "push", 300, 1);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("insufficient_scope"),
        "{:?}",
        r.headers
    );
    // An expired one too (the server's lifetime, Distribution's leeway included).
    let r = tags_list_with_token(&ts, &reg, "pull", -1, 2);
    assert_eq!(r.status, 401, "{}", r.text());
}

/// `GET /v2/library/alpine/tags/list` with a token the test server mints
/// for `action` on that repo, living `ttl` seconds (numbered `n`).
fn tags_list_with_token(
    ts: &TokenServer,
    reg: &TestRegistry,
    action: &str,
    ttl: i64,
    n: u64,
) -> common::HttpResponse {
    let t = ts.issuer.mint(
        "x",
        &serde_json::json!([{"type": "repository", "name": "library/alpine", "actions": [action]}]),
        ttl,
        n,
    );
    common::try_http(
        &reg.host,
        "GET",
        "/v2/library/alpine/tags/list",
        &[("Authorization", &format!("Bearer {t}"))],
        &[],
    )
    .unwrap()
}

#[test]
fn mirror_within_a_token_registry_mounts_blobs_and_caches_tokens() {
    let (ts, reg) = token_registry();
    for tag in ["3.18.0", "3.19.1"] {
        seed_from_layout(&reg, &alpine(), tag, "library/alpine");
    }
    let (_tmp, d) = policy_dir(&format!(
        "registries:\n{}mirrors:\n  - name: alpine-mirror\n    from: secure/library/alpine\n    to: secure/mirror/alpine\n    tags: [3.18.0, 3.19.1]\n",
        registry_yaml("secure", &reg.url())
    ));
    // A plan reads both repos, several requests at once: one token per
    // scope set, however many requests use it.
    let before = log_len(&reg);
    let (code, out) = run(as_user(BOT, PASS).args(["plan", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Plan: 2 to copy"), "{out}");
    let asked = ts.requests_by(BOT);
    assert_each_set_asked_at_most(&asked, 1);
    assert_eq!(
        scope_sets(&asked),
        BTreeSet::from([
            vec!["repository:library/alpine:pull".to_string()],
            vec!["repository:mirror/alpine:pull".to_string()],
        ])
    );
    let requests = access_log(&reg, before);
    assert!(
        asked.len() * 2 <= requests.len(),
        "{} token requests for {} registry requests",
        asked.len(),
        requests.len()
    );
    ts.clear();

    let before = log_len(&reg);
    let (code, out) = run(as_user(BOT, PASS).args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 2 done"), "{out}");
    assert_no_secret(&ts, "apply output", &out);

    // An independent reader sees the source digests.
    for tag in ["3.18.0", "3.19.1"] {
        assert_eq!(
            reg.digest("library/alpine", tag),
            reg.digest("mirror/alpine", tag),
            "{tag}"
        );
    }

    // Tokens are cached per scope set: each set asked for once, and far
    // fewer token requests than registry requests.
    let asked = ts.requests_by(BOT);
    let sets = scope_sets(&asked);
    let requests = access_log(&reg, before);
    assert!(
        asked.iter().all(|r| r.status == 200),
        "every token request was granted: {asked:#?}"
    );
    assert_each_set_asked_at_most(&asked, 2);
    assert!(
        asked.len() * 4 <= requests.len(),
        "{} token requests for {} registry requests:\n{asked:#?}\n{}",
        asked.len(),
        requests.len(),
        requests.join("\n")
    );

    // The cross-repo mount asked one token covering pull on the source and
    // push on the target, and the registry mounted: no blob was uploaded.
    let mount_scopes = vec![
        "repository:library/alpine:pull".to_string(),
        "repository:mirror/alpine:pull,push".to_string(),
    ];
    assert!(
        sets.contains(&mount_scopes),
        "no token for the mount: {sets:#?}"
    );
    let mounted: Vec<&String> = requests
        .iter()
        .filter(|l| {
            l.contains("\"POST /v2/mirror/alpine/blobs/uploads/?")
                && l.contains("mount=")
                && l.contains("\" 201 ")
        })
        .collect();
    assert!(!mounted.is_empty(), "no mount:\n{}", requests.join("\n"));
    let uploads: Vec<&String> = requests
        .iter()
        .filter(|l| l.contains("\"PUT /v2/mirror/alpine/blobs/uploads/") || l.contains("\"PATCH "))
        .collect();
    assert!(uploads.is_empty(), "blobs were re-uploaded: {uploads:#?}");

    // Converged: nothing to do, and the second apply changes nothing.
    let (code, again) = run(as_user(BOT, PASS).args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "second plan must be empty:\n{again}");
    let (code, out) = run(as_user(BOT, PASS).args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("done"), "second apply changes nothing: {out}");
}

#[test]
fn mirror_between_two_token_registries() {
    let (ts, dev) = token_registry();
    let prod = TestRegistry::start_with_token(&ts, ADMIN);
    seed_from_layout(&dev, &alpine(), "3.19.1", "library/alpine");
    let (_tmp, d) = policy_dir(&format!(
        "registries:\n{}{}mirrors:\n  - name: alpine-mirror\n    from: dev/library/alpine\n    to: prod/mirror/alpine\n    tags: [3.19.1]\n",
        registry_yaml("dev", &dev.url()),
        registry_yaml("prod", &prod.url())
    ));
    let before = (log_len(&dev), log_len(&prod));
    let (code, out) = run(as_user(BOT, PASS).args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    assert_no_secret(&ts, "apply output", &out);
    assert_eq!(
        dev.digest("library/alpine", "3.19.1"),
        prod.digest("mirror/alpine", "3.19.1")
    );
    // Each platform's blobs were read from dev and written to prod.
    let uploads = access_log(&prod, before.1)
        .iter()
        .filter(|l| l.contains("\"PUT /v2/mirror/alpine/blobs/uploads/") && l.contains("\" 201 "))
        .count();
    assert!(uploads > 0, "{}", prod.log());
    // Both registries use the one token server: each scope set once per
    // registry (the same set on two registries is two tokens).
    let asked = ts.requests_by(BOT);
    assert!(asked.iter().all(|r| r.status == 200), "{asked:#?}");
    let sets = scope_sets(&asked);
    for want in [
        "repository:library/alpine:pull",
        "repository:mirror/alpine:pull,push",
    ] {
        assert!(
            sets.iter().any(|s| s == &vec![want.to_string()]),
            "{want}: {sets:#?}"
        );
    }
    // Plan and apply, on each registry: at most 4 asks of a set.
    assert_each_set_asked_at_most(&asked, 4);
    let reads = access_log(&dev, before.0).len() + access_log(&prod, before.1).len();
    assert!(
        asked.len() * 4 <= reads,
        "{} tokens, {reads} requests",
        asked.len()
    );

    let (code, again) = run(as_user(BOT, PASS).args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "converged:\n{again}");
}

/// team/app: `pr-1` (its own image), `pr-2` (sharing `main`'s image: an
/// untag), `main`. Retention deletes `^pr-`.
fn seed_retention(reg: &TestRegistry) {
    seed_as(reg, &alpine(), "3.18.0", "team/app", "pr-1");
    seed_as(reg, &alpine(), "3.19.1", "team/app", "pr-2");
    seed_as(reg, &alpine(), "3.19.1", "team/app", "main");
}

#[test]
fn retention_asks_the_delete_scope_and_a_refused_delete_is_one_clear_error() {
    let (ts, reg) = token_registry();
    seed_retention(&reg);
    let pr1 = reg.digest("team/app", "pr-1");
    let main = reg.digest("team/app", "main");
    let (_tmp, d) = policy_dir(&format!(
        "registries:\n{}retention:\n  - name: clean\n    repos: [secure/team/app]\n    delete: {{tags: {{regex: \"^pr-\"}}}}\n",
        registry_yaml("secure", &reg.url())
    ));

    // A user the token server does not allow to delete: the apply fails,
    // says which registry, repo and operation, and the tags stay where they were.
    let (code, out) = run(as_user(NODEL, PASS).args(["apply", "--auto-approve", "-C", &d]));
    assert_ne!(code, 0, "a refused deletion fails the apply:\n{out}");
    assert!(
        out.contains("registry secure") && out.contains("team/app") && out.contains("delete"),
        "the error names registry, repo and operation:\n{out}"
    );
    assert!(
        out.contains("does not allow delete on repo team/app"),
        "the error says the token lacks delete:\n{out}"
    );
    let asked = ts.requests_by(NODEL);
    assert!(
        asked
            .iter()
            .any(|r| r.scopes == ["repository:team/app:delete"]
                && r.granted == ["repository:team/app:"]),
        "the delete scope was asked and refused: {asked:#?}"
    );
    assert_eq!(
        reg.tags("team/app"),
        Some(vec!["main".into(), "pr-1".into(), "pr-2".into()])
    );
    assert_eq!(reg.digest("team/app", "pr-1"), pr1);
    assert_eq!(
        reg.digest("team/app", "pr-2"),
        main,
        "not left on a placeholder"
    );
    assert_eq!(reg.digest("team/app", "main"), main);

    // A user allowed to delete: both go (pr-1 deleted by digest, pr-2
    // untagged), main stays on its image.
    let (code, out) = run(as_user(BOT, PASS).args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 2 done"), "{out}");
    assert_no_secret(&ts, "apply output", &out);
    assert_eq!(reg.tags("team/app"), Some(vec!["main".into()]));
    assert_eq!(reg.digest("team/app", "main"), main);
    let asked = ts.requests_by(BOT);
    assert!(
        asked
            .iter()
            .any(|r| r.scopes == ["repository:team/app:delete"]
                && r.granted == ["repository:team/app:delete"]),
        "{asked:#?}"
    );
    assert_each_set_asked_at_most(&asked, 2);
}

#[test]
fn a_token_expiring_mid_run_is_renewed_and_the_run_succeeds() {
    let (ts, reg) = token_registry();
    for tag in ["3.18.0", "3.19.1"] {
        seed_from_layout(&reg, &alpine(), tag, "library/alpine");
    }
    // Tokens the registry takes for 2 s while the token server promises
    // 300 (a token revoked, or a clock ahead): only the registry's 401 can
    // tell regimen. The first manifest PUT is held 3 s on its way, so the
    // token it carries has expired when the registry reads it.
    ts.set_lifetime(2, Some(300));
    let proxy = FaultProxy::start(&reg.host);
    let held = proxy.delay(
        "PUT",
        "/v2/mirror/alpine/manifests/",
        Duration::from_secs(3),
        1,
    );
    let (_tmp, d) = policy_dir(&format!(
        "registries:\n{}mirrors:\n  - name: alpine-mirror\n    from: secure/library/alpine\n    to: secure/mirror/alpine\n    tags: [3.18.0, 3.19.1]\n",
        registry_yaml("secure", &proxy.url())
    ));
    let before = log_len(&reg);
    let (code, out) = run(as_user(BOT, PASS).args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 2 done"), "{out}");
    assert_no_secret(&ts, "apply output", &out);
    assert_eq!(proxy.counts(held).1, 1, "the PUT was held");
    let log = access_log(&reg, before);
    let refused: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("\"PUT /v2/mirror/alpine/manifests/") && l.contains("\" 401 "))
        .collect();
    assert!(
        !refused.is_empty(),
        "the held PUT's token had expired:\n{}",
        log.join("\n")
    );
    // Renewed with the scope it had: Distribution's challenge says
    // `push,pull`, the same scope, not a second one to ask.
    let push = "repository:mirror/alpine:pull,push".to_string();
    let renewed = ts
        .requests_by(BOT)
        .iter()
        .filter(|r| r.scopes == [push.clone()])
        .count();
    assert!(
        renewed >= 2,
        "the push token was renewed: {:#?}",
        ts.requests_by(BOT)
    );
    for tag in ["3.18.0", "3.19.1"] {
        assert_eq!(
            reg.digest("library/alpine", tag),
            reg.digest("mirror/alpine", tag),
            "{tag}"
        );
    }
}

#[test]
fn a_wrong_password_is_one_clear_error_without_a_retry_storm() {
    let (ts, reg) = token_registry();
    seed_from_layout(&reg, &alpine(), "3.18.0", "library/alpine");
    let mut yaml = format!(
        "registries:\n{}mirrors:\n",
        registry_yaml("secure", &reg.url())
    );
    for i in 0..6 {
        yaml.push_str(&format!(
            "  - name: m{i}\n    from: secure/library/app{i}\n    to: secure/mirror/app{i}\n    tags: [\"1.0\"]\n"
        ));
    }
    yaml.push_str("  - name: alpine\n    from: secure/library/alpine\n    to: secure/mirror/alpine\n    tags: [3.18.0]\n");
    let (_tmp, d) = policy_dir(&yaml);
    let wrong = "wr0ng-Pa55word-zz";
    let before = log_len(&reg);

    let (code, out) = run(as_user(BOT, wrong).args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "unobserved is no error:\n{out}");
    assert!(out.contains("could not observe"), "{out}");
    assert!(
        out.contains("check the user name and password"),
        "the reason says the credentials were refused:\n{out}"
    );
    assert!(!out.contains(wrong), "{out}");
    assert!(!out.contains("Apply complete"), "nothing written: {out}");
    let asked = ts.requests_by(BOT);
    assert!(
        !asked.is_empty() && asked.len() <= 2,
        "a refused password is asked at most twice: {asked:#?}"
    );
    assert!(asked.iter().all(|r| r.status == 401), "{asked:#?}");
    let log = access_log(&reg, before);
    assert!(
        log.len() <= 4,
        "no request storm on the registry either:\n{}",
        log.join("\n")
    );
    assert_eq!(reg.tags("mirror/alpine"), None, "nothing written");
}

#[test]
fn docker_config_credentials_work_for_the_token_flow() {
    let (ts, reg) = token_registry();
    seed_from_layout(&reg, &alpine(), "3.18.0", "library/alpine");
    let (tmp, d) = policy_dir(&format!(
        "registries:\n  secure: {{url: \"{}\"}}\nmirrors:\n  - name: alpine-mirror\n    from: secure/library/alpine\n    to: secure/mirror/alpine\n    tags: [3.18.0]\n",
        reg.url()
    ));
    let cfg = common::docker_config(tmp.path(), &reg.host, BOT, PASS);

    let (code, out) =
        run(regimen()
            .env("DOCKER_CONFIG", &cfg)
            .args(["apply", "--auto-approve", "-v", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    assert_no_secret(&ts, "apply output", &out);
    assert_eq!(
        reg.digest("library/alpine", "3.18.0"),
        reg.digest("mirror/alpine", "3.18.0")
    );
    let asked = ts.requests_by(BOT);
    assert!(
        !asked.is_empty() && asked.iter().all(|r| r.status == 200),
        "the token server got config.json's credentials: {:#?}",
        ts.requests()
    );
    assert_each_set_asked_at_most(&asked, 2);

    // Without the config.json: the token server wants credentials, the
    // registry is unobserved, and the reason says none are configured.
    let (code, out) = run(regimen().args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("could not observe"), "{out}");
    assert!(out.contains("none are configured"), "{out}");
}
