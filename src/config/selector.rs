//! Tag selectors and the one total ordering of tags.
//!
//! Ordering (used by `latest: N`, `newest:` retags and retention's `newest`):
//! 1. tags that read as versions rank above tags that do not;
//! 2. versions by semver precedence (`1.2.3-rc.1` < `1.2.3` < `1.10.0`);
//!    a leading `v` is allowed and `MAJOR` / `MAJOR.MINOR` read as `.0`
//!    (`3.18` is `3.18.0`), so registries' short tags take part;
//! 3. other tags by creation time when known (unknown counts as oldest);
//! 4. ties broken by the tag text, so the order never depends on listing order.
//!
//! Referrer tags (`sha256-<hex>`, `sha256-<hex>.sig`) name artifacts, not
//! images: no selector ever matches them.

use std::cmp::Ordering;

use globset::GlobMatcher;
use regex::Regex;
use semver::{Version, VersionReq};

use crate::model::{Tag, Timestamp};

/// Reads a tag as a version, leniently as described in the module docs.
pub fn parse_version(tag: &str) -> Option<Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    let (rest, build) = match t.split_once('+') {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut nums = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        nums[i] = p.parse().ok()?;
    }
    let mut v = Version::new(nums[0], nums[1], nums[2]);
    if let Some(pre) = pre {
        v.pre = semver::Prerelease::new(pre).ok()?;
    }
    if let Some(b) = build {
        v.build = semver::BuildMetadata::new(b).ok()?;
    }
    Some(v)
}

/// The total order of tags: `Greater` means "newer / higher".
pub fn compare_tags(a: (&Tag, Option<Timestamp>), b: (&Tag, Option<Timestamp>)) -> Ordering {
    SortKey::of(a.0, a.1).cmp(&SortKey::of(b.0, b.1))
}

/// A tag with its version read once, ordered as [`compare_tags`] says (sorts
/// of thousands of tags would otherwise parse each tag at every comparison).
struct SortKey<'a> {
    version: Option<Version>,
    created: Option<Timestamp>,
    tag: &'a Tag,
}

impl<'a> SortKey<'a> {
    fn of(tag: &'a Tag, created: Option<Timestamp>) -> SortKey<'a> {
        SortKey {
            version: parse_version(tag.as_str()),
            created,
            tag,
        }
    }
}

impl Ord for SortKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.version, &other.version) {
            (Some(x), Some(y)) => x.cmp_precedence(y),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => self.created.cmp(&other.created),
        }
        .then_with(|| self.tag.as_str().cmp(other.tag.as_str()))
    }
}

impl PartialOrd for SortKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortKey<'_> {}

/// A compiled `tags:` selector.
#[derive(Clone, Debug, Default)]
pub struct TagSelector {
    /// `tags: [a, b]` — exactly these.
    pub exact: Option<Vec<Tag>>,
    pub semver: Option<VersionReq>,
    pub regex: Option<Regex>,
    pub glob: Option<GlobMatcher>,
    pub exclude: Vec<Regex>,
    pub latest: Option<usize>,
}

impl TagSelector {
    pub fn all() -> TagSelector {
        TagSelector::default()
    }

    /// Whether ordering may need creation times: `latest` over tags that are
    /// not all versions (a `semver` condition admits only versions).
    pub fn needs_created(&self) -> bool {
        self.latest.is_some() && self.semver.is_none()
    }

    /// Does the tag pass every condition other than `latest`?
    pub fn matches(&self, tag: &Tag) -> bool {
        if tag.is_referrer_tag() {
            return false;
        }
        let s = tag.as_str();
        if let Some(list) = &self.exact {
            if !list.contains(tag) {
                return false;
            }
        }
        if let Some(req) = &self.semver {
            match parse_version(s) {
                Some(v) if req.matches(&v) => {}
                _ => return false,
            }
        }
        if let Some(re) = &self.regex {
            if !re.is_match(s) {
                return false;
            }
        }
        if let Some(g) = &self.glob {
            if !g.is_match(s) {
                return false;
            }
        }
        !self.exclude.iter().any(|re| re.is_match(s))
    }

