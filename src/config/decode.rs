//! YAML nodes → typed policy, collecting every problem with its location
//! instead of stopping at the first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use globset::{Glob, GlobMatcher};
use regex::Regex;
use semver::VersionReq;

use super::node::{Loc, Node, Value};
use super::selector::TagSelector;
use super::types::*;
use super::Diagnostic;
use crate::model::{Duration, ImageRef, RegistryName, RepoAddr, Tag};

/// Collects diagnostics while decoding.
#[derive(Default)]
pub struct Cx {
    pub diags: Vec<Diagnostic>,
}

impl Cx {
    pub fn err(&mut self, loc: &Loc, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            loc: loc.clone(),
            message: message.into(),
        });
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(word, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// A key read from a map: not there, there but not valid (already reported),
/// or a valid value.
#[derive(Debug)]
pub enum Got<T> {
    Absent,
    Invalid,
    Value(T),
}

impl<T> Got<T> {
    pub fn value(self) -> Option<T> {
        match self {
            Got::Value(v) => Some(v),
            _ => None,
        }
    }
    /// The key was written (with a value, valid or not).
    pub fn given(&self) -> bool {
        !matches!(self, Got::Absent)
    }
}

/// Reads the keys of one YAML map, remembering which were asked for, so that
/// `finish` can report the rest as unknown.
pub struct Fields<'n> {
    what: &'static str,
    entries: Vec<(&'n Node, &'n Node, bool)>,
    known: Vec<&'static str>,
    pub loc: &'n Loc,
}

