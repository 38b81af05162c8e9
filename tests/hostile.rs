//! Hostile registries, through the CLI: a source registry behind the fault
//! proxy (`tests/common/proxy.rs`) answering 503, 429 with `Retry-After`,
//! dropping a connection mid-blob or lying about a blob's bytes, mirrored to
//! a direct target registry. Each ends in success with exact digests, or in
//! a clear error and no tag on the target.

mod common;

use common::proxy::FaultProxy;
use common::TestRegistry;
use common::{block_on, open, regimen, run};
use regimen::testkit::{build_image, layer_size_image, push_image, Flavor, ImageSpec};

/// Pushes `spec` to `host`/`repo`:`tag` directly (not through the proxy).
fn seed(host: &str, repo: &str, tag: &str, spec: &ImageSpec) -> String {
    let reg = open(host);
    block_on(push_image(
        reg.as_ref(),
        &repo.parse().unwrap(),
        Some(&tag.parse().unwrap()),
        spec,
    ))
    .unwrap()
    .to_string()
}

/// A source registry behind a fault proxy, a direct target, and a policy
/// mirroring `src/team/app:1.0` to `dst/mirror/app:1.0`.
struct Setup {
    src: TestRegistry,
    dst: TestRegistry,
    proxy: FaultProxy,
    _tmp: tempfile::TempDir,
    dir: String,
}

fn setup(spec: &ImageSpec) -> (Setup, String) {
    let src = TestRegistry::start();
    let dst = TestRegistry::start();
    let proxy = FaultProxy::start(&src.host);
    let digest = seed(&src.host, "team/app", "1.0", spec);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"{}\"}}\n  dst: {{url: \"{}\"}}\n\
             mirrors:\n  - name: app-mirror\n    from: src/team/app\n    to: dst/mirror/app\n    tags: [\"1.0\"]\n",
            proxy.url(),
            dst.url()
        ),
    )
    .unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    (
        Setup {
            src,
            dst,
            proxy,
            _tmp: tmp,
            dir,
        },
        digest,
    )
}

fn small() -> ImageSpec {
    ImageSpec::new("2026-01-02T03:04:05Z").with_layer("hello.txt", "hostile\n")
}

/// The mirror landed, byte for byte, and re-planning finds nothing to do.
fn assert_mirrored(s: &Setup, digest: &str) {
    assert_eq!(s.dst.digest("mirror/app", "1.0"), digest);
    assert_eq!(
        s.src.raw_manifest("team/app", "1.0"),
        s.dst.raw_manifest("mirror/app", "1.0")
    );
    let (code, out) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &s.dir]));
    assert_eq!(code, 0, "converged:\n{out}");
}

#[test]
fn manifest_503_twice_then_success() {
    let (s, digest) = setup(&small());
    let rule = s
        .proxy
        .status_times("GET", "/v2/team/app/manifests/", 503, &[], 2);
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &s.dir]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    let (seen, injected) = s.proxy.counts(rule);
    assert_eq!(injected, 2, "{:?}", s.proxy.log());
    assert!(seen >= 3, "the GET was retried after two 503s: {seen}");
    assert_mirrored(&s, &digest);
}

#[test]
fn tags_list_429_with_retry_after_then_success() {
    let (s, digest) = setup(&small());
    let rule = s.proxy.status_times(
        "GET",
        "/v2/team/app/tags/list",
        429,
        &[("Retry-After", "1")],
        1,
    );
    let started = std::time::Instant::now();
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &s.dir]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    let (seen, injected) = s.proxy.counts(rule);
    assert_eq!(injected, 1);
    assert!(seen >= 2, "tags/list was asked again after the 429: {seen}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_mirrored(&s, &digest);
}

#[test]
fn connection_reset_mid_blob_is_retried() {
    let spec = layer_size_image(42, 1 << 20, "2026-01-02T03:04:05Z");
    let layer = regimen::model::Digest::sha256_of(&build_image(&spec, Flavor::Oci).unwrap().layer);
    let (s, digest) = setup(&spec);
    let path = format!("/v2/team/app/blobs/{layer}");
    let rule = s.proxy.drop_after("GET", &path, 300_000, 1);
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &s.dir]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    assert_eq!(s.proxy.counts(rule).1, 1, "{:?}", s.proxy.log());
    assert!(
        s.proxy.count("GET", &path) >= 2,
        "the layer was fetched again: {:?}",
        s.proxy.log()
    );
    assert_mirrored(&s, &digest);
    // The layer on the target is whole.
    let r = s
        .dst
        .request("HEAD", &format!("/v2/mirror/app/blobs/{layer}"), &[], &[]);
    assert_eq!(r.status, 200);
    let size = build_image(&spec, Flavor::Oci).unwrap().layer.len();
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    // And an independent client can copy the whole image.
    let tmp = tempfile::tempdir().unwrap();
    common::skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/mirror/app:1.0", s.dst.host),
        &format!("dir:{}", tmp.path().join("img").display()),
    ]);
}

