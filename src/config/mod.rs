//! Policy files as written → validated desired state (`Policy`).
//!
//! Every `*.yaml`/`*.yml` below the policy directory is read in path order
//! (hidden files and folders skipped); sections merge. All problems in all
//! files are collected and reported together as `file:line:col: message`.

pub mod decode;
pub mod node;
pub mod selector;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::observe::is_invisible;

pub use selector::TagSelector;
pub use types::*;

use node::Loc;

/// A located problem in the policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages quote what was written: control characters in it must not
        // start a new line (a forged CI workflow command) or paint the terminal.
        write!(
            f,
            "{}: {}",
            self.loc,
            crate::observe::printable(&self.message)
        )
    }
}

/// Why a rule name cannot be used, if it cannot: names head plan sections
/// and PR comments, so they must be one line of printable text.
fn bad_rule_name(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("a rule `name` must not be empty".to_string());
    }
    if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Some(format!(
            "rule name `{}` holds a control or invisible character (newline, tab, escape, \
             bidirectional override, zero-width space…): use one line of printable text",
            crate::observe::escaped(name, |c| c.is_control() || is_invisible(c))
        ));
    }
    None
}

/// Checks a decoded rule's name (`rule`); the rule when it is usable. A
/// broken rule's name still counts, so a second definition is reported.
fn named<T>(
    cx: &mut decode::Cx,
    rule: &mut impl FnMut(&mut decode::Cx, &str, &Loc) -> bool,
    d: decode::Decoded<T>,
    name_of: impl Fn(&T) -> (String, &Loc),
) -> Option<T> {
    match d {
        decode::Decoded::Rule(r) => {
            let (name, loc) = name_of(&r);
            rule(cx, &name, loc).then_some(r)
        }
        decode::Decoded::Named(name, loc) => {
            rule(cx, &name, &loc);
            None
        }
    }
}

/// Why a host name cannot be used, if it cannot: it is the first part of a
/// host change's target (`host:NAME/IMAGE`).
fn bad_host_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    (!ok).then(|| {
        format!(
            "`{}` is not a host name (up to 64 letters, digits, `-`, `_`, `.`)",
            crate::observe::printable(name)
        )
    })
}

/// The desired state: the merged, validated policy.
pub type Desired = Policy;

