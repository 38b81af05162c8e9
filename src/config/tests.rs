//! The loader's messages, as a user reads them: one line per problem, at
//! its place, saying what to do.

use std::path::Path;
use std::sync::Arc;

use super::*;

/// The errors for one file `p.yaml` holding `yaml`, one per line.
fn errors(yaml: &str) -> String {
    match load_texts(Path::new("/p"), &[(Arc::from("p.yaml"), yaml.to_string())]) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(diags) => diags.iter().map(|d| format!("{d}\n")).collect::<String>(),
    }
}

/// Whether the loader takes `yaml` as one file `p.yaml`.
fn loads(yaml: &str) -> bool {
    load_texts(Path::new("/p"), &[(Arc::from("p.yaml"), yaml.to_string())]).is_ok()
}

fn accepted(yaml: &str) -> Policy {
    match load_texts(Path::new("/p"), &[(Arc::from("p.yaml"), yaml.to_string())]) {
        Ok(p) => p,
        Err(diags) => panic!("refused:\n{yaml}\n{diags:#?}"),
    }
}

const REG: &str = "registries:\n  dev: {url: \"http://127.0.0.1:5000\"}\n";

#[test]
fn durations_out_of_range_are_errors_at_their_place() {
    let yaml = format!(
        "{REG}\
         retention:\n\
         \x20 - {{name: a, repos: [dev/x], delete: {{older_than: \"106751991167301d\"}}}}\n\
         \x20 - {{name: b, repos: [dev/x], delete: {{older_than: 9223372036854775808s}}}}\n\
         \x20 - {{name: c, repos: [dev/x], delete: {{older_than: 18446744073709551615s}}}}\n\
         \x20 - {{name: d, repos: [dev/x], delete: {{older_than: 99999999999999999999999s}},\n\
         \x20     keep: {{younger_than: 36501d}}}}\n\
         promotions:\n\
         \x20 - {{name: p, from: dev/a, to: dev/b, require: {{min_age: 5215w,\n\
         \x20     vulnerabilities: {{max_severity: high, max_report_age: 307445734561825861m}}}}}}\n\
         hosts:\n\
         \x20 h:\n\
         \x20   endpoint: unix:///var/run/docker.sock\n\
         \x20   images: {{prune: {{older_than: 1000000000000h}}}}\n\
         \x20   containers: {{max_age: 106751991167301d}}\n\
         policies: {{max_age: 106751991167301d}}\n"
    );
    let e = errors(&yaml);
    // Each one is refused, none wraps to something short, and nothing else is said.
    assert_eq!(e.lines().count(), 10, "{e}");
    assert!(e.lines().all(|l| l.contains("is too long")), "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn the_longest_duration_is_accepted() {
    let yaml = format!(
        "{REG}retention:\n  - {{name: a, repos: [dev/x], delete: {{older_than: 36500d}}}}\n"
    );
    let p = accepted(&yaml);
    assert_eq!(
        p.retention[0].delete.older_than,
        Some(crate::model::Duration::MAX)
    );
    assert_eq!(crate::model::Duration::MAX.secs(), 36_500 * 86_400);
}

#[test]
fn credentials_in_a_url_are_refused_without_repeating_them() {
    let yaml = "registries:\n\
                \x20 a: {url: \"http://alice:TOPSECRET42@host\"}\n\
                \x20 b: {url: \"https://alice:TOPSECRET42@host:5000/\"}\n\
                \x20 c: {url: \"alice:TOPSECRET42@registry.example.com\"}\n\
                \x20 d: {url: \"ftp://alice:TOPSECRET42@host\"}\n\
                \x20 e: {url: \"https://alice@host\"}\n\
                hosts:\n\
                \x20 h1: {endpoint: \"tcp://bob:TOPSECRET42@h:2376\"}\n\
                \x20 h2: {endpoint: \"https://bob:TOPSECRET42@h:2376\"}\n";
    let e = errors(yaml);
    assert_eq!(e.lines().count(), 7, "{e}");
    for secret in ["TOPSECRET42", "alice", "bob"] {
        assert!(!e.contains(secret), "`{secret}` printed:\n{e}");
    }
    assert!(e.contains("auth:"), "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn an_at_sign_after_the_host_is_not_taken_for_credentials() {
    let yaml = "registries:\n  o: {url: \"oci:layouts/a@b\"}\n\
                hosts:\n  h: {endpoint: \"unix:///run/user@1000/docker.sock\"}\n";
    accepted(yaml);
}

#[test]
fn a_key_given_twice_is_named_with_both_places() {
    let yaml = "registries:\n\
                \x20 dev: {url: \"http://127.0.0.1:5000\"}\n\
                \x20 dev: {url: \"http://127.0.0.1:5001\"}\n\
                mirrors:\n\
                \x20 - from: dev/a\n\
                \x20   to: dev/b\n\
                \x20   to: dev/c\n\
                retention:\n\
                \x20 - {name: r, repos: [dev/x], delete: {older_than: 1d, older_than: 2d}}\n\
                hosts:\n\
                \x20 h: {endpoint: \"unix:///s\"}\n\
                \x20 h: {endpoint: \"unix:///t\"}\n\
                policies: {on_violation: warn}\n\
                policies: {on_violation: fail}\n\
                retags: [{tag: dev/a:x, from: dev/a:1.0, nmae: oops}]\n";
    let e = errors(yaml);
    assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
    // Every one of them, and the file's other mistakes too (the misspelt `nmae`).
    assert_eq!(e.lines().count(), 6, "{e}");
    assert!(e.contains("`nmae`"), "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn invalid_values_are_not_also_reported_missing() {
    let cases = [
        // an invalid duration is not a missing `delete` condition
        "retention:\n  - {name: r, repos: [dev/x], delete: {older_than: 10y}}\n",
        "retention:\n  - {name: r, repos: [dev/x], delete: {tags: {regex: \"(\"}}}\n",
        "retention:\n  - {name: r, repos: [dev/x], delete: {untagged_referrers: 1}}\n",
        "retention:\n  - {name: r, repos: [dev/x], delete: 90d}\n",
        // an invalid source is not a missing one
        "retags:\n  - {tag: dev/y:t, from: \"dev/y@sha256:abc\"}\n",
        "retags:\n  - {tag: dev/y:t, newest: {repo: dev/Y}}\n",
        "retags:\n  - {tag: dev/y:t, newest: [dev/y]}\n",
        // an invalid `tls` is not a missing one
        "hosts:\n  h: {endpoint: \"https://h:2376\", tls: {ca: a.pem}}\n",
        // unreadable `registries:` do not make every address undefined
        "registries: [dev]\nmirrors: [{from: dev/a, to: dev/b}]\n",
    ];
    let mut all = String::new();
    for case in cases {
        let yaml = if case.starts_with("registries") {
            case.to_string()
        } else {
            format!("{REG}{case}")
        };
        let e = errors(&yaml);
        assert!(!e.contains("needs"), "{yaml}\n{e}");
        assert!(!e.contains("not defined"), "{yaml}\n{e}");
        all += &e;
    }
    insta::assert_snapshot!(all);
}

#[test]
fn missing_values_are_still_reported_missing() {
    let cases = [
        "retention:\n  - {name: r, repos: [dev/x]}\n",
        "retention:\n  - {name: r, repos: [dev/x], delete: {}}\n",
        "retention:\n  - {name: r, repos: [dev/x], delete: {untagged_referrers: false}}\n",
        "retags:\n  - {tag: dev/y:t}\n",
        "retags:\n  - {tag: dev/y:t, from: ~}\n",
        "hosts:\n  h: {endpoint: \"https://h:2376\"}\n",
        "retention:\n  - {name: , repos: [dev/x], delete: {older_than: 1d}}\n",
    ];
    let mut all = String::new();
    for case in cases {
        let e = errors(&format!("{REG}{case}"));
        assert_eq!(e.lines().count(), 1, "{case}\n{e}");
        all += &e;
    }
    insta::assert_snapshot!(all);
}

#[test]
fn a_value_read_as_a_number_is_quoted_as_written() {
    let yaml = format!(
        "{REG}mirrors:\n\
         \x20 - from: dev/a\n\
         \x20   to: dev/b\n\
         \x20   tags: [1.10, 2.0, 1e3, 0x1F, 010, +7, true, .inf]\n"
    );
    let e = errors(&yaml);
    assert_eq!(e.lines().count(), 8, "{e}");
    assert!(e.contains("`1.10`") && e.contains("`\"1.10\"`"), "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn a_whole_number_written_plainly_is_its_text() {
    let yaml = format!("{REG}mirrors:\n  - {{from: dev/a, to: dev/b, tags: [7, \"1.10\"]}}\n");
    let p = accepted(&yaml);
    let tags: Vec<String> = p.mirrors[0]
        .tags
        .exact
        .iter()
        .flatten()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(tags, ["7", "1.10"]);
}

/// Every `default` in the JSON schema is the value the loader gives an
/// omitted key; a key gaining a default must be added here.
#[test]
fn schema_defaults_are_the_loaders() {
    let schema = json_schema();
    let defs = schema["$defs"].as_object().expect("$defs");
    let mut in_schema = std::collections::BTreeMap::new();
    for (def, s) in defs {
        for (key, prop) in s["properties"].as_object().into_iter().flatten() {
            if let Some(d) = prop.get("default") {
                in_schema.insert(format!("{def}.{key}"), d.clone());
            }
        }
    }
    let p = accepted(&format!(
        "{REG}mirrors: [{{from: dev/a, to: dev/b}}]\n\
         promotions: [{{name: p, from: dev/a, to: dev/c,\n\
         \x20 require: {{vulnerabilities: {{max_severity: high}}}}}}]\n\
         retention: [{{name: r, repos: [dev/x], delete: {{older_than: 1d}}}}]\n\
         hosts: {{h: {{endpoint: \"unix:///s\", images: {{prune: {{}}}}}}}}\n\
         policies: {{}}\n"
    ));
    let reg = &p.registries.values().next().expect("registry");
    let m = &p.mirrors[0];
    let pr = &p.promotions[0];
    let gate = pr.require.vulnerabilities.as_ref().expect("gate");
    let r = &p.retention[0];
    let h = &p.hosts["h"];
    let pol = p.policies.as_ref().expect("policies");
    let owner = pol
        .owner_label
        .clone()
        .unwrap_or_else(|| crate::inventory::AUTHORS.to_string());
    let null = serde_json::Value::Null;
    let loaded: std::collections::BTreeMap<String, serde_json::Value> = [
        (
            "Registry.concurrency",
            serde_json::json!(reg.concurrency.unwrap_or(Registry::DEFAULT_CONCURRENCY)),
        ),
        ("Registry.rate", serde_json::json!(reg.rate)),
        ("Auth.username_env", null.clone()),
        ("Auth.username", null.clone()),
        ("Auth.password_env", null.clone()),
        ("Auth.password_file", null.clone()),
        (
            "Mirror.platforms",
            serde_json::json!(match m.platforms {
                Platforms::All => "all",
                Platforms::Only(_) => "only",
            }),
        ),
        ("Mirror.referrers", serde_json::json!(m.referrers)),
        ("Mirror.prune", serde_json::json!(m.prune)),
        ("Promotion.overwrite", serde_json::json!(pr.overwrite)),
        ("Require.min_age", serde_json::json!(pr.require.min_age)),
        ("Require.referrers", serde_json::json!(pr.require.referrers)),
        (
            "VulnGate.scanners",
            serde_json::json!(gate.scanners.unwrap_or(VulnGate::DEFAULT_SCANNERS)),
        ),
        (
            "VulnGate.ignore_unfixed",
            serde_json::json!(gate.ignore_unfixed == Some(true)),
        ),
        (
            "VulnGate.max_report_age",
            serde_json::json!(gate.max_report_age),
        ),
        (
            "VulnGate.artifact_types",
            serde_json::json!(gate.report_types()),
        ),
        ("Retention.min_keep", serde_json::json!(r.min_keep)),
        ("Retention.max_deletes", serde_json::json!(r.max_deletes)),
        ("DeleteWhen.older_than", null.clone()),
        (
            "DeleteWhen.untagged_referrers",
            serde_json::json!(r.delete.untagged_referrers == Some(true)),
        ),
        ("Keep.newest", serde_json::json!(r.keep.newest)),
        ("Keep.younger_than", serde_json::json!(r.keep.younger_than)),
        (
            "HostPrune.older_than",
            serde_json::json!(h.images.prune.as_ref().and_then(|p| p.older_than)),
        ),
        (
            "HostPrune.keep",
            serde_json::json!(h.images.prune.as_ref().map(|p| p.keep.clone())),
        ),
        (
            "HostContainers.max_age",
            serde_json::json!(h.containers.max_age),
        ),
        ("Policies.registries", serde_json::json!(pol.registries)),
        ("Policies.base_images", serde_json::json!(pol.base_images)),
        ("Policies.max_age", serde_json::json!(pol.max_age)),
        ("Policies.on_violation", serde_json::json!(pol.on_violation)),
        ("Policies.owner_label", serde_json::json!(owner)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(in_schema, loaded);
}

#[test]
fn rule_names_must_be_one_printable_line() {
    // A newline in a name would print a line of its own in the plan, one
    // that looks like a change ("- delete …") but is not one.
    let yaml = format!(
        "{REG}mirrors:\n\
         \x20 - {{name: \"x\\n  - delete dev/prod/api:all   sha256:000000000000\", from: dev/a, to: dev/b}}\n\
         \x20 - {{name: \"m\\u001b[31mRED\", from: dev/c, to: dev/d}}\n\
         \x20 - {{name: \" \", from: dev/e, to: dev/f}}\n"
    );
    let e = errors(&yaml);
    assert_eq!(e.lines().count(), 3, "{e}");
    assert!(!e.contains('\u{1b}'), "{e:?}");
    insta::assert_snapshot!(e);
}

#[test]
fn messages_never_print_control_characters_as_written() {
    let yaml = format!(
        "{REG}mirrors:\n  - {{from: dev/a, to: dev/b, tags: [\"x\\n::error file=evil.yaml,line=1::pwned\"]}}\n"
    );
    let e = errors(&yaml);
    // One problem, one line: nothing a CI log would read as a command.
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("\\u{a}::error"), "{e}");
}

#[test]
fn default_rule_names_collide_like_given_ones() {
    let yaml = format!(
        "{REG}mirrors:\n  - {{from: dev/a, to: dev/b}}\n  - {{from: dev/a, to: dev/b}}\n\
         promotions:\n  - {{name: \"mirror:dev/c->dev/d\", from: dev/x, to: dev/y}}\n\
         mirrors:\n  - {{from: dev/c, to: dev/d}}\n"
    );
    // (the second `mirrors:` key is its own error; use two files instead)
    let files = [
        (
            Arc::from("a.yaml"),
            format!(
                "{REG}mirrors:\n  - {{from: dev/a, to: dev/b}}\n  - {{from: dev/a, to: dev/b}}\n\
                 \x20 - {{from: dev/c, to: dev/d}}\n"
            ),
        ),
        (
            Arc::from("b.yaml"),
            "promotions:\n  - {name: \"mirror:dev/c->dev/d\", from: dev/x, to: dev/y}\n".into(),
        ),
    ];
    let e = match load_texts(Path::new("/p"), &files) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(d) => d.iter().map(|d| format!("{d}\n")).collect::<String>(),
    };
    assert_eq!(e.lines().count(), 2, "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn promotions_and_retags_onto_themselves_are_refused() {
    let yaml = format!(
        "{REG}promotions:\n  - {{name: p, from: dev/a, to: dev/a}}\n\
         retags:\n  - {{tag: \"dev/a:x\", from: \"dev/a:x\"}}\n"
    );
    let e = errors(&yaml);
    assert_eq!(e.lines().count(), 2, "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn unknown_key_lists_each_known_key_once() {
    let e = errors(&format!(
        "{REG}mirrors:\n  - {{from: dev/a, to: dev/b, bogus: 1}}\n"
    ));
    assert_eq!(e.matches("from,").count(), 1, "{e}");
    assert_eq!(e.matches(" to,").count(), 1, "{e}");
}

#[test]
fn a_misspelt_registries_section_is_one_error() {
    let e = errors(
        "registry:\n  dev: {url: \"http://127.0.0.1:5000\"}\n\
         mirrors:\n  - {from: dev/a, to: dev/b}\n",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("did you mean `registries`"), "{e}");
}

#[test]
fn host_names_are_checked() {
    let e = errors(
        "hosts:\n  \"team/build\": {endpoint: \"unix:///run/docker.sock\"}\n\
         \x20 \"a b:c\": {endpoint: \"unix:///run/docker.sock\"}\n",
    );
    assert_eq!(e.lines().count(), 2, "{e}");
    assert!(e.lines().all(|l| l.contains("is not a host name")), "{e}");
    accepted("hosts:\n  build-01.example_com: {endpoint: \"unix:///run/docker.sock\"}\n");
}

#[test]
fn addresses_that_cannot_work_are_refused_when_validating() {
    let yaml = "registries:\n\
                \x20 a: {url: \"h:abc\"}\n\
                \x20 b: {url: \"https://h:99999999\"}\n\
                \x20 c: {url: \"http://:5000\"}\n\
                \x20 d: {url: \"[::1\"}\n\
                \x20 e: {url: \"http://user:pa/ss9LEAK@127.0.0.1:5000\"}\n\
                hosts:\n\
                \x20 h1: {endpoint: \"unix://\"}\n\
                \x20 h2: {endpoint: \"tcp://\"}\n\
                \x20 h3: {endpoint: \"tcp://host:notaport\"}\n\
                \x20 h4: {endpoint: \"tcp://host:99999\"}\n\
                \x20 h5: {endpoint: \"tcp://admin:pa/ssLEAK9@127.0.0.1:1\"}\n";
    let e = errors(yaml);
    assert_eq!(e.lines().count(), 10, "{e}");
    assert!(!e.contains("LEAK"), "{e}");
    insta::assert_snapshot!(e);
    accepted(
        "registries:\n  a: {url: \"[::1]:5000\"}\n  b: {url: \"http://registry.local\"}\n\
         hosts:\n  h: {endpoint: \"tcp://10.0.0.1:2376\"}\n  i: {endpoint: \"http://[::1]:2376/\"}\n",
    );
}

#[test]
fn incomplete_auth_is_an_error_when_validating() {
    let yaml = "registries:\n\
                \x20 a: {url: \"h:1\", auth: {username: u}}\n\
                \x20 b: {url: \"h:2\", auth: {password_env: X}}\n\
                \x20 c: {url: \"h:3\", auth: {}}\n\
                \x20 d: {url: \"h:4\", auth: {username: u, password_env: \"hunter2!LEAK\"}}\n";
    let e = errors(yaml);
    assert_eq!(e.lines().count(), 4, "{e}");
    assert!(!e.contains("LEAK"), "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn two_documents_in_one_file_say_what_to_do() {
    let e = errors(&format!("{REG}---\nmirrors: []\n"));
    assert!(e.contains("one YAML document"), "{e}");
}

#[test]
fn a_shared_anchor_used_by_many_rules_is_fine() {
    let mut yaml = format!("{REG}retention:\n");
    yaml.push_str("  - {name: r0, repos: [dev/x0], delete: &d {older_than: 30d}}\n");
    for i in 1..150 {
        yaml.push_str(&format!(
            "  - {{name: r{i}, repos: [dev/x{i}], delete: *d}}\n"
        ));
    }
    assert_eq!(accepted(&yaml).retention.len(), 150);
}

#[test]
fn a_file_that_is_not_utf8_is_pointed_at_where_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        b"registries:\n  dev: {url: \"http://h\"}\n# caf\xe9\n",
    )
    .unwrap();
    let e = load(dir.path()).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].loc.line, e[0].loc.col), (3, 6), "{}", e[0]);
    assert!(e[0].message.contains("0xE9"), "{}", e[0]);
}

#[test]
fn concurrency_is_capped_as_the_schema_says() {
    let e = errors("registries:\n  a: {url: \"h:1\", concurrency: 257}\n");
    assert!(e.contains("at most 256"), "{e}");
    accepted("registries:\n  a: {url: \"h:1\", concurrency: 256}\n");
}

#[test]
fn two_hosts_on_one_engine_are_refused() {
    let e = errors(
        "hosts:\n  a: {endpoint: \"unix:///run/docker.sock\"}\n\
         \x20 b: {endpoint: \"unix:///run/docker.sock/\"}\n\
         \x20 c: {endpoint: \"unix:///run/other.sock\"}\n\
         \x20 d: {endpoint: \"unix:///run//docker.sock\"}\n\
         \x20 e: {endpoint: \"unix:///var/../run/./docker.sock\"}\n",
    );
    assert_eq!(e.lines().count(), 3, "{e}");
    assert!(
        e.contains("host `d` has the same endpoint as host `a`"),
        "{e}"
    );
    assert!(
        e.contains("host `e` has the same endpoint as host `a`"),
        "{e}"
    );
    assert!(
        e.contains("host `b` has the same endpoint as host `a`"),
        "{e}"
    );
}

#[test]
fn secrets_in_odd_places_are_refused_without_repeating_them() {
    let yaml = "registries:\n\
                \x20 a: {url: \"h:1\", auth: {username: u, password_env: \"ghp_S3cretLEAKxx0123456789abcdefABCDEF0123\"}}\n\
                hosts:\n\
                \x20 h1: {endpoint: \"unix://u:pLEAK@/tmp/x.sock\"}\n\
                \x20 h2: {endpoint: \"unix:///tmp/x.sock?p=LEAK\"}\n";
    let e = errors(yaml);
    assert_eq!(e.lines().count(), 3, "{e}");
    assert!(!e.contains("LEAK"), "{e}");
    // Ordinary names stay fine.
    accepted(
        "registries:\n  a: {url: \"h:1\", auth: {username_env: CI_REGISTRY_USER, password_env: HARBOR_ROBOT_TOKEN_2024}}\n",
    );
}

#[test]
fn invisible_characters_in_rule_names_are_refused() {
    let e = errors(&format!(
        "{REG}mirrors:\n  - {{name: \"a\\u202Eb\", from: dev/a, to: dev/b}}\n  - {{name: \"c\\u200Bd\", from: dev/c, to: dev/d}}\n"
    ));
    assert_eq!(e.lines().count(), 2, "{e}");
    assert!(e.contains("\\u{202e}") && e.contains("\\u{200b}"), "{e}");
}

/// Where the schema states a rule the loader also has, they agree: names,
/// a required `delete`, non-empty lists.
#[test]
fn schema_and_loader_agree_on_names_and_required_keys() {
    let schema = json_schema();
    let pattern = |key: &str| {
        let p = schema["properties"][key]["propertyNames"]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: no propertyNames pattern"));
        regex::Regex::new(p).unwrap()
    };
    let (regs, hosts) = (pattern("registries"), pattern("hosts"));
    for name in ["dev", "a-b_c", "a b", "a/b", "", "x.y", &"n".repeat(65)] {
        let loader_reg = name.parse::<crate::model::RegistryName>().is_ok();
        assert_eq!(regs.is_match(name), loader_reg, "registry name {name:?}");
        let loader_host = load_texts(
            Path::new("/p"),
            &[(
                Arc::from("p.yaml"),
                format!("hosts:\n  \"{name}\": {{endpoint: \"unix:///run/d.sock\"}}\n"),
            )],
        )
        .is_ok();
        assert_eq!(hosts.is_match(name), loader_host, "host name {name:?}");
    }
    let text = schema.to_string();
    assert!(text.contains("\"minItems\":1"), "non-empty lists");
    let e = errors(&format!(
        "{REG}retention:\n  - {{name: r, repos: [dev/x]}}\n"
    ));
    assert!(e.contains("delete"), "{e}");
    let retention_required = &schema["$defs"]["Retention"]["required"];
    assert!(
        retention_required
            .as_array()
            .is_some_and(|r| r.iter().any(|k| k == "delete")),
        "{retention_required}"
    );
}

/// Durations, severities, registry addresses, Docker endpoints and `null`:
/// the schema takes what the loader takes, samples both ways.
#[test]
fn schema_and_loader_agree_on_values() {
    let schema = json_schema();
    let re = |p: &serde_json::Value| regex::Regex::new(p.as_str().expect("pattern")).unwrap();
    let duration = re(&schema["$defs"]["Require"]["properties"]["min_age"]["pattern"]);
    for d in [
        "24h", " 7d ", "30s", "2w", "15m", "0s", "", "h", "24", "1.5h", "24 h", "1y", "-1d",
    ] {
        let loader = d.parse::<crate::model::Duration>().is_ok();
        assert_eq!(duration.is_match(d), loader, "duration {d:?}");
    }
    let url = re(&schema["$defs"]["Registry"]["properties"]["url"]["pattern"]);
    for u in [
        "ghcr.io",
        "http://127.0.0.1:5000",
        "https://r.example.com/",
        "[::1]:5000",
        "oci:dir",
        "oci:",
        "ftp://x",
        "http://",
        "a/b",
        "r.example.com/x",
        "h_1:5000",
    ] {
        let loader = loads(&format!("registries:\n  r: {{url: \"{u}\"}}\n"));
        // The loader refuses more (bad ports, empty labels); never less.
        if url.is_match(u) != loader {
            assert!(!loader, "url {u:?}: loader takes what the schema refuses");
        }
        if ["ghcr.io", "oci:dir", "oci:", "ftp://x", "a/b"].contains(&u) {
            assert_eq!(url.is_match(u), loader, "url {u:?}");
        }
    }
    let endpoint = re(&schema["$defs"]["Host"]["properties"]["endpoint"]["pattern"]);
    for e in [
        "unix:///run/docker.sock",
        "tcp://h:2375",
        "tcp://[::1]:2376",
        "http://h:2375",
        "tcp://h",
        "tcp://[::1]",
        "unix://",
        "unix:///s?x=1",
        "/run/docker.sock",
        "ssh://h",
    ] {
        let loader = loads(&format!("hosts:\n  h: {{endpoint: \"{e}\"}}\n"));
        assert_eq!(endpoint.is_match(e), loader, "endpoint {e:?}");
    }
    // Severity in any case, as scanners print it.
    let sev = &schema["$defs"]["Severity"]["anyOf"];
    let sev = re(&sev[1]["pattern"]);
    for s in [
        "high",
        "HIGH",
        "Critical",
        "negligible",
        "severe",
        "hi",
        "highh",
    ] {
        let loader = loads(&format!(
            "{REG}promotions: [{{name: p, from: dev/a, to: dev/b,\n\
                     \x20 require: {{vulnerabilities: {{max_severity: {s}}}}}}}]\n"
        ));
        assert_eq!(sev.is_match(s), loader, "severity {s:?}");
    }
    // `key:` with nothing after it is the key left out, for the loader and
    // for the schema; a required key must have a value.
    accepted(&format!(
        "{REG}mirrors:\n  - {{from: dev/a, to: dev/b, referrers: null, tags:, platforms: ~}}\n"
    ));
    let mirror = &schema["$defs"]["Mirror"]["properties"];
    for key in ["referrers", "tags", "platforms"] {
        let p = &mirror[key];
        let nullable = p["type"]
            .as_array()
            .is_some_and(|t| t.contains(&"null".into()))
            || p["anyOf"]
                .as_array()
                .is_some_and(|a| a.contains(&serde_json::json!({"type": "null"})));
        assert!(nullable, "Mirror.{key}: {p}");
    }
    assert!(
        !mirror["from"].to_string().contains("null"),
        "{}",
        mirror["from"]
    );
    errors(&format!("{REG}mirrors:\n  - {{from: dev/a, to:}}\n"));
}

#[test]
fn odd_addresses_are_refused_with_the_reason() {
    for (url, why) in [
        ("-.-:5000", "starts or ends with `-`"),
        ("a..b", "empty name between dots"),
        ("http://h:0", "port 0"),
    ] {
        let e = errors(&format!("registries:\n  r: {{url: \"{url}\"}}\n"));
        assert!(e.contains(why), "{url}: {e}");
    }
    let e = errors("hosts:\n  h: {endpoint: \"ssh://ci:hunter2@build-host\"}\n");
    assert!(e.contains("not supported") && e.contains("unix://"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = errors("hosts:\n  h: {endpoint: \"tcp://build-host\"}\n");
    assert!(e.contains("no port") && e.contains("2375"), "{e}");
    accepted("hosts:\n  h: {endpoint: \"tcp://build-host:2375\"}\n  i: {endpoint: \"tcp://[::1]:2375\"}\n");
}

#[test]
fn latest_in_delete_tags_is_an_error_at_its_key() {
    let yaml = format!(
        "{REG}\
         retention:\n\
         \x20 - name: a\n\
         \x20   repos: [dev/x]\n\
         \x20   delete: {{tags: {{semver: \"*\", latest: 2}}}}\n"
    );
    let e = errors(&yaml);
    assert_eq!(e.lines().count(), 1, "{e}");
    insta::assert_snapshot!(e);
    // A mirror's `latest` picks what is copied: fine there.
    assert!(loads(&format!(
        "{REG}mirrors:\n  - {{from: dev/a, to: dev/b, tags: {{semver: \"*\", latest: 2}}}}\n"
    )));
}

#[test]
fn a_retention_rule_without_repos_is_an_error() {
    let e = errors(&format!(
        "{REG}retention:\n  - {{name: a, repos: [], delete: {{older_than: 30d}}}}\n"
    ));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("p.yaml:4:22: `repos` is empty"), "{e}");
}

#[test]
fn two_names_for_one_registry_are_refused() {
    let e = errors(
        "registries:\n  a: {url: \"Reg.example.com\"}\n\
         \x20 b: {url: \"https://reg.example.com:443/\"}\n\
         \x20 c: {url: \"http://reg.example.com\"}\n\
         \x20 d: {url: \"http://127.0.0.1:5000\"}\n\
         \x20 e: {url: \"https://127.0.0.1:5000\"}\n\
         \x20 f: {url: \"oci:registry\"}\n\
         \x20 g: {url: \"oci:./x/../registry\"}\n\
         \x20 h: {url: \"oci:registry2\"}\n",
    );
    assert_eq!(e.lines().count(), 3, "{e}");
    assert!(
        e.contains("registry `b` is the same registry as `a`"),
        "{e}"
    );
    assert!(
        e.contains("registry `e` is the same registry as `d`"),
        "{e}"
    );
    assert!(
        e.contains("registry `g` is the same registry as `f`"),
        "{e}"
    );
    assert!(e.contains("give each registry one entry"), "{e}");
}

#[test]
fn a_host_keep_glob_in_engine_form_for_a_policy_registry_is_refused() {
    let e = errors(
        "registries:\n  main: {url: \"http://127.0.0.1:5791\"}\n\
         hosts:\n  h1:\n    endpoint: \"unix:///run/docker.sock\"\n\
         \x20   images:\n      prune:\n        keep: [\"127.0.0.1:5791/library/alpine:3.18*\", \
         \"main/base/*\", \"quay.io/org/*\", \"*/x/*\"]\n",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains(
            "prune keep `127.0.0.1:5791/library/alpine:3.18*` names registry `main` by its \
             address, but keep matches policy addresses for its images: write \
             `main/library/alpine:3.18*`"
        ),
        "{e}"
    );
}
