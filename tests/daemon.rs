//! `regimen run` end to end (issue 7's "How we will know"): a real Git
//! repository behind a file:// remote, a real `docker-registry`, the daemon
//! as a child process polled over its own HTTP endpoints. No fixed sleeps:
//! every wait polls with a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    block_on, empty_docker_config, free_port, git, json_plan, open, regimen, try_http, TestRegistry,
};
use regimen::testkit::{push_image, ImageSpec};

/// A bare "remote" and a clone to commit from.
struct PolicyRepo {
    _tmp: tempfile::TempDir,
    remote: PathBuf,
    work: PathBuf,
}

impl PolicyRepo {
    fn new() -> PolicyRepo {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("policy.git");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "policy.git"],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        PolicyRepo {
            _tmp: tmp,
            remote,
            work,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// Commits `text` as policy/regimen.yaml and pushes.
    fn commit(&self, text: &str, msg: &str) {
        let dir = self.work.join("policy");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("regimen.yaml"), text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", msg]);
        git(&self.work, &["push", "-q", "origin", "main"]);
    }
}

fn policy(host: &str, tags: &[&str]) -> String {
    format!(
        "registries:\n  dev: {{url: \"http://{host}\"}}\n\
         mirrors:\n  - name: app\n    from: dev/src/app\n    to: dev/dst/app\n    tags: [{}]\n",
        tags.join(", ")
    )
}

/// Pushes `src/app:V` for each version, its one layer `"{label} V"`: the
/// source the `src/app` mirror tests start from.
fn push_src_app(reg: &TestRegistry, label: &str, versions: &[&str]) {
    let r = open(&reg.host);
    let src: regimen::model::Repo = "src/app".parse().unwrap();
    block_on(async {
        for v in versions {
            let spec =
                ImageSpec::new("2026-01-01T00:00:00Z").with_layer("v", format!("{label} {v}"));
            push_image(r.as_ref(), &src, Some(&v.parse().unwrap()), &spec)
                .await
                .unwrap();
        }
    });
}

/// `root/policy/regimen.yaml` holding `text`; returns `root/policy`, the
/// directory the daemon is pointed at with `-C`.
fn policy_dir(root: &Path, text: &str) -> PathBuf {
    let dir = root.join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("regimen.yaml"), text).unwrap();
    dir
}

