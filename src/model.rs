//! Small typed names used everywhere: digests, registry/repo/tag names, image
//! addresses, timestamps. Parsing happens once, at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest. Only `sha256` is produced; `sha512` is accepted when read.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or("")
    }
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or("")
    }
    /// `sha256:ab12cd34ef56` — the 12-hex form used in plan text.
    pub fn short(&self) -> String {
        let hex = self.hex();
        format!("{}:{}", self.algorithm(), &hex[..hex.len().min(12)])
    }
    /// The tag the OCI referrers tag schema uses for this digest (`sha256-<hex>`).
    pub fn referrers_tag(&self) -> Tag {
        Tag(format!("{}-{}", self.algorithm(), self.hex()))
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not a digest (expected sha256:<64 hex digits>)"))?;
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(format!("unsupported digest algorithm `{alg}` in `{s}`")),
        };
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "`{s}` is not a digest (expected {alg}:<{want} lowercase hex digits>)"
            ));
        }
        Ok(Digest(s.to_string()))
    }
}
impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}
impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);
        impl $name {
            pub fn as_str(&self) -> &str { &self.0 }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(s)?;
                Ok($name(s.to_string()))
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> { s.parse() }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String { v.0 }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{:?}", self.0) }
        }
    };
}

name_type!(
    /// A name from the policy's `registries:` section.
    RegistryName,
    |s| {
        if !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(())
        } else {
            Err(format!("`{s}` is not a registry name (letters, digits, `-`, `_`)"))
        }
    }
);

name_type!(
    /// A repository path inside a registry, as the distribution spec defines it.
    Repo,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                    && c.as_bytes()[0].is_ascii_alphanumeric()
                    && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
            });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a repository name (lowercase path components of a-z, 0-9, `.`, `_`, `-`)"
            ))
        }
    }
);

name_type!(
    /// An image tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
    Tag,
    |s| {
        let b = s.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        {
            Ok(())
        } else {
            Err(format!("`{s}` is not a valid tag (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"))
        }
    }
);

impl Tag {
    /// The subject digest a referrers-schema tag names (`sha256-<hex>[.sig]` → `sha256:<hex>`).
    pub fn referrer_subject(&self) -> Option<Digest> {
        if !self.is_referrer_tag() {
            return None;
        }
        let hex = self.as_str().strip_prefix("sha256-")?.split('.').next()?;
        format!("sha256:{hex}").parse().ok()
    }

    /// Tags of the OCI referrers tag schema (`sha256-<hex>`, and cosign's
    /// `sha256-<hex>.sig`/`.att`/`.sbom`) name artifacts, never images.
    pub fn is_referrer_tag(&self) -> bool {
        let s = self.as_str();
        let Some(rest) = s.strip_prefix("sha256-") else {
            return false;
        };
        let hex: &str = rest.split('.').next().unwrap_or("");
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// `REGISTRY/REPO` — one repository of one named registry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RepoAddr {
    pub registry: RegistryName,
    pub repo: Repo,
}

impl fmt::Display for RepoAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)
    }
}

impl FromStr for RepoAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (reg, repo) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not REGISTRY/REPO (a registry name, a slash, then the repository)")
        })?;
        Ok(RepoAddr {
            registry: reg.parse()?,
            repo: repo.parse()?,
        })
    }
}

/// A tag or a digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// `REGISTRY/REPO[:TAG|@DIGEST]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ImageRef {
    pub repo: RepoAddr,
    pub reference: Option<Reference>,
}

impl ImageRef {
    pub fn tagged(repo: RepoAddr, tag: Tag) -> ImageRef {
        ImageRef {
            repo,
            reference: Some(Reference::Tag(tag)),
        }
    }
    pub fn digested(repo: RepoAddr, digest: Digest) -> ImageRef {
        ImageRef {
            repo,
            reference: Some(Reference::Digest(digest)),
        }
    }
    pub fn tag(&self) -> Option<&Tag> {
        match &self.reference {
            Some(Reference::Tag(t)) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo)?;
        if let Some(r) = &self.reference {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((repo, digest)) = s.split_once('@') {
            return Ok(ImageRef {
                repo: repo.parse()?,
                reference: Some(Reference::Digest(digest.parse()?)),
            });
        }
        // A colon after the last slash separates the tag.
        let last_slash = s.rfind('/').unwrap_or(0);
        match s[last_slash..].find(':') {
            Some(i) => {
                let (repo, tag) = s.split_at(last_slash + i);
                Ok(ImageRef {
                    repo: repo.parse()?,
                    reference: Some(Reference::Tag(tag[1..].parse()?)),
                })
            }
            None => Ok(ImageRef {
                repo: s.parse()?,
                reference: None,
            }),
        }
    }
}

/// Seconds since the Unix epoch. The planner takes `now` as one of these, so it
/// never reads a clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

/// 2013-01-01T00:00:00Z. Docker was released in 2013, so no container image
/// was built before: an earlier creation time is a reproducible-build
/// placeholder (the epoch, Nix's and Jib's epoch + 1 s, Go's year 1).
pub const FIRST_IMAGE_TIME: Timestamp = Timestamp(1_356_998_400);

impl Timestamp {
    /// This time as an image's (or a scan report's) creation time: `None`
    /// for a placeholder before [`FIRST_IMAGE_TIME`], which read as an age
    /// would make the image decades old and the first thing `older_than`
    /// deletes.
    pub fn as_created(self) -> Option<Timestamp> {
        (self >= FIRST_IMAGE_TIME).then_some(self)
    }
    /// [`Timestamp::parse_rfc3339`], then [`Timestamp::as_created`].
    pub fn parse_created(s: &str) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(s).and_then(Timestamp::as_created)
    }
    pub fn now() -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Timestamp(secs)
    }
    /// Reads RFC 3339 (`2026-01-02T03:04:05Z`, fractional seconds and offsets allowed).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        // An explicit offset first: humantime's weak parser would ignore it.
        let t =
            parse_with_offset(s.trim()).or_else(|| humantime::parse_rfc3339_weak(s.trim()).ok())?;
        let secs = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        Some(Timestamp(secs))
    }
    pub fn to_rfc3339(self) -> String {
        if self.0 < 0 {
            return "1970-01-01T00:00:00Z".into();
        }
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.0 as u64),
        )
        .to_string()
    }
}

