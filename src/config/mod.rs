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
        write!(f, "{}: {}", self.loc, self.message)
    }
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
    let mut texts = Vec::new();
    let mut diags = Vec::new();
    for path in &files {
        let shown: Arc<str> =
            Arc::from(path.strip_prefix(dir).unwrap_or(path).display().to_string());
        match std::fs::read_to_string(path) {
            Ok(t) => texts.push((shown, t)),
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
            if dup(&mut cx, &mut host_locs, "host", &name, &loc) {
                policy.hosts.insert(name, host);
            }
        }
        for m in f.mirrors {
            if let Some(n) = &m.name {
                if !dup(&mut cx, &mut rule_locs, "rule", n, &m.loc) {
                    continue;
                }
            }
            policy.mirrors.push(m);
        }
        for p in f.promotions {
            if dup(&mut cx, &mut rule_locs, "rule", &p.name, &p.loc) {
                policy.promotions.push(p);
            }
        }
        for r in f.retags {
            if let Some(n) = &r.name {
                if !dup(&mut cx, &mut rule_locs, "rule", n, &r.loc) {
                    continue;
                }
            }
            policy.retags.push(r);
        }
        for r in f.retention {
            if dup(&mut cx, &mut rule_locs, "rule", &r.name, &r.loc) {
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

/// The JSON Schema of a policy file.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Policy);
    serde_json::to_value(&schema).unwrap_or_default()
}
