//! Referrers attached after a copy follow it (issue 3: "signatures, SBOMs and
//! attestations follow copies and promotions"), between two real
//! `docker-registry` instances, which have no referrers API and so keep
//! referrers under the `sha256-<hex>` tag schema.

mod common;

use common::{block_on, json_plan, open, regimen, run, TestRegistry};
use regimen::model::{Digest, Repo, Tag};
use regimen::testkit::{push_image, push_referrer, ImageSpec};
use serde_json::Value;

const SBOM: &str = "application/vnd.cyclonedx+json";
const CREATED: &str = "2026-01-02T03:04:05Z";

fn policy(src: &TestRegistry, dst: &TestRegistry) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{name: app, from: src/team/app, to: dst/team/app}}\n",
            src.host, dst.host
        ),
    )
    .unwrap();
    dir
}

fn plan(dir: &tempfile::TempDir) -> (i32, Value) {
    let (code, v, out) = json_plan(
        regimen()
            .args(["plan", "--format", "json", "--detailed-exitcode", "-C"])
            .arg(dir.path()),
    );
    assert!(code == 0 || code == 2, "plan failed ({code}):\n{out}");
    (code, v)
}

fn apply(dir: &tempfile::TempDir) {
    let (code, out) = run(regimen()
        .args(["apply", "--auto-approve", "-C"])
        .arg(dir.path()));
    assert_eq!(code, 0, "apply:\n{out}");
}