#[test]
fn lying_source_blob_fails_clearly_and_writes_no_tag() {
    let spec = layer_size_image(7, 200_000, "2026-01-02T03:04:05Z");
    let layer = regimen::model::Digest::sha256_of(&build_image(&spec, Flavor::Oci).unwrap().layer);
    let (s, _digest) = setup(&spec);
    let rule = s
        .proxy
        .corrupt("GET", &format!("/v2/team/app/blobs/{layer}"), 1000);
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &s.dir]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(layer.as_str()),
        "the error names the digest:\n{out}"
    );
    assert!(
        out.contains(&format!("GET /v2/team/app/blobs/{layer}")),
        "and the source it came from, not only the upload:\n{out}"
    );
    assert!(s.proxy.counts(rule).1 >= 1);
    let tags = s.dst.tags("mirror/app").unwrap_or_default();
    assert!(!tags.contains(&"1.0".to_string()), "{tags:?}");
    // Nothing with the wrong bytes landed under that digest.
    let r = s
        .dst
        .request("HEAD", &format!("/v2/mirror/app/blobs/{layer}"), &[], &[]);
    assert_eq!(
        r.status, 404,
        "no blob stored under a digest it does not match"
    );
}

#[test]
fn lying_source_manifest_fails_clearly_and_writes_no_tag() {
    let (s, digest) = setup(&small());
    // Valid JSON, same length, same Docker-Content-Digest header: wrong bytes.
    let rule = s.proxy.replace(
        "GET",
        &format!("/v2/team/app/manifests/{digest}"),
        "\"schemaVersion\":2",
        "\"schemaVersion\":3",
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &s.dir]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&digest), "the error names the digest:\n{out}");
    assert!(s.proxy.counts(rule).1 >= 1, "{:?}", s.proxy.log());
    let tags = s.dst.tags("mirror/app").unwrap_or_default();
    assert!(!tags.contains(&"1.0".to_string()), "{tags:?}");
}

/// `human_bytes` of the CLI's apply summary (binary units, one decimal).
fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let (mut v, mut i) = (b as f64, 0);
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[test]
fn the_bytes_copied_count_only_uploads_that_landed() {
    // 2 MiB, dropped after 1.5 MiB once: counting the failed upload would
    // say 3.5 MiB.
    let spec = layer_size_image(43, 2 << 20, "2026-01-02T03:04:05Z");
    let built = build_image(&spec, Flavor::Oci).unwrap();
    let layer = regimen::model::Digest::sha256_of(&built.layer);
    let (s, digest) = setup(&spec);
    let path = format!("/v2/team/app/blobs/{layer}");
    let rule = s.proxy.drop_after("GET", &path, 3 << 19, 1);
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &s.dir]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.proxy.counts(rule).1, 1, "{:?}", s.proxy.log());
    let landed = (built.layer.len() + built.config.len()) as u64;
    assert!(
        out.contains(&format!("; {} copied.", human_bytes(landed))),
        "{} landed:\n{out}",
        human_bytes(landed)
    );
    assert_mirrored(&s, &digest);
}

/// A source (or a proxy before it) that refuses the referrers route: asked
/// once in the run, not once per image, and the plan says once which
/// images' referrers it could not read (the run is not complete).
#[test]
fn a_refused_referrers_route_is_asked_once_and_reported_once() {
    let src = TestRegistry::start();
    let dst = TestRegistry::start();
    let proxy = FaultProxy::start(&src.host);
    for t in ["1.0", "1.1", "1.2"] {
        seed(&src.host, "team/app", t, &small().with_layer("v", t));
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"{}\"}}\n  dst: {{url: \"{}\"}}\n\
             mirrors:\n  - {{name: app, from: src/team/app, to: dst/team/app}}\n",
            proxy.url(),
            dst.url()
        ),
    )
    .unwrap();
    let dir = tmp.path().to_str().unwrap();
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", dir]));
    assert_eq!(code, 0, "{out}");

    proxy.status_times("GET", "/referrers/", 403, &[], usize::MAX);
    let before = proxy.count("GET", "/referrers/");
    let (code, v, out) = common::json_plan(regimen().args(["plan", "--format", "json", "-C", dir]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(proxy.count("GET", "/referrers/") - before, 1, "{out}");
    assert_eq!(v["complete"], false, "{out}");
    let unobserved = v["unobserved"].as_array().unwrap();
    assert_eq!(unobserved.len(), 1, "{out}");
    assert_eq!(
        unobserved[0]["subject"], "src: referrers of 3 images",
        "{out}"
    );
    assert!(
        unobserved[0]["reason"].as_str().unwrap().contains("403"),
        "{out}"
    );
    assert!(v["changes"].as_array().unwrap().is_empty(), "{out}");
}
