//! Retention on a real `docker-registry` (issue 4's "How we will know"):
//! tags of many ages written by the testkit, a `pr-*` tag sharing its image
//! with a kept `release-*` tag, an index with a referrer through the
//! `sha256-<hex>` tag schema; `skopeo list-tags` before and after; min_keep,
//! max_deletes, an unreachable repo behind the fault proxy, a stale saved plan.

mod common;

use common::ago;

use common::proxy::FaultProxy;
use common::{block_on, json_plan, open, regimen, run};
use common::{skopeo, TestRegistry};
use regimen::testkit::{push_image, push_index, push_referrer, ImageSpec};

fn img(repo: &str, n: &str, days: i64) -> ImageSpec {
    ImageSpec::new(&ago(days)).with_layer("v", format!("{repo} {n}"))
}

/// What the seed wrote into team/a: the index's digest and its referrer's.
struct Seeded {
    index: String,
    referrer: String,
}

/// Seeds `team/a`, `team/b`, `team/c` with the same layout of tags:
/// main 200d, pr-old 200d, pr-shared 120d (same image as release-2),
/// release-2 120d, pr-95 95d, pr-30 30d, pr-2d 2d; team/a also has pr-idx,
/// a two-platform index 100d old with an SBOM referrer.
fn seed(reg: &TestRegistry) -> Seeded {
    let r = open(&reg.host);
    block_on(async {
        let mut seeded = None;
        for repo in ["team/a", "team/b", "team/c"] {
            let rp = repo.parse().unwrap();
            for (tag, n, days) in [
                ("main", "main", 200),
                ("pr-old", "old", 200),
                ("pr-shared", "shared", 120),
                ("release-2", "shared", 120),
                ("pr-95", "95", 95),
                ("pr-30", "30", 30),
                ("pr-2d", "2d", 2),
            ] {
                push_image(
                    r.as_ref(),
                    &rp,
                    Some(&tag.parse().unwrap()),
                    &img(repo, n, days),
                )
                .await
                .unwrap();
            }
            if repo == "team/a" {
                let specs = [
                    img(repo, "idx", 100),
                    img(repo, "idx", 100).with_platform("linux", "arm64"),
                ];
                let index = push_index(r.as_ref(), &rp, Some(&"pr-idx".parse().unwrap()), &specs)
                    .await
                    .unwrap();
                let referrer = push_referrer(
                    r.as_ref(),
                    &rp,
                    &index,
                    "application/vnd.cyclonedx+json",
                    b"{\"bomFormat\":\"CycloneDX\"}",
                )
                .await
                .unwrap();
                seeded = Some(Seeded {
                    index: index.to_string(),
                    referrer: referrer.to_string(),
                });
            }
        }
        seeded.unwrap()
    })
}

/// `skopeo list-tags`, sorted.
fn list_tags(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let out = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/{repo}", reg.host),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

const ALL_B: &[&str] = &[
    "main",
    "pr-old",
    "pr-shared",
    "release-2",
    "pr-95",
    "pr-30",
    "pr-2d",
];
const AFTER_B: &[&str] = &["main", "pr-2d", "pr-30", "release-2"];

fn policy(url: &str, repos: &str, delete: &str, extra: &str) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  dev: {{url: \"{url}\"}}\n\
             retention:\n  - name: clean\n    repos: [{repos}]\n\
             \x20   delete: {delete}\n{extra}"
        ),
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap().to_string();
    (tmp, d)
}

const DELETE: &str = "{older_than: 90d, tags: {regex: \"^pr-\"}}";
const KEEP: &str = "    keep: {tags: [\"release-*\"]}\n";

#[test]
fn retention_deletes_exactly_the_expected_tags() {
    let reg = TestRegistry::start();
    let s = seed(&reg);
    let referrers_tag = s.index.replace(':', "-");
    let mut all_a: Vec<&str> = ALL_B.to_vec();
    all_a.push("pr-idx");
    all_a.push(&referrers_tag);
    assert_eq!(list_tags(&reg, "team/a"), sorted(&all_a), "seeded");
    for repo in ["team/b", "team/c"] {
        assert_eq!(list_tags(&reg, repo), sorted(ALL_B), "seeded {repo}");
    }
    let release: Vec<String> = ["team/a", "team/b", "team/c"]
        .iter()
        .map(|repo| {
            let d = reg.digest(repo, "release-2");
            assert_eq!(reg.digest(repo, "pr-shared"), d, "{repo}");
            d
        })
        .collect();
    assert_eq!(reg.digest("team/a", &s.referrer), s.referrer);

    let (_tmp, d) = policy(&reg.url(), "\"dev/team/*\"", DELETE, KEEP);
    let (code, plan) = run(regimen().args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{plan}");
    for want in [
        "dev/team/a:pr-old",
        "dev/team/a:pr-shared",
        "dev/team/a:pr-95",
        "dev/team/a:pr-idx",
        "dev/team/c:pr-old",
    ] {
        assert!(plan.contains(want), "`{want}` missing:\n{plan}");
    }
    assert!(!plan.contains("could not observe"), "{plan}");

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");

    assert_eq!(list_tags(&reg, "team/a"), sorted(AFTER_B));
    for repo in ["team/b", "team/c"] {
        assert_eq!(list_tags(&reg, repo), sorted(AFTER_B), "{repo}");
    }
    // The kept tag that shared pr-shared's image is still whole and pullable.
    for (repo, want) in ["team/a", "team/b", "team/c"].iter().zip(&release) {
        assert_eq!(&reg.digest(repo, "release-2"), want, "{repo}");
    }
    let tmp = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/team/a:release-2", reg.host),
        &format!("dir:{}", tmp.path().join("release").display()),
    ]);
    // The index went with its referrer and its fallback referrers tag.
    for reference in [&s.index, &s.referrer, &referrers_tag] {
        let r = reg.request(
            "HEAD",
            &format!("/v2/team/a/manifests/{reference}"),
            &[("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")],
            &[],
        );
        assert_eq!(r.status, 404, "{reference} still resolves");
    }

    // Converged: nothing left to delete.
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "nothing left to delete:\n{again}");
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Apply complete"), "{out}");
    assert_eq!(list_tags(&reg, "team/a"), sorted(AFTER_B));
}

