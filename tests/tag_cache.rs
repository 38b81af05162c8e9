//! The tag cache against real `docker-registry` instances: a re-run asks
//! about each tag conditionally (`If-None-Match`, answered 304 while the tag
//! holds what it held), and a hint never stands in for the registry's answer:
//! a tag moved behind the cache's back, a corrupt or wrong cache file, or no
//! cache at all give the same plans.

mod common;

use std::path::{Path, PathBuf};

use common::{regimen, run, TestRegistry};
use regimen::model::{Digest, Repo};
use regimen::testkit::{push_image, ImageSpec};

fn push(reg: &TestRegistry, repo: &str, tag: &str, layer: &str) -> Digest {
    let r = common::open(&reg.host);
    let repo: Repo = repo.parse().unwrap();
    let spec = ImageSpec::new("2026-01-02T03:04:05Z").with_layer("a", layer);
    common::block_on(push_image(
        r.as_ref(),
        &repo,
        Some(&common::tag(tag)),
        &spec,
    ))
    .unwrap()
}

/// Manifest HEADs of `repo` in the access log since byte `from`, by status.
fn heads(reg: &TestRegistry, from: usize, repo: &str) -> (usize, usize) {
    let log = reg.log()[from..].to_string();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"HEAD /v2/{repo}/manifests/")))
        .collect();
    let with = |status: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("\" {status} ")))
            .count()
    };
    (with("304"), with("200"))
}

struct Setup {
    src: TestRegistry,
    dst: TestRegistry,
    _tmp: tempfile::TempDir,
    dir: String,
    cache: PathBuf,
}

fn setup() -> Setup {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    for (tag, layer) in [("1.0", "one"), ("1.1", "two"), ("latest", "two")] {
        push(&src, "ci/app", tag, layer);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{from: src/ci/app, to: dst/ci/app}}\n",
            src.host, dst.host
        ),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    Setup {
        src,
        dst,
        dir: dir.to_str().unwrap().to_string(),
        cache,
        _tmp: tmp,
    }
}

impl Setup {
    fn regimen(&self, args: &[&str]) -> (i32, String) {
        run(regimen().env("REGIMEN_CACHE_DIR", &self.cache).args(args))
    }
    fn cache_files(&self) -> Vec<PathBuf> {
        files(&self.cache)
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn reruns_ask_conditionally_and_a_tag_moved_behind_the_cache_is_still_seen() {
    let s = setup();
    let (code, out) = s.regimen(&["apply", "--auto-approve", "-C", &s.dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 done"), "{out}");
    assert_eq!(s.cache_files().len(), 1, "one cache file");

    // The re-run: every tag on both sides confirmed by a 304, including the
    // target's, which the apply itself put there.
    let (s0, d0) = (s.src.log().len(), s.dst.log().len());
    let (code, out) = s.regimen(&["plan", "--detailed-exitcode", "-C", &s.dir]);
    assert_eq!(code, 0, "converged: {out}");
    assert_eq!(
        heads(&s.src, s0, "ci/app"),
        (3, 0),
        "source HEADs (304, 200)"
    );
    assert_eq!(
        heads(&s.dst, d0, "ci/app"),
        (3, 0),
        "target HEADs (304, 200)"
    );

    // 1.1 moves to another image behind the cache's back: the registry's
    // answer, not the cache, says what it holds, and the mirror follows.
    let moved = push(&s.src, "ci/app", "1.1", "three");
    let s0 = s.src.log().len();
    let (code, out) = s.regimen(&["plan", "-C", &s.dir]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        heads(&s.src, s0, "ci/app"),
        (2, 1),
        "source HEADs (304, 200)"
    );
    assert!(
        out.contains("dst/ci/app:1.1"),
        "the moved tag is planned: {out}"
    );
    let (code, out) = s.regimen(&["apply", "--auto-approve", "-C", &s.dir]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 done"),
        "only the moved tag is copied: {out}"
    );
    assert_eq!(s.dst.digest("ci/app", "1.1"), moved.to_string());
    let (code, out) = s.regimen(&["plan", "--detailed-exitcode", "-C", &s.dir]);
    assert_eq!(code, 0, "converged again: {out}");
}

#[test]
fn a_corrupt_cache_or_none_gives_the_same_plan_with_plain_heads() {
    let s = setup();
    let (code, out) = s.regimen(&["apply", "--auto-approve", "-C", &s.dir]);
    assert_eq!(code, 0, "{out}");
    let file = s.cache_files().pop().expect("a cache file");

    std::fs::write(&file, "{ not json").unwrap();
    let s0 = s.src.log().len();
    let (code, out) = s.regimen(&["plan", "--detailed-exitcode", "-C", &s.dir]);
    assert_eq!(code, 0, "a corrupt cache is ignored: {out}");
    assert!(!out.contains("cache"), "nothing to say to the user: {out}");
    assert_eq!(heads(&s.src, s0, "ci/app"), (0, 3), "unconditional HEADs");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("rewritten whole");
    assert_eq!(saved["version"], 1, "{saved}");

    // A cache that lies (the target's 1.0 "holds" another image) changes nothing either.
    let mut lie = saved;
    let key = format!("http://{}/ci/app", s.dst.host);
    lie["repos"][&key]["tags"]["1.0"]["digest"] =
        Digest::sha256_of(b"not this image").to_string().into();
    std::fs::write(&file, lie.to_string()).unwrap();
    let d0 = s.dst.log().len();
    let (code, out) = s.regimen(&["plan", "--detailed-exitcode", "-C", &s.dir]);
    assert_eq!(code, 0, "a wrong hint is only a miss: {out}");
    assert_eq!(heads(&s.dst, d0, "ci/app"), (2, 1), "1.0 read in full");

    // No cache at all: REGIMEN_CACHE_DIR empty writes nothing anywhere.
    let home = tempfile::tempdir().unwrap();
    let s0 = s.src.log().len();
    let (code, out) = run(regimen()
        .env("REGIMEN_CACHE_DIR", "")
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .args(["plan", "--detailed-exitcode", "-C", &s.dir]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(heads(&s.src, s0, "ci/app"), (0, 3), "unconditional HEADs");
    assert!(
        files(&home.path().join(".cache")).is_empty(),
        "nothing written under HOME"
    );
}