/// `(action, target, expect)` of every change.
fn changes(v: &Value) -> Vec<(String, String, String)> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap().to_string(),
                c["target"].as_str().unwrap().to_string(),
                c["expect"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn repo() -> Repo {
    "team/app".parse().unwrap()
}

/// Pushes SBOM number `n` for `subject` in [`repo`] (as the referrers API or its fallback).
fn push_sbom(reg: &dyn regimen::registry::Registry, subject: &Digest, n: u8) -> Digest {
    let body = format!("{{\"bom\":{n}}}");
    block_on(push_referrer(reg, &repo(), subject, SBOM, body.as_bytes())).unwrap()
}

fn ref_tag(subject: &Digest, suffix: &str) -> Tag {
    format!("{}{suffix}", subject.as_str().replace(':', "-"))
        .parse()
        .unwrap()
}

/// Referrer digests the fallback index of `subject` lists, sorted.
fn listed(reg: &TestRegistry, subject: &Digest) -> Vec<String> {
    let raw = reg.raw_manifest("team/app", ref_tag(subject, "").as_str());
    let v: Value = serde_json::from_str(&raw).unwrap();
    let mut out: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn referrers_attached_after_the_copy_follow_it_and_runs_converge() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (s, d) = (open(&src.host), open(&dst.host));
    let dir = policy(&src, &dst);
    let subject = block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&"1.0".parse().unwrap()),
        &ImageSpec::new(CREATED).with_layer("app", "v1"),
    ))
    .unwrap();

    // Copied unsigned.
    apply(&dir);
    assert_eq!(dst.digest("team/app", "1.0"), subject.to_string());
    assert_eq!(plan(&dir).0, 0);

    // Signed later, OCI-style (an SBOM referrer: the fallback index) and
    // cosign-style (a `.sig` tag).
    let sbom = push_sbom(s.as_ref(), &subject, 1);
    // The SBOM is signed too (a referrer of the referrer): it follows the
    // SBOM, as on a first copy.
    let sbom_sig = block_on(push_referrer(
        s.as_ref(),
        &repo(),
        &sbom,
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        b"{\"sig\":1}",
    ))
    .unwrap();
    let sig_tag = ref_tag(&subject, ".sig");
    block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&sig_tag),
        &ImageSpec::new(CREATED).with_layer("sig", "signature 1"),
    ))
    .unwrap();
    let (code, v) = plan(&dir);
    assert_eq!(code, 2, "{v:#}");
    let fallback = format!("dst/team/app:{}", ref_tag(&subject, ""));
    let sig = format!("dst/team/app:{sig_tag}");
    assert_eq!(
        changes(&v),
        [
            ("copy".into(), fallback.clone(), "absent".into()),
            ("copy".into(), sig.clone(), "absent".into()),
        ],
        "{v:#}"
    );
    assert!(
        v["changes"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("referrers of src/team/app:1.0"),
        "{v:#}"
    );
    apply(&dir);
    assert_eq!(listed(&dst, &subject), [sbom.to_string()]);
    assert_eq!(listed(&dst, &sbom), [sbom_sig.to_string()]);
    assert_eq!(
        dst.raw_manifest("team/app", sbom_sig.as_str()),
        src.raw_manifest("team/app", sbom_sig.as_str()),
        "the SBOM's signature byte for byte"
    );
    assert_eq!(
        dst.raw_manifest("team/app", sbom.as_str()),
        src.raw_manifest("team/app", sbom.as_str()),
        "the SBOM byte for byte"
    );
    for tag in [ref_tag(&subject, ""), sig_tag.clone()] {
        assert_eq!(
            dst.digest("team/app", tag.as_str()),
            src.digest("team/app", tag.as_str()),
            "{tag} as at the source"
        );
    }
    assert_eq!(plan(&dir).0, 0, "a second run changes nothing");

    // A second SBOM: the target's index is a subset of the source's, so it moves.
    let sbom2 = push_sbom(s.as_ref(), &subject, 2);
    let (code, v) = plan(&dir);
    assert_eq!(code, 2);
    let old = dst.digest("team/app", ref_tag(&subject, "").as_str());
    assert_eq!(
        changes(&v),
        [("retag".into(), fallback.clone(), old)],
        "{v:#}"
    );
    apply(&dir);
    let mut want = vec![sbom.to_string(), sbom2.to_string()];
    want.sort();
    assert_eq!(listed(&dst, &subject), want);
    assert_eq!(plan(&dir).0, 0);

    // The target attaches a referrer of its own: kept, and no change planned.
    let own = block_on(push_referrer(
        d.as_ref(),
        &repo(),
        &subject,
        SBOM,
        b"{\"prod\":1}",
    ))
    .unwrap();
    assert_eq!(plan(&dir).0, 0, "the target's extra referrer is left alone");
    // The source then gains one too: the two cannot be reconciled without
    // merging, which regimen does not do; it says so and writes nothing.
    push_sbom(s.as_ref(), &subject, 3);
    let (_, v) = plan(&dir);
    assert!(changes(&v).is_empty(), "{v:#}");
    let blocked = v["blocked"].as_array().unwrap();
    assert_eq!(blocked.len(), 1, "{v:#}");
    assert_eq!(blocked[0]["subject"], fallback.as_str());
    assert!(
        blocked[0]["reason"]
            .as_str()
            .unwrap()
            .contains("regimen does not merge them"),
        "{v:#}"
    );
    assert!(listed(&dst, &subject).contains(&own.to_string()));
}