#[test]
fn regex_matching_everything_leaves_min_keep() {
    let reg = TestRegistry::start();
    seed(&reg);
    let (_tmp, d) = policy(&reg.url(), "dev/team/b", "{tags: {regex: \".*\"}}", "");
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    // min_keep 1 by default: the newest tag stays.
    assert_eq!(list_tags(&reg, "team/b"), ["pr-2d"]);
    assert_eq!(
        list_tags(&reg, "team/a").len(),
        ALL_B.len() + 2,
        "other repos untouched"
    );
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "{again}");
}

#[test]
fn over_max_deletes_applies_nothing_and_says_why() {
    let reg = TestRegistry::start();
    seed(&reg);
    let (_tmp, d) = policy(
        &reg.url(),
        "\"dev/team/*\"",
        DELETE,
        &format!("{KEEP}    max_deletes: 3\n"),
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over max_deletes 3"), "{out}");
    assert_eq!(list_tags(&reg, "team/b"), sorted(ALL_B));
    assert_eq!(list_tags(&reg, "team/c"), sorted(ALL_B));
    assert_eq!(list_tags(&reg, "team/a").len(), ALL_B.len() + 2);
}

#[test]
fn unreachable_repo_is_unobserved_and_untouched() {
    let reg = TestRegistry::start();
    seed(&reg);
    let proxy = FaultProxy::start(&reg.host);
    let rule = proxy.always_status_prefix("/v2/team/c/", 503);
    let (_tmp, d) = policy(&proxy.url(), "\"dev/team/*\"", DELETE, KEEP);

    let (code, v, out) = json_plan(regimen().args(["plan", "-C", &d, "--format", "json"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["complete"], false, "{out}");
    let unobserved = v["unobserved"].as_array().unwrap();
    assert!(
        unobserved
            .iter()
            .any(|u| u["subject"].as_str().unwrap().contains("team/c")),
        "{out}"
    );
    let targets: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    assert!(!targets.iter().any(|t| t.contains("team/c")), "{targets:?}");
    assert!(targets.iter().any(|t| t.contains("team/a")), "{targets:?}");
    assert!(targets.iter().any(|t| t.contains("team/b")), "{targets:?}");

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(proxy.counts(rule).1 > 0, "team/c was asked for and refused");

    // Straight to the registry, not through the proxy.
    assert_eq!(list_tags(&reg, "team/a"), sorted(AFTER_B));
    assert_eq!(list_tags(&reg, "team/b"), sorted(AFTER_B));
    assert_eq!(list_tags(&reg, "team/c"), sorted(ALL_B));
    for tag in ALL_B {
        assert!(reg.tags("team/c").unwrap().contains(&tag.to_string()));
        reg.raw_manifest("team/c", tag);
    }
}

#[test]
fn saved_plan_refuses_a_deletion_whose_tag_was_repushed() {
    let reg = TestRegistry::start();
    seed(&reg);
    let (tmp, d) = policy(&reg.url(), "dev/team/b", DELETE, KEEP);
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(regimen().args(["plan", "-C", &d, "--out", planfile.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dev/team/b:pr-shared"), "{out}");

    // Meanwhile pr-shared (an untag: its image stays for release-2) is re-pushed to a new image.
    let r = open(&reg.host);
    let fresh = block_on(push_image(
        r.as_ref(),
        &"team/b".parse().unwrap(),
        Some(&"pr-shared".parse().unwrap()),
        &img("team/b", "fresh", 200),
    ))
    .unwrap()
    .to_string();
    // And pr-old (a delete of its own image) is re-pushed to a new image too.
    let fresh_old = block_on(push_image(
        r.as_ref(),
        &"team/b".parse().unwrap(),
        Some(&"pr-old".parse().unwrap()),
        &img("team/b", "fresh-old", 200),
    ))
    .unwrap()
    .to_string();

    let (code, out) = run(regimen().args(["apply", "-C", &d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "a stale change exits 1:\n{out}");
    assert!(out.to_lowercase().contains("stale"), "{out}");
    assert!(out.contains("pr-shared"), "{out}");
    // The re-pushed tag stays on its new image; the rest of the plan was applied.
    assert_eq!(reg.digest("team/b", "pr-shared"), fresh);
    assert_eq!(reg.digest("team/b", "pr-old"), fresh_old);
    assert_eq!(
        list_tags(&reg, "team/b"),
        sorted(&["main", "pr-2d", "pr-30", "pr-old", "pr-shared", "release-2"])
    );
}

#[test]
fn untagged_referrers_whose_image_is_gone_are_cleaned_and_nothing_else() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/x".parse().unwrap();
    let (gone, kept) = block_on(async {
        let gone = push_image(
            r.as_ref(),
            &repo,
            Some(&"old".parse().unwrap()),
            &img("x", "old", 300),
        )
        .await
        .unwrap();
        push_referrer(
            r.as_ref(),
            &repo,
            &gone,
            "application/vnd.cyclonedx+json",
            b"{}",
        )
        .await
        .unwrap();
        let kept = push_image(
            r.as_ref(),
            &repo,
            Some(&"live".parse().unwrap()),
            &img("x", "live", 300),
        )
        .await
        .unwrap();
        push_referrer(
            r.as_ref(),
            &repo,
            &kept,
            "application/vnd.cyclonedx+json",
            b"{}",
        )
        .await
        .unwrap();
        // Someone deletes the old image by digest, leaving its SBOM behind.
        r.delete_manifest(&repo, &gone).await.unwrap();
        (gone, kept)
    });
    let orphan_tag = gone.referrers_tag().to_string();
    let live_tag = kept.referrers_tag().to_string();
    assert!(list_tags(&reg, "team/x").contains(&orphan_tag));

    let (_tmp, d) = policy(
        &reg.url(),
        "\"dev/team/x\"",
        "{untagged_referrers: true}",
        "",
    );
    let (code, plan) = run(regimen().args(["plan", "-C", &d]));
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains(&format!("dev/team/x:{orphan_tag}")), "{plan}");
    assert!(
        !plan.contains(":live") && !plan.contains(&live_tag),
        "only the orphan goes:\n{plan}"
    );

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/x"), sorted(&["live", &live_tag]));
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "{again}");
}

/// An OCI index over `children` (digest, size), as raw manifest bytes.
fn index_of(children: &[(&str, usize, &str)]) -> regimen::registry::Manifest {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, size, media_type)| {
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": size,
                               "platform": {"architecture": "amd64", "os": "linux"}})
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    regimen::registry::Manifest::from_bytes(
        serde_json::to_vec(&index).unwrap(),
        Some("application/vnd.oci.image.index.v1+json"),
    )
    .unwrap()
}

/// A `sha256-<hex>` index that lists `digests` (whatever their subject).
fn crafted_index(reg: &TestRegistry, repo: &str, digests: &[&str]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = digests
        .iter()
        .map(|d| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d,
                "size": reg.raw_manifest(repo, d).len(),
                "artifactType": "application/vnd.example.sbom",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap()
}

#[test]
fn saved_plan_refuses_to_delete_what_a_new_index_now_lists() {
    const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/ix".parse().unwrap();
    let [b, c, d] = ["pr-2", "pr-3", "pr-4"].map(|tag| {
        block_on(push_image(
            r.as_ref(),
            &repo,
            Some(&tag.parse().unwrap()),
            &img("ix", tag, 200),
        ))
        .unwrap()
        .to_string()
    });
    block_on(push_image(
        r.as_ref(),
        &repo,
        Some(&"main".parse().unwrap()),
        &img("ix", "main", 10),
    ))
    .unwrap();
    // Through a proxy that counts the index reads.
    let proxy = FaultProxy::start(&reg.host);
    let (tmp, dir) = policy(&proxy.url(), "dev/team/ix", DELETE, "");
    let planfile = tmp.path().join("plan.json");
    let (code, out) =
        run(regimen().args(["plan", "-C", &dir, "--out", planfile.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    for tag in ["pr-2", "pr-3", "pr-4"] {
        assert!(out.contains(&format!("delete dev/team/ix:{tag}")), "{out}");
    }

    // Meanwhile: index v2 lists pr-2's image; v3 lists an (untagged) index
    // that lists pr-3's image.
    let size = |digest: &str| reg.raw_manifest("team/ix", digest).len();
    let v2 = index_of(&[(&b, size(&b), IMAGE)]);
    let inner = index_of(&[(&c, size(&c), IMAGE)]);
    let v3 = index_of(&[(inner.digest.as_str(), inner.bytes.len(), INDEX)]);
    block_on(async {
        r.put_manifest(&repo, Some(&"v2".parse().unwrap()), &v2)
            .await
            .unwrap();
        r.put_manifest(&repo, None, &inner).await.unwrap();
        r.put_manifest(&repo, Some(&"v3".parse().unwrap()), &v3)
            .await
            .unwrap();
    });

    let (code, out) = run(regimen().args(["apply", "-C", &dir, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "a stale change exits 1:\n{out}");
    assert!(out.contains("2 stale"), "{out}");
    assert!(
        out.contains(&format!("{b} is now listed by the index tagged v2")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{c} is now listed by the index tagged v3")),
        "{out}"
    );
    // The indexes are whole; the rest of the plan was applied.
    for digest in [&b, &c] {
        let r = reg.request(
            "HEAD",
            &format!("/v2/team/ix/manifests/{digest}"),
            &[("Accept", IMAGE)],
            &[],
        );
        assert_eq!(r.status, 200, "{digest} was deleted");
    }
    let gone = reg.request(
        "HEAD",
        &format!("/v2/team/ix/manifests/{d}"),
        &[("Accept", IMAGE)],
        &[],
    );
    assert_eq!(gone.status, 404, "pr-4's image is deleted");
    assert_eq!(
        list_tags(&reg, "team/ix"),
        sorted(&["main", "pr-2", "pr-3", "v2", "v3"])
    );
    let tmp = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/team/ix:v2", reg.host),
        &format!("dir:{}", tmp.path().join("v2").display()),
    ]);
    // Three deletions looked at the repo; each index was read once.
    for index in [&v2.digest, &inner.digest, &v3.digest] {
        assert_eq!(
            proxy.count("GET", &format!("/manifests/{index}")),
            1,
            "{index}: {:?}",
            proxy.log()
        );
    }
}

/// HEAD of a manifest by digest, straight at the registry.
fn manifest_status(reg: &TestRegistry, repo: &str, reference: &str) -> u16 {
    reg.request(
        "HEAD",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )],
        &[],
    )
    .status
}

#[test]
fn an_image_whose_delete_fails_keeps_its_referrers() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/sbom".parse().unwrap();
    let (image, sbom) = block_on(async {
        let image = push_image(
            r.as_ref(),
            &repo,
            Some(&"pr-2".parse().unwrap()),
            &img("sbom", "pr-2", 200),
        )
        .await
        .unwrap();
        push_image(
            r.as_ref(),
            &repo,
            Some(&"keep".parse().unwrap()),
            &img("sbom", "keep", 200),
        )
        .await
        .unwrap();
        let sbom = push_referrer(
            r.as_ref(),
            &repo,
            &image,
            "application/vnd.cyclonedx+json",
            b"{\"bomFormat\":\"CycloneDX\"}",
        )
        .await
        .unwrap();
        (image, sbom)
    });
    let referrers_tag = image.referrers_tag().to_string();
    let proxy = FaultProxy::start(&reg.host);
    let refuse = proxy.status_times("DELETE", &format!("/manifests/{image}"), 503, &[], 100);
    let (_tmp, dir) = policy(
        &proxy.url(),
        "dev/team/sbom",
        "{tags: {regex: \"^pr-\"}}",
        "    keep: {tags: [keep]}\n",
    );

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(proxy.counts(refuse).1 > 0, "{:?}", proxy.log());
    // Nothing of it was deleted: the SBOM, and the referrers tag listing it.
    assert_eq!(reg.digest("team/sbom", "pr-2"), image.to_string());
    assert_eq!(manifest_status(&reg, "team/sbom", sbom.as_str()), 200);
    assert!(
        reg.raw_manifest("team/sbom", &referrers_tag)
            .contains(sbom.as_str()),
        "the referrers tag still lists the SBOM"
    );
    assert_eq!(
        proxy.count("DELETE", &format!("/manifests/{sbom}")),
        0,
        "no referrer is deleted before its image: {:?}",
        proxy.log()
    );

    // Once the registry lets it, the image goes, then its SBOM and tag.
    proxy.clear();
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/sbom"), ["keep"]);
    for reference in [image.as_str(), sbom.as_str()] {
        assert_eq!(manifest_status(&reg, "team/sbom", reference), 404);
    }
    let log = proxy.log();
    let at = |digest: &str| {
        log.iter()
            .position(|s| s.method == "DELETE" && s.path.ends_with(digest) && s.fault.is_none())
            .unwrap_or_else(|| panic!("no DELETE of {digest}: {log:?}"))
    };
    assert!(at(image.as_str()) < at(sbom.as_str()), "{log:?}");
}

#[test]
fn an_untag_left_on_its_placeholder_says_so_and_the_next_apply_removes_it() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/ph".parse().unwrap();
    let image = block_on(async {
        for tag in ["pr-1", "keep"] {
            push_image(
                r.as_ref(),
                &repo,
                Some(&tag.parse().unwrap()),
                &img("ph", "shared", 200),
            )
            .await
            .unwrap();
        }
        r.head_manifest(&repo, "keep")
            .await
            .unwrap()
            .unwrap()
            .digest
    });
    // The probe DELETE (a digest that cannot exist) passes; the
    // placeholder's DELETE is refused.
    let proxy = FaultProxy::start(&reg.host);
    proxy.status_after("DELETE", "/v2/team/ph/manifests/sha256:", 503, 1, 100);
    let (_tmp, dir) = policy(
        &proxy.url(),
        "dev/team/ph",
        DELETE,
        "    keep: {tags: [keep]}\n",
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("dev/team/ph:pr-1 is left on a regimen placeholder")
            && out.contains("The next apply removes it"),
        "{out}"
    );
    assert!(reg
        .raw_manifest("team/ph", "pr-1")
        .contains("application/vnd.regimen.placeholder.v1"));

    // The placeholder has no age, yet the next plan removes it.
    proxy.clear();
    let (code, plan) = run(regimen().args(["plan", "-C", &dir]));
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("- delete dev/team/ph:pr-1") && plan.contains("regimen placeholder"),
        "{plan}"
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/ph"), ["keep"]);
    assert_eq!(reg.digest("team/ph", "keep"), image.to_string());
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &dir]));
    assert_eq!(code, 0, "{again}");
}

#[test]
fn a_fallback_index_listing_a_kept_image_never_deletes_it() {
    // The `sha256-<A>` tag is only a list: an entry whose manifest does not
    // name A as its subject (stale, or written by hand) is not A's referrer,
    // neither when A is deleted nor when A's orphaned referrers are.
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/k".parse().unwrap();
    let tag = |t: &str| t.parse::<regimen::model::Tag>().unwrap();
    let (old, gone, sbom, gone_sbom, kept) = block_on(async {
        let old = push_image(r.as_ref(), &repo, Some(&tag("pr-1")), &img("k", "old", 300))
            .await
            .unwrap();
        let sbom = push_referrer(
            r.as_ref(),
            &repo,
            &old,
            "application/vnd.cyclonedx+json",
            b"{}",
        )
        .await
        .unwrap();
        let gone = push_image(
            r.as_ref(),
            &repo,
            Some(&tag("pr-2")),
            &img("k", "gone", 300),
        )
        .await
        .unwrap();
        let gone_sbom = push_referrer(
            r.as_ref(),
            &repo,
            &gone,
            "application/vnd.cyclonedx+json",
            b"[]",
        )
        .await
        .unwrap();
        r.delete_manifest(&repo, &gone).await.unwrap();
        let kept = push_image(
            r.as_ref(),
            &repo,
            Some(&tag("stable")),
            &img("k", "kept", 1),
        )
        .await
        .unwrap();
        (old, gone, sbom, gone_sbom, kept)
    });
    let (kept, sbom, gone_sbom) = (kept.to_string(), sbom.to_string(), gone_sbom.to_string());
    for (subject, real) in [(&old, &sbom), (&gone, &gone_sbom)] {
        let index = crafted_index(&reg, "team/k", &[&kept, real]);
        reg.push_manifest(
            "team/k",
            subject.referrers_tag().as_str(),
            "application/vnd.oci.image.index.v1+json",
            &index,
        );
    }

    let (_tmp, d) = policy(
        &reg.url(),
        "\"dev/team/k\"",
        "{older_than: 90d, tags: {regex: \"^pr-\"}}",
        "  - name: orphans\n    repos: [\"dev/team/k\"]\n    delete: {untagged_referrers: true}\n",
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/k"), sorted(&["stable"]), "{out}");
    assert_eq!(reg.digest("team/k", "stable"), kept);
    for gone in [old.as_str(), &sbom, &gone_sbom] {
        let r = reg.request(
            "HEAD",
            &format!("/v2/team/k/manifests/{gone}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            &[],
        );
        assert_eq!(r.status, 404, "{gone} still resolves");
    }
}

#[test]
fn a_listed_tag_whose_manifest_is_not_found_leaves_the_repo_unobserved() {
    // tags/list names release-2 but its manifest answers 404 (a registry
    // mid-delete, or eventually consistent storage). Read as "no such
    // tag", pr-shared's image would look untagged otherwise and be deleted,
    // taking release-2 with it.
    let reg = TestRegistry::start();
    seed(&reg);
    let proxy = FaultProxy::start(&reg.host);
    let rule = proxy.status_times(
        "HEAD",
        "/v2/team/b/manifests/release-2",
        404,
        &[],
        usize::MAX,
    );
    let (_tmp, d) = policy(&proxy.url(), "\"dev/team/b\", \"dev/team/c\"", DELETE, "");

    let (code, v, out) = json_plan(regimen().args(["plan", "-C", &d, "--format", "json"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["complete"], false, "{out}");
    let unobserved = v["unobserved"].to_string();
    assert!(
        unobserved.contains("team/b") && unobserved.contains("release-2"),
        "{out}"
    );
    let targets = v["changes"].to_string();
    assert!(!targets.contains("team/b"), "{targets}");
    assert!(targets.contains("team/c"), "{targets}");

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(proxy.counts(rule).1 > 0);
    assert_eq!(list_tags(&reg, "team/b"), sorted(ALL_B));
    assert_eq!(
        list_tags(&reg, "team/c"),
        sorted(&["main", "pr-2d", "pr-30", "release-2"])
    );

    // Not found once (a delete in progress), found when read again: the
    // repo is read again and planned whole.
    proxy.clear();
    let once = proxy.status_times("HEAD", "/v2/team/b/manifests/release-2", 404, &[], 1);
    let (code, v, out) = json_plan(regimen().args(["plan", "-C", &d, "--format", "json"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(proxy.counts(once).1, 1, "{out}");
    assert_eq!(v["complete"], true, "{out}");
    // What the changes take (targets and the tags deletes take with them).
    let targets: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            std::iter::once(c["target"].as_str().unwrap().to_string()).chain(
                c["also_tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| t.as_str().unwrap().to_string()),
            )
        })
        .collect();
    assert!(targets.iter().any(|t| t == "dev/team/b:pr-old"), "{out}");
    assert!(!targets.iter().any(|t| t.contains("release-2")), "{out}");
}

/// Deletions in one repo share their compare-and-swap re-reads of it: 40
/// deletions among 60 tags cost a handful of tag listings, not one listing
/// (and one HEAD per tag) each, which made retention of thousands of tags
/// in a big repo take hours. Each deletion still checks the repo as read
/// after it started: a tag moved onto its digest meanwhile keeps the image.
#[test]
fn deletions_in_one_repo_share_their_rereads() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let rp: regimen::model::Repo = "ci/app".parse().unwrap();
    block_on(async {
        for i in 0..60 {
            let spec = img("ci/app", &format!("b{i}"), 200 - i);
            push_image(
                r.as_ref(),
                &rp,
                Some(&common::tag(&format!("b-{i:02}"))),
                &spec,
            )
            .await
            .unwrap();
        }
    });
    let (_tmp, dir) = policy(&reg.url(), "dev/ci/app", "{older_than: 160d}", "");
    // Tag HEADs are what a full read costs (one per tag); each deletion
    // also lists the tags right before its delete, which is cheap.
    let heads = |log: &str| log.matches("\"HEAD /v2/ci/app/manifests/b-").count();
    let before = heads(&reg.log());
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &dir]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("41 done"), "{out}");
    let during = heads(&reg.log()) - before;
    // The apply's own plan reads the 60 tags once; the 41 deletions share a
    // few more reads (one each would be 41 × 60).
    assert!(
        during <= 6 * 60,
        "{during} tag HEADs for 41 deletions:\n{out}"
    );
    let left = list_tags(&reg, "ci/app");
    assert_eq!(left.len(), 19, "{left:?}");
    assert!(left.iter().all(|t| t.as_str() >= "b-41"), "{left:?}");
}

/// An image deleted with its referrers leaves no tag behind that only
/// described it: its fallback referrers tag, the fallback tag of its SBOM
/// (listing the SBOM's signature), and cosign's `sha256-<hex>.sig`.
#[test]
fn a_deleted_image_takes_its_nested_and_cosign_tags_with_it() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/s".parse().unwrap();
    let (image, sbom, sig_tag) = block_on(async {
        push_image(
            r.as_ref(),
            &repo,
            Some(&"keep".parse().unwrap()),
            &img("s", "keep", 1),
        )
        .await
        .unwrap();
        let image = push_image(
            r.as_ref(),
            &repo,
            Some(&"pr-1".parse().unwrap()),
            &img("s", "1", 200),
        )
        .await
        .unwrap();
        let sbom = push_referrer(
            r.as_ref(),
            &repo,
            &image,
            "application/vnd.cyclonedx+json",
            b"{}",
        )
        .await
        .unwrap();
        push_referrer(
            r.as_ref(),
            &repo,
            &sbom,
            "application/vnd.dev.cosign.simplesigning.v1+json",
            b"sig",
        )
        .await
        .unwrap();
        let sig_tag = format!("{}.sig", image.referrers_tag());
        push_image(
            r.as_ref(),
            &repo,
            Some(&sig_tag.parse().unwrap()),
            &img("s", "cosign", 200),
        )
        .await
        .unwrap();
        (image, sbom, sig_tag)
    });
    let before = list_tags(&reg, "team/s");
    for t in [
        image.referrers_tag().to_string(),
        sbom.referrers_tag().to_string(),
        sig_tag.clone(),
    ] {
        assert!(before.contains(&t), "seeded {t}: {before:?}");
    }
    let (_tmp, d) = policy(&reg.url(), "dev/team/s", DELETE, "");
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/s"), ["keep"], "{out}");
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "{again}");
}

/// A referrer that someone also tagged (an SBOM kept as `sbom-keep`, a
/// cosign signature archived as `sig-archive`, an image pushed with a
/// `subject` and tagged `2.0`) lives on when the image it describes is
/// deleted: deleting it by digest would delete those tags too. Only the
/// referrers-scheme tag of the signature goes.
#[test]
fn tagged_referrers_outlive_the_image_they_describe() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo = "team/r";
    let (old, sbom, young, spdx) = block_on(async {
        let rp = repo.parse().unwrap();
        let old = push_image(
            r.as_ref(),
            &rp,
            Some(&"pr-1".parse().unwrap()),
            &img(repo, "1", 100),
        )
        .await
        .unwrap();
        let sbom = push_referrer(
            r.as_ref(),
            &rp,
            &old,
            "application/vnd.cyclonedx+json",
            b"{}",
        )
        .await
        .unwrap();
        let young = push_referrer(r.as_ref(), &rp, &old, "application/vnd.example.young", b"2")
            .await
            .unwrap();
        let spdx = push_referrer(r.as_ref(), &rp, &old, "application/spdx+json", b"{}")
            .await
            .unwrap();
        (old, sbom, young, spdx)
    });
    let retag = |from: &str, to: &str| {
        let bytes = reg.raw_manifest(repo, from);
        let mt = serde_json::from_str::<serde_json::Value>(&bytes).unwrap()["mediaType"]
            .as_str()
            .unwrap()
            .to_string();
        reg.push_manifest(repo, to, &mt, bytes.as_bytes());
    };
    retag(sbom.as_str(), "sbom-keep");
    retag(young.as_str(), "2.0");
    let sig_tag = format!("{}.sig", old.referrers_tag().as_str());
    block_on(async {
        push_image(
            r.as_ref(),
            &repo.parse().unwrap(),
            Some(&"sig-archive".parse().unwrap()),
            &img(repo, "signature", 100),
        )
        .await
        .unwrap();
    });
    retag("sig-archive", &sig_tag);
    let before: std::collections::BTreeMap<String, String> = ["sbom-keep", "2.0", "sig-archive"]
        .iter()
        .map(|t| (t.to_string(), reg.digest(repo, t)))
        .collect();

    let (_tmp, d) = policy(&reg.url(), "dev/team/r", DELETE, "    min_keep: 0\n");
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("delete dev/team/r:pr-1: done"), "{out}");
    let left = list_tags(&reg, repo);
    assert!(!left.contains(&"pr-1".to_string()), "{left:?}");
    assert!(
        !left.contains(&sig_tag),
        "the signature's scheme tag goes: {left:?}"
    );
    for (t, digest) in &before {
        assert_eq!(
            &reg.digest(repo, t),
            digest,
            "{t} must still hold its image"
        );
    }
    // The untagged SPDX referrer went with its image.
    assert_eq!(manifest_status(&reg, repo, spdx.as_str()), 404);
}