/// The daemon as a child process; killed on drop if still running.
struct Daemon {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl Daemon {
    fn start(args: &[&str], log: PathBuf) -> Daemon {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let bin = assert_cmd::cargo::cargo_bin("regimen");
        let child = Command::new(bin)
            .args(["--log-format", "json", "run", "--listen", &addr])
            .args(args)
            .env("DOCKER_CONFIG", empty_docker_config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log, addr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        match try_http(&self.addr, "GET", path, &[], &[]) {
            Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// The value of a metric line starting with `prefix` (name and labels).
    fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- daemon log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> i32 {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!("the daemon did not exit after SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tags(reg: &TestRegistry, repo: &str) -> Vec<String> {
    reg.tags(repo).unwrap_or_default()
}

#[test]
fn daemon_follows_commits_survives_a_bad_one_and_stops_cleanly() {
    let reg = TestRegistry::start();
    push_src_app(&reg, "app", &["1.0", "1.1", "1.2"]);
    let repo = PolicyRepo::new();
    repo.commit(&policy(&reg.host, &["\"1.0\""]), "mirror 1.0");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut d = Daemon::start(
        &[
            "--git",
            &repo.url(),
            "--branch",
            "main",
            "--path",
            "policy",
            "--interval",
            "1s",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        tmp.path().join("daemon.log"),
    );

    // 1. The first commit is applied on start.
    d.wait_until("1.0 mirrored", Duration::from_secs(30), |_| {
        tags(&reg, "dst/app") == ["1.0"]
    });
    d.wait_until("ready", Duration::from_secs(10), |d| {
        d.get("/readyz").0 == 200
    });
    assert_eq!(d.get("/healthz"), (200, "ok\n".to_string()));

    // 2. A new commit is applied within about one interval.
    repo.commit(&policy(&reg.host, &["\"1.0\"", "\"1.1\""]), "add 1.1");
    let t0 = Instant::now();
    d.wait_until("1.1 mirrored", Duration::from_secs(30), |_| {
        tags(&reg, "dst/app") == ["1.0", "1.1"]
    });
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "a commit took {:?} to be applied with --interval 1s",
        t0.elapsed()
    );
    let head = String::from_utf8(
        Command::new("git")
            .arg("-C")
            .arg(&repo.work)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let head = head.trim();
    // Each change is logged with the commit it came from.
    d.wait_until(
        "the change logged with its revision",
        Duration::from_secs(10),
        |d| {
            d.log().lines().any(|l| {
                l.contains(&format!("\"revision\":\"{head}\""))
                    && l.contains("\"target\":\"dev/dst/app:1.1\"")
                    && l.contains("\"outcome\":\"done\"")
            })
        },
    );
    // Its reconcile says what started it: the interval found a new commit.
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains(&format!("\"revision\":\"{head}\""))
                && l.contains("\"trigger\":\"interval,commit\"")
                && l.contains("reconcile started")),
        "{}",
        d.log()
    );

    // 3. An invalid policy changes nothing; the error shows in the log,
    //    /metrics and /readyz.
    repo.commit(
        &policy(&reg.host, &["\"1.0\"", "\"1.1\"", "\"1.2\""])
            .replace("to: dev/dst/app", "to: dev/dst/app\n    pruen: true"),
        "typo",
    );
    d.wait_until("the invalid policy noticed", Duration::from_secs(30), |d| {
        d.metric("regimen_reconciles_total{result=\"invalid_policy\"}")
            .is_some_and(|v| v >= 1.0)
    });
    let (code, body) = d.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("invalid policy"), "{body}");
    assert_eq!(d.metric("regimen_policy_valid"), Some(0.0));
    let log = d.log();
    assert!(
        log.contains("regimen.yaml:") && log.contains("pruen"),
        "the located error is logged:\n{log}"
    );
    assert_eq!(tags(&reg, "dst/app"), ["1.0", "1.1"], "nothing changed");

    // 4. The next good commit recovers.
    repo.commit(
        &policy(&reg.host, &["\"1.0\"", "\"1.1\"", "\"1.2\""]),
        "fix",
    );
    d.wait_until("1.2 mirrored", Duration::from_secs(30), |_| {
        tags(&reg, "dst/app") == ["1.0", "1.1", "1.2"]
    });
    d.wait_until("ready again", Duration::from_secs(10), |d| {
        d.get("/readyz").0 == 200
    });
    assert_eq!(d.metric("regimen_policy_valid"), Some(1.0));
    assert!(
        d.metric("regimen_changes_total{action=\"copy\",outcome=\"done\"}")
            .is_some_and(|v| v >= 3.0),
        "{}",
        d.get("/metrics").1
    );
    assert!(d
        .metric("regimen_reconciles_total{result=\"success\"}")
        .is_some_and(|v| v >= 3.0));
    assert!(d
        .metric("regimen_last_success_timestamp_seconds")
        .is_some_and(|v| v > 1.7e9));
    assert!(d
        .metric("regimen_registry_requests_total{registry=\"dev\",status=\"200\"}")
        .is_some_and(|v| v > 0.0));
    assert!(d
        .get("/metrics")
        .1
        .contains("regimen_reconcile_duration_seconds_bucket"));
    for digest_of in ["1.0", "1.1", "1.2"] {
        assert_eq!(
            reg.digest("dst/app", digest_of),
            reg.digest("src/app", digest_of)
        );
    }

    // 5. SIGTERM when idle: exit 0.
    assert_eq!(d.terminate(), 0, "{}", d.log());
}

#[test]
fn sigterm_during_apply_finishes_the_change_in_flight_and_leaves_a_consistent_registry() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let src: regimen::model::Repo = "src/big".parse().unwrap();
    let all: Vec<String> = (0..40).map(|i| format!("v{i:02}")).collect();
    block_on(async {
        for t in &all {
            let spec = ImageSpec::new("2026-01-01T00:00:00Z").with_layer(
                "data",
                regimen::testkit::pseudo_random_bytes(
                    t.len() as u64 + t.as_bytes()[2] as u64 * 31 + t.as_bytes()[1] as u64,
                    64 * 1024,
                ),
            );
            push_image(r.as_ref(), &src, Some(&t.parse().unwrap()), &spec)
                .await
                .unwrap();
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    // A low request rate makes the apply take long enough to interrupt.
    let dir = policy_dir(
        tmp.path(),
        &format!(
            "registries:\n  dev: {{url: \"http://{}\", rate: 15}}\n\
             mirrors:\n  - name: big\n    from: dev/src/big\n    to: dev/dst/big\n",
            reg.host
        ),
    );
    let mut d = Daemon::start(
        &["-C", dir.to_str().unwrap(), "--interval", "1h"],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("the first copy done", Duration::from_secs(60), |d| {
        d.log().contains("\"outcome\":\"done\"")
    });
    assert_eq!(d.terminate(), 0, "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("changes were not started"),
        "the stop came before the end of the apply:\n{log}"
    );

    // Every tag that exists is complete and right; a re-plan wants exactly the rest.
    let present = tags(&reg, "dst/big");
    assert!(
        !present.is_empty() && present.len() < all.len(),
        "{present:?}"
    );
    for t in &present {
        assert_eq!(reg.digest("dst/big", t), reg.digest("src/big", t), "{t}");
    }
    let (_, plan, out) = json_plan(regimen().args(["plan", "--format", "json", "-C"]).arg(&dir));
    let mut wanted: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["target"]
                .as_str()
                .unwrap()
                .trim_start_matches("dev/dst/big:")
                .to_string()
        })
        .collect();
    wanted.sort();
    let missing: Vec<String> = all
        .iter()
        .filter(|t| !present.contains(t))
        .cloned()
        .collect();
    assert_eq!(wanted, missing, "{out}");
}

/// Pushes 20 images to `repo`, tagged `{prefix}00` … `{prefix}19`, each
/// with a layer of its own.
fn push_numbered(reg: &TestRegistry, repo: &str, prefix: &str) {
    let r = open(&reg.host);
    let repo: regimen::model::Repo = repo.parse().unwrap();
    block_on(async {
        for i in 0..20 {
            let t = format!("{prefix}{i:02}");
            let spec =
                ImageSpec::new("2026-01-01T00:00:00Z").with_layer("data", format!("{repo} {t}"));
            push_image(r.as_ref(), &repo, Some(&t.parse().unwrap()), &spec)
                .await
                .unwrap();
        }
    });
}

/// The executor pulls 16 copies at once; with a slow target registry they
/// all wait for it, their reads done on a fast source and their first
/// writes queued for the target's turn. A SIGTERM then must stop those that
/// have not written anything (not run all 16 to the end), promptly, and
/// count the reconcile as stopped, not failed.
#[test]
fn sigterm_stops_changes_still_waiting_for_the_registry() {
    let (src, reg) = (TestRegistry::start(), TestRegistry::start());
    push_numbered(&src, "src/slow", "v");
    let tmp = tempfile::tempdir().unwrap();
    // On the target one request at a time, four a second: 16 copies of
    // five writes each take some 20 s.
    let dir = policy_dir(
        tmp.path(),
        &format!(
            "registries:
  up: {{url: \"http://{}\"}}
  \
             dev: {{url: \"http://{}\", rate: 4, concurrency: 1}}\n\
             mirrors:\n  - name: slow\n    from: up/src/slow\n    to: dev/dst/slow\n",
            src.host, reg.host
        ),
    );
    let mut d = Daemon::start(
        &["-C", dir.to_str().unwrap(), "--interval", "1h"],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("the apply to begin", Duration::from_secs(60), |d| {
        d.log().contains("planned: copy")
    });
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    assert_eq!(d.terminate(), 0, "{}", d.log());
    let took = asked.elapsed();
    let log = d.log();
    let present = tags(&reg, "dst/slow");
    assert!(
        present.len() <= 3,
        "copies that had not begun ran after the stop: {present:?}\n{log}"
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to stop\n{log}"
    );
    assert!(log.contains("changes were not started"), "{log}");
    assert!(log.contains("\"result\":\"stopped\""), "{log}");
    assert!(!log.contains("\"outcome\":\"failed\""), "{log}");
    // Every tag that exists is complete and right.
    for t in &present {
        assert_eq!(reg.digest("dst/slow", t), src.digest("src/slow", t), "{t}");
    }
}

/// Plain `regimen apply` (a CI job cancelled mid-apply gets SIGTERM) stops
/// the same way: what had begun finishes, nothing new starts, exit 1 saying
/// so; the next apply does the rest.
#[test]
fn sigterm_stops_a_plain_apply_between_changes() {
    let (src, reg) = (TestRegistry::start(), TestRegistry::start());
    push_numbered(&src, "src/slow", "v");
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(
        tmp.path(),
        &format!(
            "registries:\n  up: {{url: \"http://{}\"}}\n  \
             dev: {{url: \"http://{}\", rate: 4, concurrency: 1}}\n\
             mirrors:\n  - name: slow\n    from: up/src/slow\n    to: dev/dst/slow\n",
            src.host, reg.host
        ),
    );
    let out_path = tmp.path().join("apply.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("regimen"))
        .args(["apply", "--auto-approve", "-C", dir.to_str().unwrap()])
        .env("DOCKER_CONFIG", common::empty_docker_config())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let output = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !output().contains("dst/slow:v19") {
        assert!(Instant::now() < deadline, "no plan printed:\n{}", output());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    let asked = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "no exit:\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = asked.elapsed();
    let text = output();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to stop\n{text}"
    );
    assert!(text.contains("Apply stopped:"), "{text}");
    assert!(text.contains("not started"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    let present = tags(&reg, "dst/slow");
    assert!(
        present.len() <= 4,
        "copies that had not begun ran: {present:?}\n{text}"
    );
    for t in &present {
        assert_eq!(reg.digest("dst/slow", t), src.digest("src/slow", t), "{t}");
    }
    eprintln!("{text}");
    // The next plan has the rest.
    let (code, plan, text) = common::json_plan(common::regimen().args([
        "plan",
        "--format",
        "json",
        "-C",
        dir.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{text}");
    let left = plan["changes"].as_array().unwrap().len();
    assert_eq!(left, 20 - present.len(), "{text}");
}

/// Deletions too: up to 256 are pulled in at once, all waiting for a slow
/// registry; after a SIGTERM none that has not deleted anything may start.
#[test]
fn sigterm_stops_deletions_still_waiting_for_the_registry() {
    let reg = TestRegistry::start();
    push_numbered(&reg, "src/old", "pr-");
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(
        tmp.path(),
        &format!(
            "registries:\n  dev: {{url: \"http://{}\", rate: 10, concurrency: 1}}\n\
             retention:\n  - {{name: prs, repos: [dev/src/old], delete: {{tags: {{regex: \"^pr-\"}}}}, min_keep: 0}}\n",
            reg.host
        ),
    );
    let mut d = Daemon::start(
        &["-C", dir.to_str().unwrap(), "--interval", "1h"],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("the apply to begin", Duration::from_secs(60), |d| {
        d.log().contains("planned: delete")
    });
    let asked = Instant::now();
    assert_eq!(d.terminate(), 0, "{}", d.log());
    let took = asked.elapsed();
    let log = d.log();
    let left = tags(&reg, "src/old");
    // 20 were pushed; one deletion may have begun before the stop.
    assert!(
        left.len() >= 18,
        "deletions that had not begun ran after the stop: {left:?} left\n{log}"
    );
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} to stop\n{log}"
    );
    assert!(log.contains("\"result\":\"stopped\""), "{log}");
}

/// What the metrics and the closing log line say, on a slow registry (so
/// the reconcile can be seen in progress) and a folder outside Git.
#[test]
fn metrics_and_logs_of_a_failed_reconcile_outside_git() {
    let reg = TestRegistry::start();
    push_src_app(&reg, "metrics", &["v1", "v2"]);
    let tmp = tempfile::tempdir().unwrap();
    // One request a second; images from January are older than `max_age`,
    // and `on_violation: fail` makes the reconcile fail.
    let dir = policy_dir(
        tmp.path(),
        &format!(
            "registries:\n  dev: {{url: \"http://{}\", rate: 1, concurrency: 1}}\n\
             retags:\n  - tag: dev/src/app:stable\n    from: dev/src/app:v1\n\
             policies:\n  max_age: 30d\n  on_violation: fail\n",
            reg.host
        ),
    );
    let d = Daemon::start(
        &[
            "-C",
            dir.to_str().unwrap(),
            "--interval",
            "1h",
            "--plan-only",
        ],
        tmp.path().join("daemon.log"),
    );
    d.wait_until(
        "the policy to count as valid",
        Duration::from_secs(60),
        |d| d.metric("regimen_policy_valid ") == Some(1.0),
    );
    // Read after the metric: the plan (logged before the end, seconds after
    // the load at one request a second) must not be there yet.
    assert!(
        !d.log().contains("planned: "),
        "policy_valid was set only at the end:\n{}",
        d.log()
    );
    d.wait_until("the reconcile to finish", Duration::from_secs(60), |d| {
        d.log().contains("reconcile finished")
    });
    let log = d.log();
    let closing = log
        .lines()
        .find(|l| l.contains("reconcile finished"))
        .unwrap();
    assert!(closing.contains("\"result\":\"failed\""), "{closing}");
    assert!(closing.contains("\"level\":\"WARN\""), "{closing}");
    assert!(log.contains("\"revision\":\"(none)\""), "{log}");
    assert!(!log.contains("\"revision\":\"\""), "{log}");
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("Reconciles by result (success, failed, stopped,"),
        "{metrics}"
    );
    assert!(
        metrics.contains("from reading the policy source"),
        "{metrics}"
    );
}

/// A registry that cannot be reached: the reconcile is `incomplete`, not a
/// success: readiness and the last-success time say so.
#[test]
fn an_unreachable_registry_makes_the_reconcile_incomplete_not_successful() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = free_port();
    let dir = policy_dir(
        tmp.path(),
        &format!(
            "registries:\n  src: {{url: \"http://127.0.0.1:{dead}\"}}\n  dst: {{url: \"oci:{}\"}}\n\
             mirrors:\n  - {{from: src/app, to: dst/app}}\n",
            tmp.path().join("dst").display()
        ),
    );
    let d = Daemon::start(
        &["-C", dir.to_str().unwrap(), "--interval", "1h"],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("the reconcile", Duration::from_secs(60), |d| {
        d.metric("regimen_reconciles_total{result=\"incomplete\"}") == Some(1.0)
    });
    let (code, body) = d.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("incomplete: 1 could not be observed (first: src/app:"),
        "{body}"
    );
    assert_eq!(
        d.metric("regimen_reconciles_total{result=\"success\"}"),
        None,
        "{}",
        d.get("/metrics").1
    );
    let last = d.metric("regimen_last_success_timestamp_seconds");
    assert!(last.is_none_or(|v| v == 0.0), "{last:?}");
}

/// `-C` on a Git work tree with edits not committed: the reconcile is of
/// those files, and `/readyz` does not pass them off as the commit.
#[test]
fn readiness_says_when_the_folder_has_uncommitted_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "registries:\n  dev: {{url: \"oci:{}\"}}\n",
        tmp.path().join("dev").display()
    );
    let dir = policy_dir(tmp.path(), &text);
    common::git(&dir, &["init", "-q", "-b", "main"]);
    common::git(&dir, &["add", "-A"]);
    common::git(&dir, &["commit", "-q", "-m", "policy"]);
    std::fs::write(dir.join("regimen.yaml"), format!("{text}# edited\n")).unwrap();
    let d = Daemon::start(
        &[
            "-C",
            dir.to_str().unwrap(),
            "--plan-only",
            "--interval",
            "1h",
        ],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("ready", Duration::from_secs(30), |d| {
        d.get("/readyz").0 == 200
    });
    let (_, body) = d.get("/readyz");
    assert!(body.contains("(with uncommitted changes)"), "{body}");
    assert!(
        d.log().contains("\"revision_modified\":true"),
        "{}",
        d.log()
    );
}

/// Under `--log-format json`, an error at start (a bad `--schedule`) is a
/// JSON line like every other, for log pipelines that read only JSON.
#[test]
fn start_errors_are_json_under_log_format_json() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("regimen"))
        .args([
            "--log-format",
            "json",
            "run",
            "--once",
            "--schedule",
            "bogus",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.trim().is_empty());
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["level"], "ERROR", "{line}");
        assert!(
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("--schedule `bogus`")),
            "{line}"
        );
    }
}

/// A source that cannot be read is a reconcile that took time, not 0 s.
#[test]
fn a_failed_source_read_is_timed() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/policy.git");
    let cache = tmp.path().join("cache");
    let d = Daemon::start(
        &[
            "--git",
            &url,
            "--plan-only",
            "--interval",
            "1h",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("the source error", Duration::from_secs(60), |d| {
        d.metric("regimen_reconciles_total{result=\"error\"}") == Some(1.0)
    });
    let sum = d
        .metric("regimen_reconcile_duration_seconds_sum")
        .unwrap_or(0.0);
    assert!(sum > 0.0, "{}", d.get("/metrics").1);
    // No policy was ever read: not known to be invalid (an alert on 0 must
    // not page for a Git outage).
    let valid = d.metric("regimen_policy_valid ");
    assert!(valid.is_some_and(f64::is_nan), "{valid:?}");
}

/// With a schedule, the interval only looks for new commits. A Git outage
/// makes the daemon unready; once the remote answers again, the next look
/// reconciles and it is ready, not unready until the schedule next fires
/// (here: next new year).
#[test]
fn a_git_outage_ends_at_the_next_interval_even_with_a_schedule() {
    let (tmp, _) = common::policy_remote();
    let bare = tmp.path().join("policy.git");
    let away = tmp.path().join("policy.git.away");
    let url = format!("file://{}", bare.display());
    let cache = tmp.path().join("cache");
    let d = Daemon::start(
        &[
            "--git",
            &url,
            "--path",
            "policy",
            "--plan-only",
            "--interval",
            "1s",
            "--schedule",
            "0 0 1 1 *",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("ready", Duration::from_secs(30), |d| {
        d.get("/readyz").0 == 200
    });
    std::fs::rename(&bare, &away).unwrap();
    d.wait_until("unready in the outage", Duration::from_secs(30), |d| {
        d.get("/readyz").0 == 503
    });
    std::fs::rename(&away, &bare).unwrap();
    d.wait_until("ready again", Duration::from_secs(30), |d| {
        d.get("/readyz").0 == 200
    });
}

/// A Kubernetes ConfigMap volume: `regimen.yaml -> ..data/regimen.yaml`,
/// `..data -> ..<timestamp>`. The kubelet updates it by swapping `..data`
/// (every event is on a hidden path); `--watch` reconciles on that swap.
#[test]
fn watch_sees_a_configmap_volume_update() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let cm = tmp.path().join("cm");
    let version = |name: &str, text: &str| {
        std::fs::create_dir_all(cm.join(name)).unwrap();
        std::fs::write(cm.join(name).join("regimen.yaml"), text).unwrap();
    };
    let reg = tmp.path().join("dev");
    let text = format!("registries:\n  dev: {{url: \"oci:{}\"}}\n", reg.display());
    version("..2026_11_24_13_00_00.1", &text);
    symlink("..2026_11_24_13_00_00.1", cm.join("..data")).unwrap();
    symlink("..data/regimen.yaml", cm.join("regimen.yaml")).unwrap();
    let d = Daemon::start(
        &[
            "-C",
            cm.to_str().unwrap(),
            "--watch",
            "--plan-only",
            "--interval",
            "1h",
        ],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("the first reconcile", Duration::from_secs(30), |d| {
        d.metric("regimen_reconciles_total{result=\"success\"}") == Some(1.0)
    });
    // The kubelet's atomic update.
    version("..2026_11_24_13_05_00.2", &format!("{text}# v2\n"));
    symlink("..2026_11_24_13_05_00.2", cm.join("..data_tmp")).unwrap();
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    d.wait_until("a reconcile on the swap", Duration::from_secs(15), |d| {
        d.metric("regimen_reconciles_total{result=\"success\"}") == Some(2.0)
    });
    assert!(d.log().contains("\"trigger\":\"watch\""), "{}", d.log());
}

#[test]
fn watch_reconciles_when_a_policy_file_changes() {
    let reg = TestRegistry::start();
    push_src_app(&reg, "w", &["1.0", "1.1"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path(), &policy(&reg.host, &["\"1.0\""]));
    // An hour-long interval: only the file watch can explain a quick reconcile.
    let d = Daemon::start(
        &["-C", dir.to_str().unwrap(), "--watch", "--interval", "1h"],
        tmp.path().join("daemon.log"),
    );
    d.wait_until("1.0 mirrored", Duration::from_secs(30), |_| {
        tags(&reg, "dst/app") == ["1.0"]
    });
    std::fs::write(
        dir.join("regimen.yaml"),
        policy(&reg.host, &["\"1.0\"", "\"1.1\""]),
    )
    .unwrap();
    d.wait_until(
        "1.1 mirrored after the edit",
        Duration::from_secs(15),
        |_| tags(&reg, "dst/app") == ["1.0", "1.1"],
    );
    assert!(d.log().contains("\"trigger\":\"watch\""), "{}", d.log());
}

#[test]
fn schedule_repairs_drift_without_a_new_commit() {
    let reg = TestRegistry::start();
    push_src_app(&reg, "s", &["1.0"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path(), &policy(&reg.host, &["\"1.0\""]));
    // An hour-long interval and no watch: only the schedule (every minute)
    // can explain a second reconcile.
    let d = Daemon::start(
        &[
            "-C",
            dir.to_str().unwrap(),
            "--interval",
            "1h",
            "--schedule",
            "* * * * *",
        ],
        tmp.path().join("daemon.log"),
    );
    // Resolvable, not just listed: Distribution lists a tag a moment before
    // its link is written.
    let resolves = |reg: &TestRegistry| {
        reg.request(
            "HEAD",
            "/v2/dst/app/manifests/1.0",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            &[],
        )
        .status
            == 200
    };
    d.wait_until("1.0 mirrored", Duration::from_secs(30), |_| resolves(&reg));
    // Someone deletes the mirrored tag behind regimen's back.
    let r = open(&reg.host);
    block_on(async {
        regimen::apply::remove_tag(
            r.as_ref(),
            &"dst/app".parse().unwrap(),
            &"1.0".parse().unwrap(),
            None,
        )
        .await
        .unwrap();
    });
    assert!(tags(&reg, "dst/app").is_empty());
    d.wait_until(
        "the next scheduled reconcile to put 1.0 back",
        Duration::from_secs(75),
        |_| resolves(&reg),
    );
    assert!(d.log().contains("\"trigger\":\"schedule\""), "{}", d.log());
}

#[test]
fn a_branch_deleted_on_the_remote_is_not_served_from_the_cache() {
    let (tmp, _) = common::policy_remote();
    let bare = tmp.path().join("policy.git");
    let url = format!("file://{}", bare.display());
    let cache = tmp.path().join("cache");
    let out = common::git_plan_once(&url, &cache).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    common::git(&bare, &["update-ref", "-d", "refs/heads/main"]);
    let out = common::git_plan_once(&url, &cache).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("branch `main` not found"), "{text}");
}

/// Two folders of one repository and branch, one cache: each run must read
/// its own `--path` (the cached tree of a commit holds only one folder).
#[test]
fn another_path_on_the_same_cache_reads_its_own_folder() {
    let (tmp, _) = common::policy_remote();
    let bare = tmp.path().join("policy.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("broken")).unwrap();
    std::fs::write(work.join("broken/regimen.yaml"), "registries: {oops\n").unwrap();
    common::git(&work, &["add", "-A"]);
    common::git(&work, &["commit", "-qm", "a second folder"]);
    common::git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let url = format!("file://{}", bare.display());
    let cache = tmp.path().join("cache");
    let text = |out: std::process::Output| {
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = text(common::git_plan_once(&url, &cache).output().unwrap());
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = text(
        common::git_plan_once_path(&url, &cache, "broken")
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(1), "the broken folder's policy was read: {out}");
    assert!(out.contains("invalid policy"), "{out}");
    let (code, out) = text(common::git_plan_once(&url, &cache).output().unwrap());
    assert_eq!(code, Some(0), "{out}");
}

/// A `--path` the commit does not have is a clear error that leaves nothing
/// behind in the cache (no half-made tree folder).
#[test]
fn a_path_the_commit_lacks_is_an_error_that_leaves_no_tree_behind() {
    let (tmp, sha) = common::policy_remote();
    let url = format!("file://{}", tmp.path().join("policy.git").display());
    let cache = tmp.path().join("cache");
    let out = common::git_plan_once_path(&url, &cache, "nowhere")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("has no folder `nowhere` (--path)"), "{text}");
    let mut trees = Vec::new();
    for clone in std::fs::read_dir(&cache).unwrap().flatten() {
        if let Ok(rd) = std::fs::read_dir(clone.path().join("trees")) {
            trees.extend(rd.flatten().map(|e| e.file_name()));
        }
    }
    assert!(trees.is_empty(), "left behind for {sha}: {trees:?}");
}

/// A daemon killed mid-fetch (SIGKILL after a pod's grace period) leaves
/// Git's ref lock behind; the next start must fetch anyway, not fail with
/// "failed to lock file" for as long as the cache lives.
#[test]
fn a_git_lock_left_by_a_killed_fetch_does_not_stop_later_fetches() {
    let (tmp, _) = common::policy_remote();
    let bare = tmp.path().join("policy.git");
    let url = format!("file://{}", bare.display());
    let cache = tmp.path().join("cache");
    let out = common::git_plan_once(&url, &cache).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A new commit upstream, and the lock a killed fetch of it left.
    let work = tmp.path().join("work");
    std::fs::write(
        work.join("policy/regimen.yaml"),
        "registries:\n  dev: {url: oci:dev}\n  prod: {url: oci:prod}\n",
    )
    .unwrap();
    common::git(&work, &["commit", "-qam", "two"]);
    let sha = common::git(&work, &["rev-parse", "HEAD"]);
    common::git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let locks: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("repo.git/refs/remotes/origin/main.lock"))
        .filter(|p| p.parent().unwrap().is_dir())
        .collect();
    assert_eq!(locks.len(), 1, "one cached clone");
    std::fs::write(&locks[0], "").unwrap();
    let out = common::git_plan_once(&url, &cache).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&sha), "planned the new commit: {text}");
    assert!(!locks[0].exists());
}

/// SIGTERM while the Git server has stopped answering: the daemon exits at
/// once (nothing was changed yet), not after libgit2's two-minute timeout
/// (a pod would be SIGKILLed first).
#[test]
fn sigterm_during_a_hanging_git_fetch_exits_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never answers.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/policy.git");
    let cache = tmp.path().join("cache");
    let mut d = Daemon::start(
        &[
            "--git",
            &url,
            "--plan-only",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        tmp.path().join("log"),
    );
    d.wait_until("the daemon to start", Duration::from_secs(30), |d| {
        d.log().contains("reconciling")
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert_eq!(d.terminate(), 0, "{}", d.log());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}\n{}",
        t.elapsed(),
        d.log()
    );
    assert!(
        d.log().contains("while reading the policy source"),
        "{}",
        d.log()
    );
}