#[test]
fn a_first_copy_with_referrers_converges_in_one_run() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = open(&src.host);
    let dir = policy(&src, &dst);
    let mut sboms = vec![];
    let mut subjects = vec![];
    for n in 0..3 {
        let subject = block_on(push_image(
            s.as_ref(),
            &repo(),
            Some(&format!("1.{n}").parse().unwrap()),
            &ImageSpec::new(CREATED).with_layer("app", format!("v{n}")),
        ))
        .unwrap();
        for k in 0..2 {
            let payload = format!("{{\"bom\":\"{n}-{k}\"}}");
            sboms.push(
                block_on(push_referrer(
                    s.as_ref(),
                    &repo(),
                    &subject,
                    SBOM,
                    payload.as_bytes(),
                ))
                .unwrap(),
            );
        }
        // Rewritten as another tool would write it (same entries, other bytes);
        // the first one also lists a stale entry: a manifest with no subject.
        let tag = ref_tag(&subject, "");
        let mut raw: Value =
            serde_json::from_str(&src.raw_manifest("team/app", tag.as_str())).unwrap();
        if n == 0 {
            let stray = block_on(push_image(
                s.as_ref(),
                &repo(),
                None,
                &ImageSpec::new(CREATED).with_layer("stray", "not a referrer"),
            ))
            .unwrap();
            let bytes = src.raw_manifest("team/app", stray.as_str());
            raw["manifests"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": stray.to_string(),
                    "size": bytes.len(),
                }));
        }
        src.push_manifest(
            "team/app",
            tag.as_str(),
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec_pretty(&raw).unwrap(),
        );
        subjects.push(subject);
    }
    // The first image is also signed cosign-style: a `.sig` tag, no referrer of anything.
    let sig_tag = ref_tag(&subjects[0], ".sig");
    block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&sig_tag),
        &ImageSpec::new(CREATED).with_layer("sig", "signature 0"),
    ))
    .unwrap();
    let (code, v) = plan(&dir);
    assert_eq!(code, 2);
    assert_eq!(
        v["summary"]["copy"], 4,
        "the images bring their referrers, and the signature tag comes along: {v:#}"
    );
    apply(&dir);
    assert_eq!(
        dst.digest("team/app", sig_tag.as_str()),
        src.digest("team/app", sig_tag.as_str()),
        "the cosign signature arrives with the first copy"
    );
    for subject in &subjects {
        let tag = ref_tag(subject, "");
        assert_eq!(
            dst.digest("team/app", tag.as_str()),
            src.digest("team/app", tag.as_str()),
            "{tag}: the source's index, byte for byte"
        );
        assert!((2..=3).contains(&listed(&dst, subject).len()));
    }
    let (code, v) = plan(&dir);
    assert_eq!(code, 0, "{v:#}");
}

/// A chain `src → dst → dst/…/app2` (the second rule reads the first's
/// target), of mirrors or of promotions: a signature and an SBOM attached at
/// the start after the copies go all the way in one apply, each read where
/// it is.
#[test]
fn late_referrers_go_down_a_chain_of_mirrors_in_one_apply() {
    late_referrers_down_a_chain("mirrors");
}

#[test]
fn late_referrers_go_down_a_chain_of_promotions_in_one_apply() {
    late_referrers_down_a_chain("promotions");
}