/// A tag that already existed, moved onto an image while its deletion
/// waits its turn (a roll-back of `stable-N` during a long apply on a
/// one-request-at-a-time registry), keeps the image: each deletion checks
/// the repo against a read at most a second old right before its delete,
/// one deletion of a repo at a time. The first delete is held 3 s by a
/// proxy; the tags move meanwhile.
#[test]
fn a_kept_tag_moved_onto_a_doomed_image_during_apply_keeps_it() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo = "team/race";
    block_on(async {
        let rp = repo.parse().unwrap();
        for i in 0..30 {
            let t = format!("old-{i:02}");
            push_image(
                r.as_ref(),
                &rp,
                Some(&t.parse().unwrap()),
                &img(repo, &t, 100),
            )
            .await
            .unwrap();
        }
        for i in 0..5 {
            let t = format!("stable-{i}");
            push_image(
                r.as_ref(),
                &rp,
                Some(&t.parse().unwrap()),
                &img(repo, &t, 1),
            )
            .await
            .unwrap();
        }
    });
    let proxy = FaultProxy::start(&reg.host);
    proxy.delay(
        "DELETE",
        "/manifests/",
        std::time::Duration::from_secs(3),
        1,
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  dev: {{url: \"{}\", concurrency: 1}}\n\
             retention:\n  - name: clean\n    repos: [dev/team/race]\n\
             \x20   delete: {{older_than: 90d, tags: {{regex: \"^old-\"}}}}\n\
             \x20   keep: {{tags: [\"stable-*\"]}}\n    min_keep: 0\n",
            proxy.url()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("regimen"))
        .args(["apply", "--auto-approve", "-C"])
        .arg(tmp.path())
        .env("DOCKER_CONFIG", common::empty_docker_config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.count("DELETE", "/manifests/") == 0 {
        assert!(std::time::Instant::now() < deadline, "no delete began");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The digest being deleted right now is left alone; five others get a
    // stable tag each.
    let held = proxy
        .log()
        .into_iter()
        .find(|s| s.method == "DELETE")
        .map(|s| s.path)
        .unwrap();
    let mut moved = Vec::new();
    for i in (0..30).rev() {
        let t = format!("old-{i:02}");
        let d = reg.digest(repo, &t);
        if held.ends_with(&d) {
            continue;
        }
        let bytes = reg.raw_manifest(repo, &t);
        let n = moved.len();
        reg.push_manifest(
            repo,
            &format!("stable-{n}"),
            "application/vnd.oci.image.manifest.v1+json",
            bytes.as_bytes(),
        );
        moved.push((format!("stable-{n}"), d));
        if moved.len() == 5 {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for (t, d) in &moved {
        assert_eq!(
            manifest_status(&reg, repo, t),
            200,
            "{t} was deleted:\n{text}"
        );
        assert_eq!(&reg.digest(repo, t), d, "{t}\n{text}");
    }
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stale = text
        .lines()
        .filter(|l| l.starts_with("delete ") && l.contains(": STALE"))
        .count();
    assert_eq!(stale, 5, "{text}");
}

/// `--target` naming a tag that a delete removes with its image ("also
/// removes tag …") selects that delete, in a plan and on a saved plan.
#[test]
fn target_naming_a_tag_a_delete_also_removes_selects_the_delete() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let rp = "team/t".parse().unwrap();
    block_on(async {
        for (tag, n, days) in [("a", "old", 100), ("b", "old", 100), ("new", "new", 1)] {
            push_image(
                r.as_ref(),
                &rp,
                Some(&tag.parse().unwrap()),
                &img("team/t", n, days),
            )
            .await
            .unwrap();
        }
    });
    let (tmp, d) = policy(&reg.url(), "dev/team/t", "{older_than: 30d}", "");
    let (code, out) = run(regimen().args(["plan", "-C", &d, "--target", "dev/team/t:b"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("- delete dev/team/t:a") && out.contains("also removes tag b"),
        "{out}"
    );
    assert!(!out.contains("No changes"), "{out}");

    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(regimen().args(["plan", "-C", &d, "--out", planfile.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    // A --target naming nothing in the saved plan (a typo) is an error,
    // not "Apply complete: 0 done".
    let (code, out) = run(regimen().args([
        "apply",
        "-C",
        &d,
        "--target",
        "dev/team/t:bb",
        planfile.to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--target dev/team/t:bb matches no change of the saved plan")
            && out.contains("dev/team/t:a")
            && out.contains("Nothing was applied"),
        "{out}"
    );
    assert_eq!(list_tags(&reg, "team/t"), ["a", "b", "new"]);
    let (code, out) = run(regimen().args([
        "apply",
        "-C",
        &d,
        "--target",
        "dev/team/t:b",
        planfile.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Apply complete: 1 done"), "{out}");
    assert_eq!(list_tags(&reg, "team/t"), ["new"]);
}

/// Pushes `repo:tag` (`days` old) with an SBOM attached, and its
/// `sha256-<hex>` referrers list also under `refs-archive`: the image's
/// digest and the SBOM's.
async fn image_with_kept_list(
    r: &dyn regimen::registry::Registry,
    repo: &regimen::model::Repo,
    tag: &str,
    days: i64,
) -> (regimen::model::Digest, regimen::model::Digest) {
    let image = push_image(
        r,
        repo,
        Some(&tag.parse().unwrap()),
        &img(repo.as_str(), tag, days),
    )
    .await
    .unwrap();
    let sbom = push_referrer(r, repo, &image, "application/vnd.cyclonedx+json", b"{}")
        .await
        .unwrap();
    let list = r
        .get_manifest(repo, image.referrers_tag().as_str())
        .await
        .unwrap()
        .unwrap();
    r.put_manifest(repo, Some(&"refs-archive".parse().unwrap()), &list)
        .await
        .unwrap();
    (image, sbom)
}

/// The SBOM `sbom` still reads in `repo`, and the policy in `d` has
/// nothing left to do.
fn sbom_stays_and_nothing_is_left(
    reg: &TestRegistry,
    repo: &str,
    sbom: &regimen::model::Digest,
    d: &str,
) {
    skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/{repo}@{sbom}", reg.host),
    ]);
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", d]));
    assert_eq!(code, 0, "{again}");
}

/// A referrers list also kept under an ordinary tag, and an image someone
/// tagged `sha256-<hex>` for a subject that does not exist: deleting them
/// by digest would take those tags (Distribution deletes every tag on a
/// digest). `untagged_referrers` only untags them, and the kept list still
/// pulls whole.
#[test]
fn untagged_referrers_only_untag_what_has_other_tags() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/o".parse().unwrap();
    let (gone, sbom, v1, fake_tag) = block_on(async {
        let (gone, sbom) = image_with_kept_list(r.as_ref(), &repo, "old", 300).await;
        // An image, also tagged like the referrers of an image never pushed.
        let v1 = push_image(
            r.as_ref(),
            &repo,
            Some(&"v1".parse().unwrap()),
            &img("o", "v1", 10),
        )
        .await
        .unwrap();
        let fake_tag = format!("sha256-{}", "9".repeat(64));
        let m = r.get_manifest(&repo, v1.as_str()).await.unwrap().unwrap();
        r.put_manifest(&repo, Some(&fake_tag.parse().unwrap()), &m)
            .await
            .unwrap();
        // Someone deletes the old image by digest.
        r.delete_manifest(&repo, &gone).await.unwrap();
        (gone, sbom, v1, fake_tag)
    });
    let list_tag = gone.referrers_tag().to_string();

    let (_tmp, d) = policy(
        &reg.url(),
        "\"dev/team/o\"",
        "{untagged_referrers: true}",
        "",
    );
    let (code, plan, text) = json_plan(regimen().args(["plan", "--format", "json", "-C", &d]));
    assert_eq!(code, 0, "{text}");
    let changes: Vec<(&str, &str)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action"].as_str().unwrap(), c["target"].as_str().unwrap()))
        .collect();
    let mut want = vec![
        ("untag", format!("dev/team/o:{list_tag}")),
        ("untag", format!("dev/team/o:{fake_tag}")),
    ];
    want.sort();
    let mut got: Vec<(&str, String)> = changes.iter().map(|(a, t)| (*a, t.to_string())).collect();
    got.sort();
    assert_eq!(got, want, "{text}");

    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/o"), sorted(&["refs-archive", "v1"]));
    assert_eq!(reg.digest("team/o", "v1"), v1.to_string());
    // The kept list and what it lists are whole.
    sbom_stays_and_nothing_is_left(&reg, "team/o", &sbom, &d);
}

/// Deleting an image whose referrers list is also kept under a tag of its
/// own: the list stays, and so does every referrer it lists (children of
/// an index are never deleted on their own), so the kept tag still pulls.
#[test]
fn a_deleted_image_keeps_referrers_a_kept_list_names() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let repo: regimen::model::Repo = "team/g".parse().unwrap();
    let sbom = block_on(async {
        let (_, sbom) = image_with_kept_list(r.as_ref(), &repo, "old-g", 300).await;
        push_image(
            r.as_ref(),
            &repo,
            Some(&"main".parse().unwrap()),
            &img("g", "main", 1),
        )
        .await
        .unwrap();
        sbom
    });
    let (_tmp, d) = policy(
        &reg.url(),
        "\"dev/team/g\"",
        "{tags: {glob: \"old-*\"}}",
        "    min_keep: 0\n",
    );
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_tags(&reg, "team/g"), sorted(&["main", "refs-archive"]));
    // `skopeo copy --all` of the kept list reads every manifest it lists.
    let dest = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/team/g:refs-archive", reg.host),
        &format!("oci:{}:x", dest.path().display()),
    ]);
    sbom_stays_and_nothing_is_left(&reg, "team/g", &sbom, &d);
}

/// An untag the plan makes because another tag keeps the image is stale
/// when that tag has moved since: applying it would leave the image with
/// no tag at all, where retention would never see it again.
#[test]
fn saved_plan_refuses_an_untag_whose_keeping_tag_moved() {
    let reg = TestRegistry::start();
    seed(&reg);
    let (tmp, d) = policy(&reg.url(), "dev/team/b", DELETE, KEEP);
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(regimen().args(["plan", "-C", &d, "--out", planfile.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&planfile).unwrap()).unwrap();
    let untag = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "untag" && c["target"] == "dev/team/b:pr-shared")
        .unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(untag["kept_by"], serde_json::json!(["release-2"]), "{plan}");
    let shared = reg.digest("team/b", "pr-shared");

    // Meanwhile release-2 moves to a new image.
    let r = open(&reg.host);
    block_on(push_image(
        r.as_ref(),
        &"team/b".parse().unwrap(),
        Some(&"release-2".parse().unwrap()),
        &img("team/b", "release-2-fixed", 1),
    ))
    .unwrap();

    let (code, out) = run(regimen().args(["apply", "-C", &d, planfile.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("untag dev/team/b:pr-shared"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("STALE") && line.contains("no longer has its other tag release-2"),
        "{out}"
    );
    assert_eq!(reg.digest("team/b", "pr-shared"), shared);
}

/// Many tags of one image untagged in one apply: each is put on a
/// placeholder that is then deleted by digest, and Distribution's delete
/// walks every tag link of the repo. Links written meanwhile by the other
/// untags used to fail that walk half-way (500), leaving tags in the list on
/// a manifest that is gone: the repo could not be observed again. Every
/// untag must leave the tag list exactly as planned.
#[test]
fn many_untags_in_one_repo_leave_no_tag_on_a_missing_manifest() {
    let reg = TestRegistry::start();
    let r = open(&reg.host);
    let rp: regimen::model::Repo = "team/many".parse().unwrap();
    block_on(async {
        let d = push_image(
            r.as_ref(),
            &rp,
            Some(&"keep".parse().unwrap()),
            &img("team/many", "one", 200),
        )
        .await
        .unwrap();
        let m = r.get_manifest(&rp, d.as_str()).await.unwrap().unwrap();
        for n in 0..60 {
            r.put_manifest(&rp, Some(&format!("t{n:03}").parse().unwrap()), &m)
                .await
                .unwrap();
        }
    });
    let (_tmp, d) = policy(&reg.url(), "dev/team/many", "{tags: {regex: \"^t0\"}}", "");
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C", &d]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("60 done"), "{out}");
    assert_eq!(list_tags(&reg, "team/many"), ["keep"]);
    let (code, again) = run(regimen().args(["plan", "--detailed-exitcode", "-C", &d]));
    assert_eq!(code, 0, "the repo reads clean: {again}");
}
