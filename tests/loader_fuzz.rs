//! The loader never panics, whatever it is given, and every error it reports
//! is located.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use regimen::config;

const KEYS: [&str; 40] = [
    "registries",
    "mirrors",
    "promotions",
    "retags",
    "retention",
    "hosts",
    "policies",
    "url",
    "auth",
    "username_env",
    "password_env",
    "password",
    "concurrency",
    "rate",
    "from",
    "to",
    "tags",
    "semver",
    "regex",
    "glob",
    "exclude",
    "latest",
    "platforms",
    "referrers",
    "prune",
    "name",
    "require",
    "min_age",
    "vulnerabilities",
    "max_severity",
    "overwrite",
    "tag",
    "newest",
    "repo",
    "repos",
    "delete",
    "keep",
    "min_keep",
    "endpoint",
    "on_violation",
];
const SCALARS: [&str; 16] = [
    "dev/team/api",
    "dev/team/api:1.0",
    "oci:x",
    "http://127.0.0.1:1",
    "24h",
    "7",
    ">=1.0",
    "^pr-(",
    "[",
    "true",
    "-1",
    "1.10",
    "~",
    "''",
    "\"\\u0000\"",
    "sha256:zz",
];

fn yaml_value(depth: u32) -> BoxedStrategy<String> {
    let leaf = proptest::sample::select(SCALARS.to_vec())
        .prop_map(String::from)
        .boxed();
    if depth == 0 {
        return leaf;
    }
    prop_oneof![
        2 => leaf,
        1 => proptest::collection::vec(yaml_value(depth - 1), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        2 => proptest::collection::vec((proptest::sample::select(KEYS.to_vec()), yaml_value(depth - 1)), 0..5)
            .prop_map(|v| format!("{{{}}}", v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))),
    ]
    .boxed()
}

fn check(files: Vec<(String, String)>) {
    let files: Vec<(Arc<str>, String)> = files
        .into_iter()
        .map(|(n, t)| (Arc::from(n.as_str()), t))
        .collect();
    if let Err(diags) = config::load_texts(Path::new("."), &files) {
        assert!(!diags.is_empty());
        for d in diags {
            assert!(d.loc.line >= 1 && d.loc.col >= 1, "{d}");
            assert!(files.iter().any(|(n, _)| *n == d.loc.file), "{d}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(a in ".{0,200}", b in "[ -~\n\t]{0,300}") {
        check(vec![("a.yaml".into(), a), ("b.yaml".into(), b)]);
    }

    #[test]
    fn policy_shaped_yaml_never_panics(docs in proptest::collection::vec(
        proptest::collection::vec((proptest::sample::select(KEYS.to_vec()), yaml_value(3)), 0..6), 1..4)) {
        let files = docs.into_iter().enumerate().map(|(i, entries)| {
            let text: String = entries.into_iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            (format!("f{i}.yaml"), text)
        }).collect();
        check(files);
    }

    /// Mutating the full SPEC example byte by byte never panics either.
    #[test]
    fn mutated_spec_policy_never_panics(pos in 0usize..2000, byte in any::<u8>(), cut in any::<bool>()) {
        let full = std::fs::read_to_string("testdata/full/policy.yaml").unwrap();
        let mut bytes = full.into_bytes();
        let p = pos % bytes.len();
        if cut { bytes.truncate(p) } else { bytes[p] = byte }
        check(vec![("policy.yaml".into(), String::from_utf8_lossy(&bytes).into_owned())]);
    }
}