fn late_referrers_down_a_chain(kind: &str) {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = open(&src.host);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
             {kind}:\n  - {{name: last, from: dst/team/app, to: dst/team/app2}}\n\
             \x20 - {{name: first, from: src/team/app, to: dst/team/app}}\n",
            src.host, dst.host
        ),
    )
    .unwrap();
    let subject = block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&"1.0".parse().unwrap()),
        &ImageSpec::new(CREATED).with_layer("app", "v1"),
    ))
    .unwrap();
    apply(&dir);
    assert_eq!(dst.digest("team/app2", "1.0"), subject.to_string());
    assert_eq!(plan(&dir).0, 0);

    let sbom = push_sbom(s.as_ref(), &subject, 1);
    let sig_tag = ref_tag(&subject, ".sig");
    block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&sig_tag),
        &ImageSpec::new(CREATED).with_layer("sig", "signature 1"),
    ))
    .unwrap();
    let (code, v) = plan(&dir);
    assert_eq!(code, 2, "{v:#}");
    let fallback = ref_tag(&subject, "");
    let mut targets: Vec<(String, String)> =
        changes(&v).into_iter().map(|(a, t, _)| (a, t)).collect();
    targets.sort();
    let mut want: Vec<(String, String)> = ["team/app", "team/app2"]
        .iter()
        .flat_map(|r| {
            [
                ("copy".to_string(), format!("dst/{r}:{fallback}")),
                ("copy".to_string(), format!("dst/{r}:{sig_tag}")),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(targets, want, "{v:#}");
    apply(&dir);
    for r in ["team/app", "team/app2"] {
        for tag in [&fallback, &sig_tag] {
            assert_eq!(
                dst.digest(r, tag.as_str()),
                src.digest("team/app", tag.as_str()),
                "{r}:{tag} as at the source"
            );
        }
        assert_eq!(
            dst.raw_manifest(r, sbom.as_str()),
            src.raw_manifest("team/app", sbom.as_str()),
            "{r}: the SBOM byte for byte"
        );
    }
    assert_eq!(plan(&dir).0, 0, "one apply went all the way");
}

/// `team/app:2.0`, a linux/amd64 + linux/arm64 index: its digest and its
/// platform manifests' (amd64 first).
fn two_platform_index(src: &TestRegistry) -> (Digest, Vec<Digest>) {
    let specs = [
        ImageSpec::new(CREATED).with_layer("app", "amd64"),
        ImageSpec::new(CREATED)
            .with_layer("app", "arm64")
            .with_platform("linux", "arm64"),
    ];
    let index = block_on(regimen::testkit::push_index(
        open(&src.host).as_ref(),
        &repo(),
        Some(&"2.0".parse().unwrap()),
        &specs,
    ))
    .unwrap();
    let raw: Value = serde_json::from_str(&src.raw_manifest("team/app", "2.0")).unwrap();
    let children = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().parse().unwrap())
        .collect();
    (index, children)
}

/// Referrers attached to an index's platform manifests (cosign `--recursive`,
/// a scan per platform) follow the index: on the first copy, and when
/// attached later; a no-op run plans nothing.
#[test]
fn referrers_of_platform_manifests_follow_the_index() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = open(&src.host);
    let dir = policy(&src, &dst);
    let (index, children) = two_platform_index(&src);
    let top_sbom = block_on(push_referrer(
        s.as_ref(),
        &repo(),
        &index,
        SBOM,
        b"{\"top\":1}",
    ))
    .unwrap();
    let amd_sbom = block_on(push_referrer(
        s.as_ref(),
        &repo(),
        &children[0],
        SBOM,
        b"{\"amd64\":1}",
    ))
    .unwrap();
    // The arm64 manifest is signed cosign-style: a `.sig` tag.
    let sig_tag = ref_tag(&children[1], ".sig");
    block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&sig_tag),
        &ImageSpec::new(CREATED).with_layer("sig", "arm64 signature"),
    ))
    .unwrap();

    let (code, v) = plan(&dir);
    assert_eq!(code, 2, "{v:#}");
    let sig = format!("dst/team/app:{sig_tag}");
    assert!(
        changes(&v).contains(&("copy".into(), sig.clone(), "absent".into())),
        "the platform manifest's signature tag comes with the first copy: {v:#}"
    );
    apply(&dir);
    assert_eq!(listed(&dst, &index), [top_sbom.to_string()]);
    assert_eq!(
        listed(&dst, &children[0]),
        [amd_sbom.to_string()],
        "the amd64 manifest's SBOM arrives with the index"
    );
    assert_eq!(
        dst.raw_manifest("team/app", amd_sbom.as_str()),
        src.raw_manifest("team/app", amd_sbom.as_str())
    );
    for tag in [ref_tag(&children[0], ""), sig_tag.clone()] {
        assert_eq!(
            dst.digest("team/app", tag.as_str()),
            src.digest("team/app", tag.as_str()),
            "{tag} as at the source"
        );
    }
    let (code, v) = plan(&dir);
    assert_eq!(code, 0, "a second run changes nothing: {v:#}");

    // Scanned later, per platform: the arm64 manifest gets a report.
    let arm_sbom = block_on(push_referrer(
        s.as_ref(),
        &repo(),
        &children[1],
        SBOM,
        b"{\"arm64\":1}",
    ))
    .unwrap();
    let (code, v) = plan(&dir);
    assert_eq!(code, 2, "{v:#}");
    let fallback = format!("dst/team/app:{}", ref_tag(&children[1], ""));
    assert_eq!(
        changes(&v),
        [("copy".into(), fallback, "absent".into())],
        "{v:#}"
    );
    assert!(
        v["changes"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("referrers of src/team/app:2.0"),
        "{v:#}"
    );
    apply(&dir);
    assert_eq!(listed(&dst, &children[1]), [arm_sbom.to_string()]);
    assert_eq!(plan(&dir).0, 0, "converged");
}