/// Lists the policy files below `dir`, sorted by path.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: cannot read directory: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if ft.is_dir() {
                walk(&path, out)?;
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Loads and validates every policy file below `dir`.
pub fn load(dir: &Path) -> Result<Policy, Vec<Diagnostic>> {
    let files = match policy_files(dir) {
        Ok(f) => f,
        Err(e) => {
            return Err(vec![Diagnostic {
                loc: Loc {
                    file: Arc::from(dir.display().to_string()),
                    line: 1,
                    col: 1,
                },
                message: e,
            }])
        }
    };
    if files.is_empty() {
        // As Terraform does: an empty folder is far more likely a wrong `-C`
        // (or `--path`) than a policy that wants nothing.
        return Err(vec![Diagnostic {
            loc: Loc {
                file: Arc::from(dir.display().to_string()),
                line: 1,
                col: 1,
            },
            message: "no policy files here (*.yaml or *.yml, hidden ones skipped): is `-C` \
                      (or `--path`) right?"
                .to_string(),
        }]);
    }
    let mut texts = Vec::new();
    let mut diags = Vec::new();
    for path in &files {
        let shown: Arc<str> =
            Arc::from(path.strip_prefix(dir).unwrap_or(path).display().to_string());
        match std::fs::read(path) {
            Ok(bytes) => match utf8(bytes) {
                Ok(t) => texts.push((shown, t)),
                Err((line, col, message)) => diags.push(Diagnostic {
                    loc: Loc {
                        file: shown,
                        line,
                        col,
                    },
                    message,
                }),
            },
            Err(e) => diags.push(Diagnostic {
                loc: Loc {
                    file: shown,
                    line: 1,
                    col: 1,
                },
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match load_texts(dir, &texts) {
        Ok(p) if diags.is_empty() => Ok(p),
        Ok(_) => Err(diags),
        Err(more) => {
            diags.extend(more);
            diags.sort();
            Err(diags)
        }
    }
}

/// A policy file's text, or where it stops being UTF-8 (line, column) and why.
fn utf8(bytes: Vec<u8>) -> Result<String, (u64, u64, String)> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err((
            1,
            1,
            "the file is UTF-16: save it as UTF-8 (YAML policy files are read as UTF-8)".into(),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + good.iter().filter(|b| **b == b'\n').count() as u64;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = 1 + String::from_utf8_lossy(&good[start..]).chars().count() as u64;
        let byte = e.as_bytes().get(good.len()).copied().unwrap_or(0);
        (
            line,
            col,
            format!(
                "byte 0x{byte:02X} is not UTF-8: save the file as UTF-8 \
                 (it looks like another encoding, such as Latin-1)"
            ),
        )
    })
}

/// Loads policy from in-memory `(file name, text)` pairs; `root` resolves `oci:` paths.
pub fn load_texts(root: &Path, files: &[(Arc<str>, String)]) -> Result<Policy, Vec<Diagnostic>> {
    let mut cx = decode::Cx::default();
    let mut decoded = Vec::new();
    for (name, text) in files {
        match node::parse(name, text) {
            Ok(n) => decoded.push(decode::file(&n, &mut cx, root)),
            Err((loc, message)) => cx.err(&loc, message),
        }
    }
    let mut policy = Policy {
        root: root.to_path_buf(),
        ..Default::default()
    };
    let mut reg_locs: BTreeMap<String, Loc> = BTreeMap::new();
    let mut host_locs: BTreeMap<String, Loc> = BTreeMap::new();
    let mut rule_locs: BTreeMap<String, Loc> = BTreeMap::new();
    let mut policies_loc: Option<Loc> = None;
    let mut uses = Vec::new();
    let mut all_registry_names: Vec<String> = Vec::new();
    let mut registries_unreadable = false;
    let dup = |cx: &mut decode::Cx,
               seen: &mut BTreeMap<String, Loc>,
               what: &str,
               name: &str,
               loc: &Loc|
     -> bool {
        if let Some(first) = seen.get(name) {
            cx.err(
                loc,
                format!("{what} `{name}` is defined twice: here and at {first}"),
            );
            false
        } else {
            seen.insert(name.to_string(), loc.clone());
            true
        }
    };
    for f in decoded {
        for (name, loc, reg) in f.registries {
            match name.parse::<crate::model::RegistryName>() {
                Ok(rn) => {
                    if dup(&mut cx, &mut reg_locs, "registry", &name, &loc) {
                        policy.registries.insert(rn, reg);
                    }
                }
                Err(e) => cx.err(&loc, e),
            }
        }
        for (name, loc, host) in f.hosts {
            if let Some(e) = bad_host_name(&name) {
                cx.err(&loc, e);
                continue;
            }
            if dup(&mut cx, &mut host_locs, "host", &name, &loc) {
                policy.hosts.insert(name, host);
            }
        }
        // Every rule's name, given or default (`mirror:FROM->TO`,
        // `retag:TAG`), is unique: plans group changes under it.
        let mut rule = |cx: &mut decode::Cx, name: &str, loc: &Loc| -> bool {
            if let Some(e) = bad_rule_name(name) {
                cx.err(loc, e);
                return false;
            }
            dup(cx, &mut rule_locs, "rule", name, loc)
        };
        for m in f.mirrors {
            if let Some(m) = named(&mut cx, &mut rule, m, |m| (m.rule_name(), &m.loc)) {
                policy.mirrors.push(m);
            }
        }
        for p in f.promotions {
            if let Some(p) = named(&mut cx, &mut rule, p, |p| (p.name.clone(), &p.loc)) {
                policy.promotions.push(p);
            }
        }
        for r in f.retags {
            if let Some(r) = named(&mut cx, &mut rule, r, |r| (r.rule_name(), &r.loc)) {
                policy.retags.push(r);
            }
        }
        for r in f.retention {
            if let Some(r) = named(&mut cx, &mut rule, r, |r| (r.name.clone(), &r.loc)) {
                policy.retention.push(r);
            }
        }
        if let Some(p) = f.policies {
            let loc = p.loc.clone().unwrap_or(Loc {
                file: Arc::from(""),
                line: 1,
                col: 1,
            });
            match &policies_loc {
                Some(first) => cx.err(
                    &loc,
                    format!("`policies` is defined twice: here and at {first}"),
                ),
                None => {
                    policies_loc = Some(loc);
                    policy.policies = Some(p);
                }
            }
        }
        uses.extend(f.uses.addrs);
        all_registry_names.extend(f.registry_names);
        registries_unreadable |= f.registries_unreadable;
    }
    // With a `registries:` section that could not be read (its error is
    // reported), which names exist is unknown: no address is "undefined".
    if registries_unreadable {
        uses.clear();
    }
    for u in uses {
        if !all_registry_names.iter().any(|n| n == u.registry.as_str()) {
            let known = decode::names(&policy.registries);
            let hint = match decode::did_you_mean(u.registry.as_str(), known.iter().copied()) {
                Some(c) => format!(" (did you mean `{c}`?)"),
                None if known.is_empty() => {
                    " (no registries are defined: add one under `registries:`)".to_string()
                }
                None => format!(" (defined: {})", known.join(", ")),
            };
            cx.err(
                &u.loc,
                format!(
                    "registry `{}` is not defined in `registries:`{hint}",
                    u.registry
                ),
            );
        }
    }
    // Two hosts on one engine would undo each other's work on every apply
    // (one pulls what the other prunes): one engine, one entry.
    let mut engines: BTreeMap<String, (&str, &Loc)> = BTreeMap::new();
    for (name, h) in &policy.hosts {
        let e = h.endpoint.trim_end_matches('/');
        let e = e
            .strip_prefix("https://")
            .map_or(e.to_string(), |r| format!("tcp://{r}"));
        // Host names are case-insensitive; socket paths are not, but
        // `//`, `.` and `x/..` in one name the same socket.
        let e = match e.strip_prefix("unix://") {
            Some(path) => format!("unix://{}", lexical(Path::new(path)).display()),
            None => e.to_ascii_lowercase(),
        };
        match engines.get(&e) {
            Some((first, at)) => cx.err(
                &h.loc,
                format!(
                    "host `{name}` has the same endpoint as host `{first}` (at {at}): \
                     give each engine one entry"
                ),
            ),
            None => {
                engines.insert(e, (name, &h.loc));
            }
        }
    }
    // `keep` is matched against policy addresses (`prod/base/*`) when a
    // policy registry has the image: a glob written with that registry's
    // engine name (`127.0.0.1:5000/base/*`) would never match, and protect
    // nothing while looking as if it did.
    let addrs = crate::host::address::Addresses::from_policy(&policy);
    for (name, h) in &policy.hosts {
        let Some(prune) = &h.images.prune else {
            continue;
        };
        for g in &prune.keep {
            let Some((first, rest)) = g.split_once('/') else {
                continue;
            };
            if first.contains(['*', '?', '[', '{']) || !first.contains(['.', ':']) {
                continue;
            }
            if let Some(a) = addrs.from_engine(&format!("{first}/x")) {
                cx.err(
                    &h.loc,
                    format!(
                        "host `{name}`: prune keep `{g}` names registry `{}` by its address, \
                         but keep matches policy addresses for its images: write `{}/{rest}`",
                        a.repo.registry, a.repo.registry
                    ),
                );
            }
        }
    }
    // Two names for one registry would hide what the planner guards by
    // name: retention on one name would not see that a mirror, promotion
    // or retag under the other needs an image, and two rules writing one
    // tag through different names would not be reported as a conflict.
    let mut places: BTreeMap<String, (&str, Option<&Loc>)> = BTreeMap::new();
    for (name, r) in &policy.registries {
        let key = registry_place(&r.url);
        match places.get(&key) {
            Some((first, at)) => {
                let at = at.map(|l| format!(" (at {l})")).unwrap_or_default();
                let Some(loc) = &r.loc else { continue };
                cx.err(
                    loc,
                    format!(
                        "registry `{name}` is the same registry as `{first}`{at} ({}): \
                         give each registry one entry (one with push credentials also reads), \
                         so retention and conflict checks see every rule that uses it",
                        r.url
                    ),
                );
            }
            None => {
                places.insert(key, (name.as_str(), r.loc.as_ref()));
            }
        }
    }
    // Two retags on one tag would fight; say so where the second one is.
    let mut retag_targets: BTreeMap<String, Loc> = BTreeMap::new();
    for r in &policy.retags {
        let key = r.tag.to_string();
        if let Some(first) = retag_targets.get(&key) {
            cx.err(
                &r.loc,
                format!("tag `{key}` is set by two retags: here and at {first}"),
            );
        } else {
            retag_targets.insert(key, r.loc.clone());
        }
    }
    if cx.diags.is_empty() {
        Ok(policy)
    } else {
        let mut d = cx.diags;
        d.sort();
        d.dedup();
        Err(d)
    }
}

/// Where a registry is, so that two spellings of one place compare equal:
/// host and port as hosts map them ([`host_and_port`]:
/// `Registry.example.com` = `https://registry.example.com:443`), plain and
/// TLS on one host and port taken as one server; a layout path with `.` and
/// `x/..` taken out.
///
/// [`host_and_port`]: crate::host::address::host_and_port
fn registry_place(url: &Endpoint) -> String {
    match (url, crate::host::address::host_and_port(url)) {
        (_, Some((host, port))) => format!("net:{host}:{port}"),
        (Endpoint::OciLayout(p), None) => format!("oci:{}", lexical(p).display()),
        (_, None) => url.to_string(),
    }
}

/// `p` with `.`, `x/..` and doubled separators taken out, as written (no
/// symlinks followed: the path need not exist where the policy is checked).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(
                    out.components().next_back(),
                    Some(std::path::Component::Normal(_))
                ) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The JSON Schema of a policy file.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Policy);
    let mut v = serde_json::to_value(&schema).unwrap_or_default();
    optional_may_be_null(&mut v);
    if let Some(sev) = v.pointer_mut("/$defs/Severity") {
        *sev = severity_schema();
    }
    v
}