/// humantime only accepts `Z`; image configs often carry `+02:00` offsets.
fn parse_with_offset(s: &str) -> Option<std::time::SystemTime> {
    let idx = s.rfind(['+', '-']).filter(|&i| i > 16)?;
    let (base, off) = s.split_at(idx);
    let sign: i64 = if off.starts_with('-') { -1 } else { 1 };
    let (h, m) = off[1..].split_once(':')?;
    let off_secs = sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60);
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    if off_secs >= 0 {
        t.checked_sub(std::time::Duration::from_secs(off_secs as u64))
    } else {
        t.checked_add(std::time::Duration::from_secs((-off_secs) as u64))
    }
}

/// A policy duration (`30s`, `15m`, `24h`, `7d`, `2w`), in seconds; at most
/// [`Duration::MAX`], so it always fits the `i64` seconds of a [`Timestamp`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Duration(pub u64);

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a duration: use a number and a unit, like 30s, 15m, 24h, 7d or 2w"
            )
        };
        let too_long = || {
            format!(
                "`{s}` is too long: give at most {}d (100 years)",
                Duration::MAX.0 / 86_400
            )
        };
        let s2 = s.trim();
        let split = s2.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = s2.split_at(split);
        let mult: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        // Only digits here: a number that does not parse is too big for u64.
        let n: u64 = num.parse().map_err(|_| too_long())?;
        match n.checked_mul(mult) {
            Some(secs) if secs <= Duration::MAX.0 => Ok(Duration(secs)),
            _ => Err(too_long()),
        }
    }
}

impl Duration {
    /// The longest duration a policy may give: 36500 days (100 years).
    pub const MAX: Duration = Duration(36_500 * 86_400);

    /// The seconds as an `i64`, for arithmetic with [`Timestamp`]s
    /// (saturating, though a parsed duration is never over [`Duration::MAX`]).
    pub fn secs(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Human form for plan text: `96d`, `5h`, `12m`.
    pub fn human(secs: i64) -> String {
        let s = secs.max(0);
        if s >= 86_400 {
            format!("{}d", s / 86_400)
        } else if s >= 3600 {
            format!("{}h", s / 3600)
        } else if s >= 60 {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_before_docker_are_placeholders() {
        for placeholder in [
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:01Z", // Nix, Jib
            "0001-01-01T00:00:00Z", // Go's zero time
            "2012-12-31T23:59:59Z",
        ] {
            assert_eq!(Timestamp::parse_created(placeholder), None, "{placeholder}");
        }
        assert_eq!(Timestamp(1).as_created(), None);
        assert_eq!(
            Timestamp::parse_created("2013-01-01T00:00:00Z"),
            Some(FIRST_IMAGE_TIME)
        );
        assert!(Timestamp::parse_created("2026-01-02T03:04:05Z").is_some());
    }

    #[test]
    fn image_refs_parse_and_print() {
        let r: ImageRef = "dev/team/api:1.2.3".parse().unwrap();
        assert_eq!(r.repo.registry.as_str(), "dev");
        assert_eq!(r.repo.repo.as_str(), "team/api");
        assert_eq!(r.tag().unwrap().as_str(), "1.2.3");
        assert_eq!(r.to_string(), "dev/team/api:1.2.3");
        let d = format!("prod/x@sha256:{}", "a".repeat(64));
        assert_eq!(d.parse::<ImageRef>().unwrap().to_string(), d);
        assert!("nodomain".parse::<ImageRef>().is_err());
        assert!("dev/Team/api".parse::<ImageRef>().is_err());
        assert!("dev/api@sha256:abc".parse::<ImageRef>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!("30s".parse::<Duration>().unwrap().0, 30);
        assert_eq!("2w".parse::<Duration>().unwrap().0, 1_209_600);
        assert!("7".parse::<Duration>().is_err());
        assert!("7y".parse::<Duration>().is_err());
        assert!("d".parse::<Duration>().is_err());
        assert_eq!("36500d".parse::<Duration>().unwrap(), Duration::MAX);
        // Too long, and never wrapped around to something short.
        for s in [
            "36501d",
            "5215w",
            "106751991167301d",
            "9223372036854775808s",
            "18446744073709551615s",
            "99999999999999999999999999s",
            "307445734561825861m",
        ] {
            let e = s.parse::<Duration>().unwrap_err();
            assert!(e.contains("too long"), "{s}: {e}");
        }
    }

    #[test]
    fn timestamps() {
        let a = Timestamp::parse_rfc3339("2026-01-02T03:04:05Z").unwrap();
        let b = Timestamp::parse_rfc3339("2026-01-02T05:04:05.123+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn referrer_tags() {
        let d = Digest::sha256_of(b"x");
        assert!(d.referrers_tag().is_referrer_tag());
        assert!(Tag::from_str(&format!("{}.sig", d.referrers_tag()))
            .unwrap()
            .is_referrer_tag());
        assert!(!Tag::from_str("sha256-abc").unwrap().is_referrer_tag());
        assert!(!Tag::from_str("latest").unwrap().is_referrer_tag());
    }
}