/// A platform-filtered copy brings the referrers of the platform manifests
/// it keeps, and none of the full index's or of those it leaves out.
#[test]
fn a_filtered_copy_brings_the_referrers_of_the_platforms_it_keeps() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = open(&src.host);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{name: arm, from: src/team/app, to: dst/team/app, \
             platforms: [linux/arm64]}}\n",
            src.host, dst.host
        ),
    )
    .unwrap();
    let (index, children) = two_platform_index(&src);
    for (subject, payload) in [
        (&index, "top"),
        (&children[0], "amd64"),
        (&children[1], "arm64"),
    ] {
        block_on(push_referrer(
            s.as_ref(),
            &repo(),
            subject,
            SBOM,
            payload.as_bytes(),
        ))
        .unwrap();
    }
    let arm_sig = ref_tag(&children[1], ".sig");
    let amd_sig = ref_tag(&children[0], ".sig");
    for (tag, body) in [(&arm_sig, "arm64 signature"), (&amd_sig, "amd64 signature")] {
        block_on(push_image(
            s.as_ref(),
            &repo(),
            Some(tag),
            &ImageSpec::new(CREATED).with_layer("sig", body),
        ))
        .unwrap();
    }
    let (code, v) = plan(&dir);
    assert_eq!(code, 2, "{v:#}");
    let targets: Vec<String> = changes(&v).into_iter().map(|c| c.1).collect();
    assert_eq!(
        targets,
        [
            "dst/team/app:2.0".to_string(),
            format!("dst/team/app:{arm_sig}")
        ],
        "{v:#}"
    );
    apply(&dir);
    let copied: Value = serde_json::from_str(&dst.raw_manifest("team/app", "2.0")).unwrap();
    assert_eq!(copied["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        dst.digest("team/app", ref_tag(&children[1], "").as_str()),
        src.digest("team/app", ref_tag(&children[1], "").as_str()),
        "the kept platform's SBOM index, as at the source"
    );
    assert_eq!(
        dst.digest("team/app", arm_sig.as_str()),
        src.digest("team/app", arm_sig.as_str())
    );
    let tags = dst.tags("team/app").unwrap();
    for absent in [ref_tag(&index, ""), ref_tag(&children[0], ""), amd_sig] {
        assert!(
            !tags.contains(&absent.to_string()),
            "{absent} describes what the filter left out: {tags:?}"
        );
    }
    assert_eq!(plan(&dir).0, 0, "a second run changes nothing");
}

/// Several tags of one signed image: each tag's copy brings the image's
/// referrers, but a referrer is read from the source and written once.
#[test]
fn a_referrer_shared_by_many_copied_tags_is_read_once() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = open(&src.host);
    let dir = policy(&src, &dst);
    let spec = ImageSpec::new(CREATED).with_layer("app", "shared");
    let subject = block_on(push_image(
        s.as_ref(),
        &repo(),
        Some(&"1.0".parse().unwrap()),
        &spec,
    ))
    .unwrap();
    let m = block_on(s.get_manifest(&repo(), subject.as_str()))
        .unwrap()
        .unwrap();
    for t in ["1", "latest", "stable"] {
        block_on(s.put_manifest(&repo(), Some(&t.parse().unwrap()), &m)).unwrap();
    }
    let sbom = push_sbom(s.as_ref(), &subject, 1);
    let before = src.log().lines().count();
    apply(&dir);
    let sbom_reads = src
        .log()
        .lines()
        .skip(before)
        .filter(|l| l.contains(&format!("\"GET /v2/team/app/manifests/{sbom} ")))
        .count();
    // One look at its subject while planning, one read to copy it.
    assert!(
        (1..=2).contains(&sbom_reads),
        "the SBOM was read {sbom_reads} times for 4 tags"
    );
    assert_eq!(listed(&dst, &subject), vec![sbom.to_string()]);
    let (code, v) = plan(&dir);
    assert_eq!(code, 0, "{v:#}");
}