    /// The selected tags, highest first per [`compare_tags`]. `created` gives a
    /// tag's creation time when known.
    pub fn select<'a>(
        &self,
        tags: impl IntoIterator<Item = (&'a Tag, Option<Timestamp>)>,
    ) -> Vec<Tag> {
        let mut hits: Vec<SortKey<'a>> = tags
            .into_iter()
            .filter(|(t, _)| self.matches(t))
            .map(|(t, c)| SortKey::of(t, c))
            .collect();
        hits.sort_by(|a, b| b.cmp(a));
        hits.dedup_by(|a, b| a.tag == b.tag);
        if let Some(n) = self.latest {
            hits.truncate(n);
        }
        hits.into_iter().map(|k| k.tag.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Tag {
        s.parse().unwrap()
    }

    fn sorted(tags: &[&str]) -> Vec<String> {
        let tags: Vec<Tag> = tags.iter().map(|s| t(s)).collect();
        TagSelector::all()
            .select(tags.iter().map(|t| (t, None)))
            .into_iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn versions_read_leniently() {
        assert_eq!(parse_version("v1.2.3"), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_version("1.2"), Some(Version::new(1, 2, 0)));
        assert_eq!(parse_version("3"), Some(Version::new(3, 0, 0)));
        assert_eq!(parse_version("1.2.3-rc.1").unwrap().pre.as_str(), "rc.1");
        assert_eq!(parse_version("latest"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
        assert_eq!(parse_version("01.2.3"), None);
        assert_eq!(parse_version("1..2"), None);
        assert_eq!(parse_version("v"), None);
    }

    #[test]
    fn total_order_is_precedence_then_text() {
        assert_eq!(
            sorted(&[
                "latest",
                "1.2.3-rc.1",
                "1.10.0",
                "1.2.3",
                "v1.2.3",
                "1.2",
                "edge",
                "1.9.9"
            ]),
            [
                "1.10.0",
                "1.9.9",
                "v1.2.3",
                "1.2.3",
                "1.2.3-rc.1",
                "1.2",
                "latest",
                "edge"
            ]
        );
    }

    #[test]
    fn non_versions_order_by_created_then_text() {
        let (a, b, c) = (t("alpha"), t("beta"), t("gamma"));
        let got = TagSelector::all().select([
            (&a, Some(Timestamp(30))),
            (&b, Some(Timestamp(10))),
            (&c, None),
        ]);
        assert_eq!(got, [a, b, c]);
    }

    #[test]
    fn referrer_tags_never_match() {
        let d = crate::model::Digest::sha256_of(b"img");
        let r = d.referrers_tag();
        assert!(!TagSelector::all().matches(&r));
        let sig = t(&format!("{r}.sig"));
        assert!(!TagSelector::all().matches(&sig));
    }

    #[test]
    fn all_conditions_must_hold() {
        let sel = TagSelector {
            semver: Some(VersionReq::parse(">=3.18").unwrap()),
            exclude: vec![Regex::new("-rc").unwrap()],
            ..Default::default()
        };
        assert!(sel.matches(&t("3.18")));
        assert!(sel.matches(&t("3.19.1")));
        assert!(!sel.matches(&t("3.17")));
        assert!(!sel.matches(&t("3.20.0-rc1")));
        assert!(!sel.matches(&t("latest")));
        let latest2 = TagSelector {
            latest: Some(2),
            regex: Some(Regex::new("^1\\.").unwrap()),
            ..Default::default()
        };
        let tags = [t("1.0.0"), t("1.2.0"), t("1.1.0"), t("2.0.0")];
        assert_eq!(
            latest2.select(tags.iter().map(|t| (t, None))),
            [t("1.2.0"), t("1.1.0")]
        );
    }
}