impl<'n> Fields<'n> {
    pub fn new(node: &'n Node, what: &'static str, cx: &mut Cx) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(m) => {
                let mut entries: Vec<(&Node, &Node, bool)> = Vec::new();
                for (k, v) in m {
                    if let Some(first) = first_key(entries.iter().map(|e| e.0), k) {
                        cx.err(&k.loc, twice(k, what, first));
                        continue;
                    }
                    entries.push((k, v, false));
                }
                Some(Fields {
                    what,
                    entries,
                    known: Vec::new(),
                    loc: &node.loc,
                })
            }
            _ => {
                cx.err(
                    &node.loc,
                    format!("{what} must be a map of keys, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// The value of `key`, if present (a YAML `null` counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.entry(key)
            .map(|(_, v)| v)
            .filter(|n| n.value != Value::Null)
    }

    /// `key` and its value as written, `null` included; marks the key as read.
    fn entry(&mut self, key: &'static str) -> Option<(&'n Node, &'n Node)> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        for e in self.entries.iter_mut() {
            if e.0.as_scalar_text().as_deref() == Some(key) {
                e.2 = true;
                return Some((e.0, e.1));
            }
        }
        None
    }

    /// `key` read with `f`: absent, invalid (`f` reported a problem in it),
    /// or a valid value. Checks that a key is *missing* must only fire on
    /// `Absent`: an invalid value has its own error already.
    pub fn take<T>(
        &mut self,
        key: &'static str,
        cx: &mut Cx,
        f: impl FnOnce(&'n Node, &mut Cx) -> Option<T>,
    ) -> Got<T> {
        match self.get(key) {
            None => Got::Absent,
            Some(n) => {
                let errors = cx.diags.len();
                match f(n, cx) {
                    Some(v) if cx.diags.len() == errors => Got::Value(v),
                    _ => Got::Invalid,
                }
            }
        }
    }

    pub fn opt<T>(
        &mut self,
        key: &'static str,
        cx: &mut Cx,
        f: impl FnOnce(&'n Node, &mut Cx) -> Option<T>,
    ) -> Option<T> {
        self.take(key, cx, f).value()
    }

    /// A required key: reports it missing at the map's position, unless a
    /// misspelling of it is present (then the unknown-key error says it all).
    /// A key written with no value says so at the key.
    pub fn req<T>(
        &mut self,
        key: &'static str,
        cx: &mut Cx,
        f: impl FnOnce(&'n Node, &mut Cx) -> Option<T>,
    ) -> Option<T> {
        let Some((k, v)) = self.entry(key) else {
            if !self.near(key) {
                cx.err(
                    self.loc,
                    format!("{} is missing required key `{key}`", self.what),
                );
            }
            return None;
        };
        if v.value == Value::Null {
            cx.err(
                &k.loc,
                format!("`{key}` has no value: give one (it is required)"),
            );
            return None;
        }
        self.take(key, cx, f).value()
    }

    /// Is there an unused key that looks like a misspelling of `key`?
    pub fn near(&self, key: &str) -> bool {
        self.entries
            .iter()
            .filter(|e| !e.2)
            .filter_map(|e| e.0.as_scalar_text())
            .any(|k| did_you_mean(&k, [key]).is_some())
    }

    /// Reports keys nobody asked for.
    pub fn finish(self, cx: &mut Cx) {
        for (k, _, used) in &self.entries {
            if !used {
                let name = key_text(k);
                let hint = suggest(&name, self.known.iter().copied());
                let hint = if hint.is_empty() {
                    format!(" (expected one of: {})", self.known.join(", "))
                } else {
                    hint
                };
                cx.err(
                    &k.loc,
                    format!("unknown key `{name}` in {}{hint}", self.what),
                );
            }
        }
    }
}

/// An earlier key written the same as `k` (keys that are not scalars never match).
fn first_key<'a>(earlier: impl IntoIterator<Item = &'a Node>, k: &Node) -> Option<&'a Node> {
    let text = k.as_scalar_text()?;
    earlier
        .into_iter()
        .find(|e| e.as_scalar_text().as_deref() == Some(text.as_str()))
}

/// The message for a key given a second time (`k`) in one mapping.
fn twice(k: &Node, what: &str, first: &Node) -> String {
    format!(
        "key `{}` is given twice in {what}; keep one (the first is at {})",
        key_text(k),
        first.loc
    )
}

fn key_text(k: &Node) -> String {
    k.as_scalar_text()
        .unwrap_or_else(|| format!("<{}>", k.kind()))
}

// ---- scalars --------------------------------------------------------------

pub fn string(n: &Node, cx: &mut Cx) -> Option<String> {
    match (&n.value, n.text.as_deref()) {
        (Value::Str(s), _) => Some(s.clone()),
        // `7` is the text "7"; but `1.10` (read as 1.1) or `0x1F` (31) would
        // not mean what was written, so ask for quotes, quoting what was written.
        (Value::Int(i), Some(t)) if t == i.to_string() => Some(t.to_string()),
        (Value::Int(i), None) => Some(i.to_string()),
        (Value::Int(i), Some(t)) => {
            cx.err(&n.loc, quote_it(t, &format!("the number {i}")));
            None
        }
        (Value::Float(f), Some(t)) => {
            cx.err(&n.loc, quote_it(t, &format!("the number {f}")));
            None
        }
        (Value::Float(f), None) => {
            cx.err(
                &n.loc,
                format!("`{f}` was read as a number: put it in quotes"),
            );
            None
        }
        (Value::Bool(_), Some(t)) => {
            cx.err(&n.loc, quote_it(t, "a boolean"));
            None
        }
        _ => {
            cx.err(&n.loc, format!("expected a string, found {}", n.kind()));
            None
        }
    }
}

/// YAML read `written` as something other than text.
fn quote_it(written: &str, read_as: &str) -> String {
    format!(
        "YAML reads `{written}` as {read_as}: put it in quotes, `\"{written}\"`, to mean the text"
    )
}

pub fn boolean(n: &Node, cx: &mut Cx) -> Option<bool> {
    match &n.value {
        Value::Bool(b) => Some(*b),
        _ => {
            cx.err(
                &n.loc,
                format!("expected true or false, found {}", n.kind()),
            );
            None
        }
    }
}

pub fn uint(n: &Node, cx: &mut Cx) -> Option<u32> {
    match &n.value {
        Value::Int(i) if *i >= 0 && *i <= u32::MAX as i64 => Some(*i as u32),
        _ => {
            cx.err(
                &n.loc,
                format!("expected a whole number of 0 or more, found {}", n.kind()),
            );
            None
        }
    }
}

fn positive(n: &Node, cx: &mut Cx) -> Option<u32> {
    let v = uint(n, cx)?;
    if v == 0 {
        cx.err(&n.loc, "must be at least 1");
        return None;
    }
    Some(v)
}

fn number(n: &Node, cx: &mut Cx) -> Option<f64> {
    match &n.value {
        Value::Int(i) if *i > 0 => Some(*i as f64),
        Value::Float(f) if *f > 0.0 && f.is_finite() => Some(*f),
        _ => {
            cx.err(
                &n.loc,
                format!("expected a positive number, found {}", n.kind()),
            );
            None
        }
    }
}

fn parsed<T: FromStr<Err = String>>(n: &Node, cx: &mut Cx) -> Option<T> {
    let s = string(n, cx)?;
    match s.parse() {
        Ok(v) => Some(v),
        Err(e) => {
            cx.err(&n.loc, e);
            None
        }
    }
}

pub fn duration(n: &Node, cx: &mut Cx) -> Option<Duration> {
    parsed(n, cx)
}

fn list<T>(
    n: &Node,
    cx: &mut Cx,
    mut f: impl FnMut(&Node, &mut Cx) -> Option<T>,
) -> Option<Vec<T>> {
    match &n.value {
        Value::Seq(items) => {
            let mut ok = true;
            let mut out = Vec::new();
            for i in items {
                match f(i, cx) {
                    Some(v) => out.push(v),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        _ => {
            cx.err(&n.loc, format!("expected a list, found {}", n.kind()));
            None
        }
    }
}

fn regex(n: &Node, cx: &mut Cx) -> Option<Regex> {
    let s = string(n, cx)?;
    match Regex::new(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            let text = e.to_string();
            let last = text.lines().last().unwrap_or("").trim();
            let first = last.strip_prefix("error: ").unwrap_or(last).to_string();
            cx.err(&n.loc, format!("invalid regex `{s}`: {first}"));
            None
        }
    }
}

fn glob(n: &Node, cx: &mut Cx) -> Option<GlobMatcher> {
    let s = string(n, cx)?;
    match Glob::new(&s) {
        Ok(g) => Some(g.compile_matcher()),
        Err(e) => {
            cx.err(&n.loc, format!("invalid glob `{s}`: {}", e.kind()));
            None
        }
    }
}

/// An address check: the registry part must be a defined registry. Checked
/// after all files are read, so the set of names is complete.
pub struct AddrUse {
    pub registry: RegistryName,
    pub loc: Loc,
}

/// Decoding state shared by one file: the addresses seen, for the later registry check.
#[derive(Default)]
pub struct Uses {
    pub addrs: Vec<AddrUse>,
}

fn repo_addr(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<RepoAddr> {
    let s = string(n, cx)?;
    if s.contains([':', '@']) {
        cx.err(
            &n.loc,
            format!("`{s}` must be REGISTRY/REPO without a tag or digest"),
        );
        return None;
    }
    match s.parse::<RepoAddr>() {
        Ok(a) => {
            uses.addrs.push(AddrUse {
                registry: a.registry.clone(),
                loc: n.loc.clone(),
            });
            Some(a)
        }
        Err(e) => {
            cx.err(&n.loc, e);
            None
        }
    }
}

fn image_ref(n: &Node, cx: &mut Cx, uses: &mut Uses, need_ref: bool) -> Option<ImageRef> {
    let s = string(n, cx)?;
    match s.parse::<ImageRef>() {
        Ok(r) => {
            if need_ref && r.reference.is_none() {
                cx.err(
                    &n.loc,
                    format!("`{s}` needs a tag or digest (REGISTRY/REPO:TAG or @sha256:…)"),
                );
                return None;
            }
            uses.addrs.push(AddrUse {
                registry: r.repo.registry.clone(),
                loc: n.loc.clone(),
            });
            Some(r)
        }
        Err(e) => {
            cx.err(&n.loc, e);
            None
        }
    }
}

fn tagged_ref(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<ImageRef> {
    let r = image_ref(n, cx, uses, true)?;
    if r.tag().is_none() {
        cx.err(
            &n.loc,
            format!("`{r}` must name a tag (REGISTRY/REPO:TAG), not a digest"),
        );
        return None;
    }
    Some(r)
}

// ---- sections -------------------------------------------------------------

pub fn selector(n: &Node, cx: &mut Cx) -> Option<TagSelector> {
    if let Value::Seq(_) = n.value {
        let tags = list(n, cx, parsed::<Tag>)?;
        return Some(TagSelector {
            exact: Some(tags),
            ..Default::default()
        });
    }
    let mut f = Fields::new(n, "tag selector `tags`", cx)?;
    let semver = f.opt("semver", cx, |n, cx| {
        let s = string(n, cx)?;
        let s2 = s.trim().to_string();
        match VersionReq::parse(&s2) {
            Ok(r) => Some(r),
            Err(e) => {
                cx.err(&n.loc, format!("invalid semver range `{s}`: {e}"));
                None
            }
        }
    });
    let regex_ = f.opt("regex", cx, regex);
    let glob_ = f.opt("glob", cx, glob);
    let exclude = f.opt("exclude", cx, |n, cx| {
        if let Value::Seq(_) = n.value {
            list(n, cx, regex)
        } else {
            regex(n, cx).map(|r| vec![r])
        }
    });
    let latest = f.opt("latest", cx, positive);
    f.finish(cx);
    Some(TagSelector {
        exact: None,
        semver,
        regex: regex_,
        glob: glob_,
        exclude: exclude.unwrap_or_default(),
        latest: latest.map(|n| n as usize),
    })
}

/// Does the URL carry `USER[:PASSWORD]@` before its host?
/// Whether an address may carry `user:password@`. Any `@` counts, not only
/// one inside the authority as URL parsers read it: `http://user:pa/ss@host`
/// holds a password too, and must not be echoed in an error. A `unix://`
/// socket path may hold `@` (`/run/user@1000/…`).
fn has_userinfo(url: &str) -> bool {
    match url.strip_prefix("unix://") {
        // `unix://user:pw@/path`: something before the path.
        Some(rest) => rest.split('/').next().is_some_and(|a| a.contains('@')),
        None => url.contains('@'),
    }
}

/// Why `host[:port]` (brackets for IPv6) is not one, if it is not: the URL
/// parser's reason, or an empty host or port, which it accepts.
fn bad_authority(authority: &str) -> Option<String> {
    let url = match reqwest::Url::parse(&format!("http://{authority}/")) {
        Ok(url) => url,
        Err(e) => return Some(e.to_string()),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Some("no host".to_string());
    }
    if authority.ends_with(':') {
        return Some("an empty port".to_string());
    }
    if url.port() == Some(0) {
        return Some("port 0 is not a port".to_string());
    }
    if let Some(name) = url.domain() {
        // What DNS (and an image reference) takes: no empty part between
        // dots, none starting or ending with `-`.
        if name.split('.').any(str::is_empty) {
            return Some("an empty name between dots".to_string());
        }
        if name
            .split('.')
            .any(|l| l.starts_with('-') || l.ends_with('-'))
        {
            return Some("a name part that starts or ends with `-`".to_string());
        }
    }
    None
}

/// Whether `authority` (host[:port], IPv6 in brackets) names a port.
fn has_port(authority: &str) -> bool {
    authority.rsplit_once(':').is_some_and(|(host, port)| {
        !port.contains(']') && (!host.contains('[') || host.ends_with(']'))
    })
}

fn endpoint(n: &Node, cx: &mut Cx, root: &std::path::Path) -> Option<Endpoint> {
    let s = string(n, cx)?;
    let s = s.trim();
    if let Some(path) = s.strip_prefix("oci:") {
        if path.is_empty() {
            cx.err(&n.loc, "`oci:` needs a path, like `oci:registry`");
            return None;
        }
        return Some(Endpoint::OciLayout(root.join(path)));
    }
    if has_userinfo(s) {
        // Never repeat it: it may hold a password.
        cx.err(
            &n.loc,
            "a registry `url` must not hold a user name or password (`USER:PASSWORD@`): \
             remove it and give credentials under `auth:` \
             (`username_env` or `username`, with `password_env` or `password_file`)",
        );
        return None;
    }
    let (scheme, rest) = match s.split_once("://") {
        Some(("http", r)) => ("http", r),
        Some(("https", r)) => ("https", r),
        Some((other, _)) => {
            cx.err(&n.loc, format!("unsupported scheme `{other}://` (use http://, https://, a bare host or oci:PATH)"));
            return None;
        }
        None => ("https", s),
    };
    let host = rest.trim_end_matches('/');
    let valid = !host.is_empty()
        && !host.contains('/')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    let why = if valid { bad_authority(host) } else { None };
    if !valid || why.is_some() {
        let why = why.map(|w| format!(": {w}")).unwrap_or_default();
        cx.err(&n.loc, format!("`{s}` is not a registry address{why} (expected host[:port], optionally with http:// or https://)"));
        return None;
    }
    Some(if scheme == "http" {
        Endpoint::Http(host.to_string())
    } else {
        Endpoint::Https(host.to_string())
    })
}

fn auth(n: &Node, cx: &mut Cx) -> Option<Auth> {
    let mut f = Fields::new(n, "`auth`", cx)?;
    if let Some(p) = f.get("password") {
        cx.err(
            &p.loc,
            "a literal password is never accepted: use `password_env` or `password_file`",
        );
    }
    let a = Auth {
        username_env: f.opt("username_env", cx, string),
        username: f.opt("username", cx, string),
        password_env: f.opt("password_env", cx, string),
        password_file: f.opt("password_file", cx, string).map(PathBuf::from),
    };
    if a.username_env.is_some() && a.username.is_some() {
        cx.err(f.loc, "give `username` or `username_env`, not both");
    }
    if a.password_env.is_some() && a.password_file.is_some() {
        cx.err(f.loc, "give `password_env` or `password_file`, not both");
    }
    let has_user = a.username.is_some() || a.username_env.is_some();
    let has_password = a.password_env.is_some() || a.password_file.is_some();
    if has_user && !has_password {
        cx.err(
            f.loc,
            "a user name needs a password: add `password_env` or `password_file`",
        );
    }
    if has_password && !has_user {
        cx.err(
            f.loc,
            "a password needs a user name: add `username` or `username_env`",
        );
    }
    if !has_user && !has_password {
        cx.err(
            f.loc,
            "`auth` is empty: give `username` (or `username_env`) with `password_env` \
             (or `password_file`), or leave `auth` out to use the docker config",
        );
    }
    // A value that is not a variable name is likely the secret itself,
    // pasted in the wrong key: say so without repeating it.
    for (key, var) in [
        ("username_env", &a.username_env),
        ("password_env", &a.password_env),
    ] {
        if let Some(v) = var {
            // Tokens (`ghp_…`, `glpat-…`) are also letters, digits and `_`:
            // a long name mixing lower case and digits reads as one.
            let token_like = v.len() >= 20
                && v.bytes().any(|b| b.is_ascii_lowercase())
                && v.bytes().any(|b| b.is_ascii_digit());
            let ok = !v.is_empty()
                && !token_like
                && !v.starts_with(|c: char| c.is_ascii_digit())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                let loc = f
                    .get(key)
                    .map(|n| n.loc.clone())
                    .unwrap_or_else(|| f.loc.clone());
                cx.err(
                    &loc,
                    format!(
                        "`{key}` takes the name of an environment variable (letters, digits, \
                         `_`), like `REGISTRY_PASSWORD`; this value is not one (not repeated \
                         here, in case it is the secret itself)"
                    ),
                );
            }
        }
    }
    f.finish(cx);
    Some(a)
}

fn registry(n: &Node, cx: &mut Cx, root: &std::path::Path) -> Option<Registry> {
    let mut f = Fields::new(n, "registry", cx)?;
    let url = f.req("url", cx, |n, cx| endpoint(n, cx, root));
    let auth = f.opt("auth", cx, auth);
    let concurrency = f.opt("concurrency", cx, |n, cx| {
        let v = positive(n, cx)?;
        if v > 256 {
            // As the schema says: beyond this a registry sees a flood, not speed.
            cx.err(
                &n.loc,
                format!("`concurrency` {v} is too high: at most 256"),
            );
            return None;
        }
        Some(v)
    });
    let rate = f.opt("rate", cx, |n, cx| {
        let r = number(n, cx)?;
        if r < 0.001 {
            cx.err(
                &n.loc,
                format!("`rate` {r} is too small: at least 0.001 requests per second"),
            );
            return None;
        }
        Some(r)
    });
    f.finish(cx);
    Some(Registry {
        url: url?,
        auth,
        concurrency,
        rate,
        loc: Some(n.loc.clone()),
    })
}

fn platforms(n: &Node, cx: &mut Cx) -> Option<Platforms> {
    if let Value::Str(s) = &n.value {
        if s == "all" {
            return Some(Platforms::All);
        }
    }
    let items = list(n, cx, |i, cx| {
        let s = string(i, cx)?;
        let parts: Vec<&str> = s.split('/').collect();
        if (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) {
            Some(s)
        } else {
            cx.err(
                &i.loc,
                format!("`{s}` is not a platform (os/arch or os/arch/variant, like linux/amd64)"),
            );
            None
        }
    });
    if items.as_ref().is_some_and(|v| v.is_empty()) {
        cx.err(&n.loc, "`platforms` needs at least one entry, or `all`");
        return None;
    }
    items.map(Platforms::Only)
}

fn mirror(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<Mirror> {
    let mut f = Fields::new(n, "mirror", cx)?;
    let name = f.opt("name", cx, string);
    let from = f.req("from", cx, |n, cx| repo_addr(n, cx, uses));
    let to = f.req("to", cx, |n, cx| repo_addr(n, cx, uses));
    let tags = f.opt("tags", cx, selector);
    let platforms = f.opt("platforms", cx, platforms);
    let referrers = f.opt("referrers", cx, boolean);
    let prune = f.opt("prune", cx, boolean);
    f.finish(cx);
    let (from, to) = (from?, to?);
    if from == to {
        cx.err(&n.loc, format!("mirror from `{from}` to itself"));
        return None;
    }
    Some(Mirror {
        name,
        from,
        to,
        tags: tags.unwrap_or_default(),
        platforms: platforms.unwrap_or_default(),
        referrers: referrers.unwrap_or(Mirror::DEFAULT_REFERRERS),
        prune: prune.unwrap_or(false),
        loc: n.loc.clone(),
    })
}

fn severity(n: &Node, cx: &mut Cx) -> Option<Severity> {
    let s = string(n, cx)?;
    let all = [
        ("negligible", Severity::Negligible),
        ("low", Severity::Low),
        ("medium", Severity::Medium),
        ("high", Severity::High),
        ("critical", Severity::Critical),
    ];
    match all.iter().find(|(k, _)| k.eq_ignore_ascii_case(&s)) {
        Some((_, v)) => Some(*v),
        None => {
            cx.err(
                &n.loc,
                format!(
                    "unknown severity `{s}` (negligible, low, medium, high, critical){}",
                    suggest(&s, all.iter().map(|(k, _)| *k))
                ),
            );
            None
        }
    }
}

fn vuln_gate(n: &Node, cx: &mut Cx) -> Option<VulnGate> {
    let mut f = Fields::new(n, "`vulnerabilities`", cx)?;
    let max_severity = f.req("max_severity", cx, severity);
    let scanners = f.opt("scanners", cx, positive);
    let ignore_unfixed = f.opt("ignore_unfixed", cx, boolean);
    let max_report_age = f.opt("max_report_age", cx, duration);
    let artifact_types = f.opt("artifact_types", cx, |n, cx| {
        let v = list(n, cx, string)?;
        if v.is_empty() {
            cx.err(
                &n.loc,
                "`artifact_types` must name at least one artifact type",
            );
            return None;
        }
        Some(v)
    });
    f.finish(cx);
    Some(VulnGate {
        max_severity: max_severity?,
        scanners,
        ignore_unfixed,
        max_report_age,
        artifact_types,
    })
}

fn require(n: &Node, cx: &mut Cx) -> Option<Require> {
    let mut f = Fields::new(n, "`require`", cx)?;
    let min_age = f.opt("min_age", cx, duration);
    let referrers = f.opt("referrers", cx, |n, cx| list(n, cx, string));
    let vulnerabilities = f.opt("vulnerabilities", cx, vuln_gate);
    f.finish(cx);
    Some(Require {
        min_age,
        referrers: referrers.unwrap_or_default(),
        vulnerabilities,
    })
}

fn promotion(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<Promotion> {
    let mut f = Fields::new(n, "promotion", cx)?;
    let name = f.req("name", cx, string);
    let from = f.req("from", cx, |n, cx| repo_addr(n, cx, uses));
    let to = f.req("to", cx, |n, cx| repo_addr(n, cx, uses));
    let tags = f.opt("tags", cx, selector);
    let require = f.opt("require", cx, require);
    let overwrite = f.opt("overwrite", cx, boolean);
    f.finish(cx);
    let (from, to) = (from?, to?);
    if from == to {
        cx.err(
            &n.loc,
            format!("promotion from `{from}` to itself: `to` must be another repo"),
        );
        return None;
    }
    Some(Promotion {
        name: name?,
        from,
        to,
        tags: tags.unwrap_or_default(),
        require: require.unwrap_or_default(),
        overwrite: overwrite.unwrap_or(false),
        loc: n.loc.clone(),
    })
}

fn retag(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<Retag> {
    let mut f = Fields::new(n, "retag", cx)?;
    let name = f.opt("name", cx, string);
    let tag = f.req("tag", cx, |n, cx| tagged_ref(n, cx, uses));
    let from = f.take("from", cx, |n, cx| image_ref(n, cx, uses, true));
    let newest = f.take("newest", cx, |n, cx| {
        let mut g = Fields::new(n, "`newest`", cx)?;
        let repo = g.req("repo", cx, |n, cx| repo_addr(n, cx, uses));
        let tags = g.opt("tags", cx, selector);
        g.finish(cx);
        Some(RetagSource::Newest {
            repo: repo?,
            tags: tags.unwrap_or_default(),
        })
    });
    let loc = f.loc.clone();
    let misspelt = f.near("from") || f.near("newest");
    f.finish(cx);
    let source = match (from, newest) {
        (Got::Value(r), Got::Absent) => RetagSource::From(r),
        (Got::Absent, Got::Value(s)) => s,
        (a, b) if a.given() && b.given() => {
            cx.err(&loc, "a retag takes `from` or `newest`, not both");
            return None;
        }
        // The invalid one has its own error.
        (Got::Invalid, _) | (_, Got::Invalid) => return None,
        (_, _) if misspelt => return None,
        (_, _) => {
            cx.err(
                &loc,
                "a retag needs `from` (an image) or `newest` (a repo and tag selector)",
            );
            return None;
        }
    };
    let tag = tag?;
    if matches!(&source, RetagSource::From(r) if *r == tag) {
        cx.err(
            &loc,
            format!("retag of `{tag}` from itself: `from` must name another tag or a digest"),
        );
        return None;
    }
    Some(Retag {
        name,
        tag,
        source,
        loc,
    })
}

fn repo_glob(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<RepoGlob> {
    let s = string(n, cx)?;
    let Some((reg, pattern)) = s.split_once('/') else {
        cx.err(
            &n.loc,
            format!("`{s}` must be REGISTRY/REPO-GLOB, like `dev/team/*`"),
        );
        return None;
    };
    let registry: RegistryName = match reg.parse() {
        Ok(r) => r,
        Err(e) => {
            cx.err(&n.loc, e);
            return None;
        }
    };
    let literal = !pattern.contains(['*', '?', '[', '{']);
    if literal {
        if let Err(e) = pattern.parse::<crate::model::Repo>() {
            cx.err(&n.loc, e);
            return None;
        }
    }
    // `*` stays within one path segment (`dev/team/*` is not `dev/team/a/b`); `**` crosses.
    let matcher = match globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
    {
        Ok(g) => g.compile_matcher(),
        Err(e) => {
            cx.err(&n.loc, format!("invalid glob `{pattern}`: {}", e.kind()));
            return None;
        }
    };
    uses.addrs.push(AddrUse {
        registry: registry.clone(),
        loc: n.loc.clone(),
    });
    Some(RepoGlob {
        registry,
        pattern: pattern.to_string(),
        matcher,
    })
}

fn retention(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<Retention> {
    let mut f = Fields::new(n, "retention rule", cx)?;
    let name = f.req("name", cx, string);
    let repos = f.req("repos", cx, |n, cx| {
        let repos = list(n, cx, |i, cx| repo_glob(i, cx, uses))?;
        if repos.is_empty() {
            cx.err(
                &n.loc,
                "`repos` is empty: name at least one `REGISTRY/REPO` (globs allowed) for the rule to clean",
            );
            return None;
        }
        Some(repos)
    });
    let delete = f.take("delete", cx, |n, cx| {
        let mut g = Fields::new(n, "`delete`", cx)?;
        let d = DeleteWhen {
            older_than: g.opt("older_than", cx, duration),
            tags: g.opt("tags", cx, |n, cx| {
                let s = selector(n, cx)?;
                // `latest: N` picks N to keep, never N to delete: a rule
                // reading it as a filter would delete every match.
                if s.latest.is_some() {
                    let at = match &n.value {
                        Value::Map(entries) => entries
                            .iter()
                            .find(|(k, _)| k.as_scalar_text().as_deref() == Some("latest"))
                            .map_or(&n.loc, |(k, _)| &k.loc),
                        _ => &n.loc,
                    };
                    cx.err(
                        at,
                        "`latest` has no meaning in `delete.tags` (it would not limit what is deleted): keep the newest with `keep: {newest: N}`",
                    );
                    return None;
                }
                Some(s)
            }),
            untagged_referrers: g.opt("untagged_referrers", cx, boolean),
        };
        g.finish(cx);
        Some(d)
    });
    let keep = f.opt("keep", cx, |n, cx| {
        let mut g = Fields::new(n, "`keep`", cx)?;
        let k = Keep {
            tags: g
                .opt("tags", cx, |n, cx| list(n, cx, glob))
                .unwrap_or_default(),
            newest: g.opt("newest", cx, uint),
            younger_than: g.opt("younger_than", cx, duration),
        };
        g.finish(cx);
        Some(k)
    });
    let min_keep = f.opt("min_keep", cx, uint);
    let max_deletes = f.opt("max_deletes", cx, uint);
    f.finish(cx);
    // An invalid `delete` (or one with an invalid condition) has its own error:
    // it is not also a missing one.
    let delete = match delete {
        Got::Invalid => None,
        Got::Absent => Some(DeleteWhen::default()),
        Got::Value(d) => Some(d),
    };
    if let Some(d) = &delete {
        if d.older_than.is_none() && d.tags.is_none() && d.untagged_referrers != Some(true) {
            cx.err(&n.loc, "retention rule needs a `delete` condition (`older_than` and/or `tags`): without one it would delete everything not kept");
        }
    }
    Some(Retention {
        name: name?,
        repos: repos?,
        delete: delete?,
        keep: keep.unwrap_or_default(),
        min_keep: min_keep.unwrap_or(Retention::DEFAULT_MIN_KEEP),
        max_deletes,
        loc: n.loc.clone(),
    })
}

fn host(n: &Node, cx: &mut Cx, uses: &mut Uses, root: &std::path::Path) -> Option<Host> {
    let mut f = Fields::new(n, "host", cx)?;
    let endpoint = f.req("endpoint", cx, |n, cx| {
        let s = string(n, cx)?;
        if s.starts_with("ssh://") {
            // Not repeated: `ssh://user:pw@host` is possible.
            cx.err(
                &n.loc,
                "`ssh://` endpoints are not supported: regimen talks to the Docker Engine API over \
                 unix:// or tcp:// (with `tls`); forward the engine's socket \
                 (`ssh -NL /tmp/docker.sock:/var/run/docker.sock HOST`) and use \
                 unix:///tmp/docker.sock",
            );
            return None;
        }
        if has_userinfo(&s) {
            // Never repeat it: it may hold a password.
            cx.err(
                &n.loc,
                "a Docker endpoint must not hold a user name or password (`USER:PASSWORD@`): \
                 remove it (a tcp:// engine authenticates with `tls` client certificates)",
            );
            return None;
        }
        if let Some(path) = s.strip_prefix("unix://") {
            if path.contains(['?', '#']) {
                // Never repeated: a query may carry a token.
                cx.err(
                    &n.loc,
                    "a `unix://` endpoint is a socket path: remove the `?…`/`#…` part",
                );
                return None;
            }
            if path.is_empty() {
                cx.err(
                    &n.loc,
                    "`unix://` needs a socket path, like unix:///var/run/docker.sock",
                );
                return None;
            }
            Some(s)
        } else if let Some(rest) = ["tcp://", "http://", "https://"]
            .iter()
            .find_map(|p| s.strip_prefix(p))
        {
            let authority = rest.trim_end_matches('/');
            let why = if authority.is_empty() || authority.contains('/') {
                Some("expected host:port".to_string())
            } else if s.starts_with("tcp://") && !has_port(authority) {
                // Docker's own default depends on TLS (2375 or 2376); a
                // guess would be a silent wrong engine or a hang.
                Some("no port (the Docker daemon listens on 2375, or 2376 with TLS)".to_string())
            } else {
                bad_authority(authority)
            };
            match why {
                Some(why) => {
                    cx.err(
                        &n.loc,
                        format!("`{s}` is not a Docker endpoint: {why} (like tcp://host:2376)"),
                    );
                    None
                }
                None => Some(s),
            }
        } else {
            cx.err(
                &n.loc,
                format!("`{s}` is not a Docker endpoint (unix:///path/to.sock or tcp://host:port)"),
            );
            None
        }
    });
    let tls = f.take("tls", cx, |n, cx| {
        let mut g = Fields::new(n, "`tls`", cx)?;
        let ca = g.req("ca", cx, string);
        let cert = g.req("cert", cx, string);
        let key = g.req("key", cx, string);
        g.finish(cx);
        Some(HostTls {
            ca: root.join(ca?),
            cert: root.join(cert?),
            key: root.join(key?),
        })
    });
    let images = f.opt("images", cx, |n, cx| {
        let mut g = Fields::new(n, "`images`", cx)?;
        let present = g.opt("present", cx, |n, cx| {
            list(n, cx, |i, cx| tagged_ref(i, cx, uses))
        });
        let prune = g.opt("prune", cx, |n, cx| {
            let mut h = Fields::new(n, "`prune`", cx)?;
            let p = HostPrune {
                older_than: h.opt("older_than", cx, duration),
                keep: h
                    .opt("keep", cx, |n, cx| {
                        list(n, cx, |i, cx| {
                            let s = string(i, cx)?;
                            match Glob::new(&s) {
                                Ok(_) => Some(s),
                                Err(e) => {
                                    cx.err(&i.loc, format!("invalid glob `{s}`: {}", e.kind()));
                                    None
                                }
                            }
                        })
                    })
                    .unwrap_or_default(),
            };
            h.finish(cx);
            Some(p)
        });
        g.finish(cx);
        Some(HostImages {
            present: present.unwrap_or_default(),
            prune,
        })
    });
    let containers = f.opt("containers", cx, |n, cx| {
        let mut g = Fields::new(n, "`containers`", cx)?;
        let c = HostContainers {
            max_age: g.opt("max_age", cx, duration),
        };
        g.finish(cx);
        Some(c)
    });
    f.finish(cx);
    // TLS belongs to TCP endpoints; saying it where it cannot apply (or
    // leaving it out of https://) is a mistake worth catching here.
    // (An invalid `tls` has its own error: it is not also a missing one.)
    if let Some(e) = &endpoint {
        if tls.given() && e.starts_with("unix://") {
            cx.err(
                &n.loc,
                "`tls` applies to tcp:// endpoints; a unix:// socket has no TLS (remove `tls`)",
            );
        } else if matches!(tls, Got::Absent) && e.starts_with("https://") {
            cx.err(
                &n.loc,
                format!("`{e}` needs `tls: {{ca, cert, key}}` (or use tcp:// for plain TCP)"),
            );
        }
    }
    Some(Host {
        endpoint: endpoint?,
        tls: tls.value(),
        images: images.unwrap_or_default(),
        containers: containers.unwrap_or_default(),
        loc: n.loc.clone(),
    })
}

fn policies(n: &Node, cx: &mut Cx, uses: &mut Uses) -> Option<Policies> {
    let mut f = Fields::new(n, "`policies`", cx)?;
    let registries = f.opt("registries", cx, |n, cx| {
        list(n, cx, |i, cx| {
            let r: RegistryName = parsed(i, cx)?;
            uses.addrs.push(AddrUse {
                registry: r.clone(),
                loc: i.loc.clone(),
            });
            Some(r)
        })
    });
    let base_images = f.opt("base_images", cx, |n, cx| {
        list(n, cx, |i, cx| {
            let g = string(i, cx)?;
            match globset::Glob::new(&g) {
                Ok(_) => Some(g),
                Err(e) => {
                    cx.err(&i.loc, format!("`{g}` is not a valid glob: {}", e.kind()));
                    None
                }
            }
        })
    });
    let max_age = f.opt("max_age", cx, duration);
    let on_violation = f.opt("on_violation", cx, |n, cx| {
        let s = string(n, cx)?;
        match s.as_str() {
            "warn" => Some(OnViolation::Warn),
            "fail" => Some(OnViolation::Fail),
            "enforce" => Some(OnViolation::Enforce),
            _ => {
                cx.err(
                    &n.loc,
                    format!(
                        "`on_violation` is warn, fail or enforce, not `{s}`{}",
                        suggest(&s, ["warn", "fail", "enforce"])
                    ),
                );
                None
            }
        }
    });
    let owner_label = f.opt("owner_label", cx, string);
    f.finish(cx);
    Some(Policies {
        registries,
        base_images,
        max_age,
        on_violation: on_violation.unwrap_or_default(),
        owner_label,
        loc: Some(n.loc.clone()),
    })
}

/// Named entries of a map section, keeping each name's location.
fn named_map<T>(
    n: &Node,
    what: &'static str,
    cx: &mut Cx,
    mut f: impl FnMut(&Node, &mut Cx) -> Option<T>,
) -> Vec<(String, Loc, T)> {
    let Value::Map(m) = &n.value else {
        cx.err(
            &n.loc,
            format!("`{what}` must be a map of names, found {}", n.kind()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen: Vec<&Node> = Vec::new();
    for (k, v) in m {
        let Some(name) = k.as_scalar_text() else {
            cx.err(&k.loc, format!("names in `{what}` must be strings"));
            continue;
        };
        if let Some(first) = first_key(seen.iter().copied(), k) {
            cx.err(&k.loc, twice(k, &format!("`{what}`"), first));
            continue;
        }
        seen.push(k);
        if let Some(t) = f(v, cx) {
            out.push((name, k.loc.clone(), t));
        }
    }
    out
}

/// A rule as decoded: usable, or (its errors already reported) only the
/// `name` it gives, so that a name given twice is reported even where one
/// of the definitions has other errors.
pub enum Decoded<T> {
    Rule(T),
    Named(String, Loc),
}

/// The `name` a rule item gives, if it is readable (its own errors are
/// reported by the rule's decoder, not here).
fn given_name(n: &Node) -> Option<String> {
    let Value::Map(m) = &n.value else {
        return None;
    };
    let (_, v) = m
        .iter()
        .find(|(k, _)| k.as_scalar_text().as_deref() == Some("name"))?;
    string(v, &mut Cx::default())
}

/// Decodes each rule of a section, keeping the names of broken ones.
fn rules<T>(
    items: &[Node],
    cx: &mut Cx,
    uses: &mut Uses,
    decode: fn(&Node, &mut Cx, &mut Uses) -> Option<T>,
) -> Vec<Decoded<T>> {
    items
        .iter()
        .filter_map(|i| match decode(i, cx, uses) {
            Some(r) => Some(Decoded::Rule(r)),
            None => given_name(i).map(|name| Decoded::Named(name, i.loc.clone())),
        })
        .collect()
}

/// One file's decoded sections, before merging.
#[derive(Default)]
pub struct FilePolicy {
    pub registries: Vec<(String, Loc, Registry)>,
    pub mirrors: Vec<Decoded<Mirror>>,
    pub promotions: Vec<Decoded<Promotion>>,
    pub retags: Vec<Decoded<Retag>>,
    pub retention: Vec<Decoded<Retention>>,
    pub hosts: Vec<(String, Loc, Host)>,
    pub policies: Option<Policies>,
    pub uses: Uses,
    /// Every registry name written, even where its settings had errors, so
    /// one bad `url` does not also make every address using it "undefined".
    pub registry_names: Vec<String>,
    /// `registries:` was written but is not a map of names: which names
    /// exist is unknown, so no address is reported as using an undefined one.
    pub registries_unreadable: bool,
}

pub const SECTIONS: [&str; 7] = [
    "registries",
    "mirrors",
    "promotions",
    "retags",
    "retention",
    "hosts",
    "policies",
];

pub fn file(n: &Node, cx: &mut Cx, root: &std::path::Path) -> FilePolicy {
    let mut out = FilePolicy::default();
    if n.value == Value::Null {
        return out;
    }
    let Some(mut f) = Fields::new(n, "a policy file", cx) else {
        return out;
    };
    let mut uses = Uses::default();
    // A misspelt `registries:` (reported as an unknown key) holds names this
    // file meant to define: no address is then "undefined" on top of that.
    if let Value::Map(m) = &n.value {
        out.registries_unreadable = m.iter().any(|(k, _)| {
            k.as_scalar_text()
                .is_some_and(|k| k != "registries" && did_you_mean(&k, ["registries"]).is_some())
        });
    }
    if let Some(n) = f.get("registries") {
        if let Value::Map(m) = &n.value {
            out.registry_names = m.iter().filter_map(|(k, _)| k.as_scalar_text()).collect();
        } else {
            out.registries_unreadable = true;
        }
        out.registries = named_map(n, "registries", cx, |v, cx| registry(v, cx, root));
    }
    let seq = |n: &Node, what: &str, cx: &mut Cx| -> Vec<Node> {
        match &n.value {
            Value::Seq(items) => items.clone(),
            _ => {
                cx.err(
                    &n.loc,
                    format!("`{what}` must be a list, found {}", n.kind()),
                );
                Vec::new()
            }
        }
    };
    if let Some(n) = f.get("mirrors") {
        out.mirrors = rules(&seq(n, "mirrors", cx), cx, &mut uses, mirror);
    }
    if let Some(n) = f.get("promotions") {
        out.promotions = rules(&seq(n, "promotions", cx), cx, &mut uses, promotion);
    }
    if let Some(n) = f.get("retags") {
        out.retags = rules(&seq(n, "retags", cx), cx, &mut uses, retag);
    }
    if let Some(n) = f.get("retention") {
        out.retention = rules(&seq(n, "retention", cx), cx, &mut uses, retention);
    }
    if let Some(n) = f.get("hosts") {
        out.hosts = named_map(n, "hosts", cx, |v, cx| host(v, cx, &mut uses, root));
    }
    if let Some(n) = f.get("policies") {
        out.policies = policies(n, cx, &mut uses);
    }
    f.finish(cx);
    out.uses = uses;
    out
}

/// Sorted registry names, for messages.
pub fn names<V>(m: &BTreeMap<RegistryName, V>) -> Vec<&str> {
    m.keys().map(|k| k.as_str()).collect()
}