/// The loader reads a `null` (`key:` with nothing after it) as the key left
/// out; the schema says the same of every key that is not required.
fn optional_may_be_null(v: &mut serde_json::Value) {
    use serde_json::{json, Value};
    match v {
        Value::Object(o) => {
            let required: Vec<String> = o
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(Value::Object(props)) = o.get_mut("properties") {
                for (k, p) in props.iter_mut() {
                    if required.contains(k) {
                        continue;
                    }
                    match p.get_mut("type") {
                        Some(Value::String(t)) if t != "null" => {
                            let t = t.clone();
                            p["type"] = json!([t, "null"]);
                        }
                        Some(Value::Array(ts)) => {
                            if !ts.contains(&json!("null")) {
                                ts.push(json!("null"));
                            }
                        }
                        Some(_) => {}
                        None => {
                            let nullable = p
                                .get("anyOf")
                                .and_then(Value::as_array)
                                .is_some_and(|a| a.contains(&json!({"type": "null"})));
                            if !nullable {
                                let mut inner = std::mem::take(p);
                                let mut outer = serde_json::Map::new();
                                // Annotations stay where editors (and the
                                // defaults test) look for them.
                                for k in ["description", "default"] {
                                    if let Some(a) = inner.as_object_mut().and_then(|i| i.remove(k))
                                    {
                                        outer.insert(k.to_string(), a);
                                    }
                                }
                                outer.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                                *p = Value::Object(outer);
                            }
                        }
                    }
                }
            }
            for (_, x) in o.iter_mut() {
                optional_may_be_null(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(optional_may_be_null),
        _ => {}
    }
}

/// Severities as the loader takes them: any case (`HIGH`, as Trivy prints
/// it, included); the enum is what editors offer.
fn severity_schema() -> serde_json::Value {
    let names = ["negligible", "low", "medium", "high", "critical"];
    let any_case: Vec<String> = names
        .iter()
        .map(|n| {
            n.chars()
                .map(|c| format!("[{}{}]", c, c.to_ascii_uppercase()))
                .collect()
        })
        .collect();
    serde_json::json!({
        "description": "A severity, in any case.",
        "anyOf": [
            {"enum": names},
            {"type": "string", "pattern": format!("^({})$", any_case.join("|"))}
        ]
    })
}
