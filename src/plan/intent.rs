//! Intents ("this tag should point at that digest, for that rule") and their
//! resolution into changes and conflicts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::policy::Checker;
use super::types::{Action, Blocked, Change, Plan, Violation};
use crate::config::{Desired, RetagSource};
use crate::model::{Digest, Duration, ImageRef, RepoAddr, Tag, Timestamp};
use crate::observe::{Fact, ImageInfo, Observed, RepoState};

/// What observe must read: the repositories the policy names, and for which
/// of them creation times of every tag (selectors that order by `created`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub repos: BTreeSet<RepoAddr>,
    pub created_of_all_tags: BTreeSet<RepoAddr>,
    /// Digests named in the policy, whose presence must be checked.
    pub digests: BTreeSet<(RepoAddr, Digest)>,
    /// Registries whose catalog is needed (retention globs with wildcards).
    pub catalogs: BTreeSet<crate::model::RegistryName>,
}

pub fn needs(d: &Desired) -> Needs {
    let mut n = Needs::default();
    for m in &d.mirrors {
        n.repos.insert(m.from.clone());
        n.repos.insert(m.to.clone());
        if m.tags.needs_created() {
            n.created_of_all_tags.insert(m.from.clone());
        }
    }
    for p in &d.promotions {
        n.repos.insert(p.from.clone());
        n.repos.insert(p.to.clone());
        if p.tags.needs_created() {
            n.created_of_all_tags.insert(p.from.clone());
        }
    }
    for r in &d.retags {
        n.repos.insert(r.tag.repo.clone());
        match &r.source {
            RetagSource::From(src) => {
                n.repos.insert(src.repo.clone());
                if let Some(crate::model::Reference::Digest(dg)) = &src.reference {
                    n.digests.insert((src.repo.clone(), dg.clone()));
                }
            }
            RetagSource::Newest { repo, tags } => {
                n.repos.insert(repo.clone());
                if tags.semver.is_none() {
                    n.created_of_all_tags.insert(repo.clone());
                }
            }
        }
    }
    for h in d.hosts.values() {
        for img in &h.images.present {
            n.repos.insert(img.repo.clone());
        }
    }
    // `policies` judges every tag of the managed repos (see `policy`).
    if super::policy::Checker::new(d).is_some_and(|c| c.judges_images()) {
        for m in &d.mirrors {
            n.created_of_all_tags.insert(m.to.clone());
        }
        for p in &d.promotions {
            n.created_of_all_tags.insert(p.from.clone());
            n.created_of_all_tags.insert(p.to.clone());
        }
        for r in &d.retags {
            n.created_of_all_tags.insert(r.tag.repo.clone());
            match &r.source {
                RetagSource::From(src) => n.created_of_all_tags.insert(src.repo.clone()),
                RetagSource::Newest { repo, .. } => n.created_of_all_tags.insert(repo.clone()),
            };
        }
    }
    for r in &d.retention {
        for g in &r.repos {
            if g.is_literal() {
                if let Ok(repo) = g.pattern.parse() {
                    let a = RepoAddr {
                        registry: g.registry.clone(),
                        repo,
                    };
                    n.repos.insert(a.clone());
                    n.created_of_all_tags.insert(a);
                }
            } else {
                n.catalogs.insert(g.registry.clone());
            }
        }
    }
    n
}

#[derive(Clone, Debug)]
pub struct Intent {
    pub target: RepoAddr,
    pub tag: Tag,
    pub digest: Digest,
    /// Where the content is read from.
    pub source: RepoAddr,
    pub rule: String,
    pub reason: String,
    /// May move a tag that points elsewhere (mirrors and retags; promotions only with `overwrite`).
    pub may_move: bool,
    pub with_referrers: bool,
    pub only_platforms: Option<Vec<String>>,
    /// A `retags:` rule: shown as `retag` even when the tag is new.
    pub is_retag: bool,
    /// What to read at the source when it differs from `digest` (a
    /// platform-filtered index is made from the source's full index).
    pub source_digest: Option<Digest>,
    /// The tag this one is read from when a change of the same plan puts it
    /// there (`staging/api:1.3.0` for a promotion's `prod/api:stable`
    /// retag): a plan cut without that change must not keep this one.
    pub after: Option<String>,
}

/// A tag a rule wants that is already where the rule wants it.
#[derive(Clone, Debug)]
pub struct InPlace {
    pub target: RepoAddr,
    pub tag: Tag,
    pub source: RepoAddr,
    pub digest: Digest,
    pub rule: String,
}

/// A rule that wants a tag but cannot say at which digest: what it follows
/// is itself in conflict, or could not be read. Every other rule on that
/// tag is then in conflict with it, so none wins silently.
#[derive(Clone, Debug)]
pub struct Claim {
    pub target: RepoAddr,
    pub tag: Tag,
    pub rule: String,
    /// What the rule follows: `b/app:x`.
    pub follows: String,
    /// Why it is blocked when no other rule wants the tag.
    pub reason: String,
    /// What it follows could not be read (else: it is in conflict).
    pub unread: bool,
}

/// A target a rule could not plan (see [`PlanCx::unread`]).
#[derive(Clone, Debug)]
pub struct Unread {
    pub target: RepoAddr,
    /// One tag, or `None` for the whole repo.
    pub tag: Option<Tag>,
    pub why: String,
    pub rule: String,
}

/// Where a tag will point once earlier rules' intents are applied.
pub enum Planned {
    /// At this digest, its content read from this repo.
    At(Digest, RepoAddr),
    /// Rules disagree on it (each is reported): nothing may build on it.
    Conflict,
    /// Not there and no rule brings it, or its repo could not be read.
    Missing,
}

pub struct PlanCx<'o> {
    pub observed: &'o Observed,
    pub now: Timestamp,
    /// Added through [`PlanCx::push_intent`] only, which keeps the two
    /// lookups below (a mirror of 5,000 tags asks about each of them).
    pub intents: Vec<Intent>,
    /// `intents` by target repo and tag (indexes into it).
    by_target: HashMap<(RepoAddr, Tag), Vec<usize>>,
    /// Repos some intent puts an image tag into (referrer tags aside).
    fed: HashSet<RepoAddr>,
    /// Referrer tags intents put into each repo, in order.
    referrer_intents: HashMap<RepoAddr, Vec<Tag>>,
    /// Tags rules want without a digest (see [`Claim`]).
    pub claims: Vec<Claim>,
    /// Promotion candidates held back by `min_age` alone: they pass with
    /// time, so retention must not delete them meanwhile (repo, digest, rule).
    pub soaking: Vec<(RepoAddr, Digest, String)>,
    /// Rules' tags already in place (a promotion done earlier): no change,
    /// but retention must keep both ends, or it would delete what the next
    /// run copies again.
    pub in_place: Vec<InPlace>,
    /// Targets a mirror or promotion could not plan because what it reads
    /// is unknown (its source repo, an index): retention keeps them, the
    /// whole repo when no tag is given, since unknown is not absent.
    pub unread: Vec<Unread>,
    /// Per repo: whether it holds referrer tags of something none of its
    /// tags names (see `referrers::follow`), worked out once per plan.
    pub loose_referrers: BTreeMap<RepoAddr, bool>,
    pub blocked: Vec<Blocked>,
    /// For `plan::wanted`: the image details the rules asked for.
    pub collect_needed: bool,
    pub needed: BTreeSet<(RepoAddr, Digest)>,
    /// For `plan::wanted`: manifests whose index bytes alone are needed.
    pub needed_indexes: BTreeSet<(RepoAddr, Digest)>,
    /// For `plan::wanted`: scan-report referrers (repo, referrer digest) gates judge.
    pub needed_reports: BTreeSet<(RepoAddr, Digest)>,
    /// For `plan::wanted`: referrer tags whose digests `referrers` compares.
    pub needed_referrer_tags: BTreeSet<(RepoAddr, Tag)>,
    /// For `plan::wanted`: referrer manifests whose entries it compares.
    pub needed_referrer_entries: BTreeSet<(RepoAddr, Digest)>,
    /// For `plan::wanted`: (source repo, subject) whose own referrer index it compares.
    pub needed_api_referrers: BTreeSet<(RepoAddr, Digest)>,
    /// For `plan::wanted`: (target repo, subject) whose listed referrers it compares.
    pub needed_listed_referrers: BTreeSet<(RepoAddr, Digest)>,
    /// Referrers to copy on their own, by (target repo, referrer digest).
    referrer_copies: BTreeMap<(RepoAddr, Digest), ReferrerCopy>,
    /// The same by (target repo, subject): what arrives there for later rules.
    referrer_arrivals: HashMap<(RepoAddr, Digest), Vec<Digest>>,
    /// What `policies` says of the images intents would put under a tag,
    /// kept for those that become changes (see [`PlanCx::bring`]).
    pub incoming: Vec<Incoming>,
}

/// A violation of an image an intent would put under `target:tag`.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub target: RepoAddr,
    pub tag: Tag,
    pub digest: Digest,
    pub violation: Violation,
}

/// Why a repo's tags cannot be used.
pub enum RepoView<'o> {
    Known(&'o RepoState),
    Unknown,
}

impl<'o> PlanCx<'o> {
    pub fn new(observed: &'o Observed, now: Timestamp) -> Self {
        PlanCx {
            observed,
            now,
            intents: Vec::new(),
            referrer_intents: HashMap::new(),
            by_target: HashMap::new(),
            fed: HashSet::new(),
            claims: Vec::new(),
            soaking: Vec::new(),
            in_place: Vec::new(),
            unread: Vec::new(),
            loose_referrers: BTreeMap::new(),
            blocked: Vec::new(),
            collect_needed: false,
            needed: BTreeSet::new(),
            needed_indexes: BTreeSet::new(),
            needed_reports: BTreeSet::new(),
            needed_referrer_tags: BTreeSet::new(),
            needed_referrer_entries: BTreeSet::new(),
            needed_api_referrers: BTreeSet::new(),
            needed_listed_referrers: BTreeSet::new(),
            referrer_copies: BTreeMap::new(),
            referrer_arrivals: HashMap::new(),
            incoming: Vec::new(),
        }
    }

    pub fn repo(&self, r: &RepoAddr) -> RepoView<'o> {
        match self.observed.repos.get(r) {
            Some(Fact::Known(s)) => RepoView::Known(s),
            _ => RepoView::Unknown,
        }
    }

    /// Details of an image; `None` (and remembered as needed) when not read.
    pub fn image(&mut self, r: &RepoAddr, d: &Digest) -> Option<&'o Fact<ImageInfo>> {
        if self.collect_needed {
            self.needed.insert((r.clone(), d.clone()));
        }
        self.observed.image(r, d)
    }

    /// The bytes of the index under `d` (`Known(None)`: a single-platform
    /// image), from image details where read, else from a manifest-only read;
    /// `None` (and remembered as needed) when not read.
    pub fn index(&mut self, r: &RepoAddr, d: &Digest) -> Option<Fact<Option<&'o str>>> {
        if matches!(self.repo(r), RepoView::Known(s) if s.single_images.contains(d)) {
            return Some(Fact::Known(None));
        }
        let key = (r.clone(), d.clone());
        let fact = match self.observed.images.get(&key) {
            Some(Fact::Known(i)) => Some(Fact::Known(i.index_manifest.as_deref())),
            Some(Fact::Unknown { reason }) => Some(Fact::Unknown {
                reason: reason.clone(),
            }),
            None => self.observed.indexes.get(&key).map(|f| match f {
                Fact::Known(bytes) => Fact::Known(bytes.as_deref()),
                Fact::Unknown { reason } => Fact::Unknown {
                    reason: reason.clone(),
                },
            }),
        };
        if fact.is_none() && self.collect_needed {
            self.needed_indexes.insert(key);
        }
        fact
    }

    /// Tags of a known repo with creation times where they were read.
    pub fn tags_with_created(
        &self,
        r: &RepoAddr,
        state: &'o RepoState,
    ) -> Vec<(&'o Tag, Option<Timestamp>)> {
        state
            .tags
            .iter()
            .map(|(t, d)| {
                let c = match self.observed.image(r, d) {
                    Some(Fact::Known(i)) => i.created,
                    _ => None,
                };
                (t, c)
            })
            .collect()
    }

    pub fn block(&mut self, rule: &str, subject: impl Into<String>, reason: impl Into<String>) {
        self.push_blocked(rule, subject.into(), None, reason.into());
    }

    /// As [`PlanCx::block`], for a candidate blocked at its source on its
    /// way to `target`.
    pub fn block_to(
        &mut self,
        rule: &str,
        subject: impl Into<String>,
        target: String,
        reason: impl Into<String>,
    ) {
        self.push_blocked(rule, subject.into(), Some(target), reason.into());
    }

    fn push_blocked(
        &mut self,
        rule: &str,
        subject: String,
        target: Option<String>,
        reason: String,
    ) {
        self.blocked.push(Blocked {
            rule: rule.to_string(),
            subject,
            reason,
            target,
        });
    }

    /// Holds a mirror's or promotion's whole TO while what it reads cannot
    /// be (see [`PlanCx::unread`]): retention keeps it meanwhile.
    pub fn hold_target(&mut self, rule: &str, to: &RepoAddr, why: String) {
        self.unread.push(Unread {
            target: to.clone(),
            tag: None,
            why,
            rule: rule.to_string(),
        });
    }

    /// For a mirror's or promotion's `latest: N` over `candidates` of
    /// `from`: when an unread creation time could change the choice, blocks
    /// `rule` saying so and holds `to`. Whether it did.
    pub fn wait_for_created(
        &mut self,
        rule: &str,
        (from, to): (&RepoAddr, &RepoAddr),
        selector: &crate::config::TagSelector,
        candidates: &[(Tag, Option<Timestamp>)],
    ) -> bool {
        if !selector.needs_created() {
            return false;
        }
        let matching = candidates
            .iter()
            .map(|(t, _)| t)
            .filter(|t| selector.matches(t));
        let keep = selector.latest.unwrap_or(usize::MAX);
        let Some((t, why)) = self.unread_created(from, keep, matching) else {
            return false;
        };
        let why = format!(
            "the creation time of {from}:{t} could not be read ({why}), so the latest tags are unknown"
        );
        self.hold_target(rule, to, why.clone());
        self.block(rule, from.to_string(), why);
        true
    }

    /// For a selector keeping the `keep` highest of `candidates` (tags of
    /// `r` it matches): one whose image details could not be read, and why,
    /// where that decides the choice. Versions rank above other tags and
    /// need no creation time; among the others, one taken for the oldest
    /// could make `newest` pick an older image, so the choice waits.
    pub fn unread_created<'t>(
        &self,
        r: &RepoAddr,
        keep: usize,
        candidates: impl IntoIterator<Item = &'t Tag>,
    ) -> Option<(Tag, String)> {
        let (versions, others): (Vec<&Tag>, Vec<&Tag>) = candidates
            .into_iter()
            .partition(|t| crate::config::selector::parse_version(t.as_str()).is_some());
        // Enough versions fill the selection, or every candidate is in it
        // whatever the order.
        if versions.len() >= keep || versions.len() + others.len() <= keep {
            return None;
        }
        others.into_iter().find_map(|t| {
            let (d, at) = self.planned(r, t)?;
            match self.observed.image(&at, &d) {
                Some(Fact::Unknown { reason }) => Some((t.clone(), reason.clone())),
                _ => None,
            }
        })
    }

    /// Where a tag will point once earlier rules' intents are applied:
    /// `(digest, content source)`; `None` when it will not exist or rules
    /// disagree on it (see [`PlanCx::plans_for`]).
    pub fn planned(&self, r: &RepoAddr, tag: &Tag) -> Option<(Digest, RepoAddr)> {
        match self.plans_for(r, tag) {
            Planned::At(d, src) => Some((d, src)),
            Planned::Conflict | Planned::Missing => None,
        }
    }

    /// Whether rules disagree on where the tag will point.
    pub fn in_conflict(&self, r: &RepoAddr, tag: &Tag) -> bool {
        matches!(self.plans_for(r, tag), Planned::Conflict)
    }

    /// Where a tag will point, as `resolve` will decide it.
    pub fn plans_for(&self, r: &RepoAddr, tag: &Tag) -> Planned {
        if self.claims.iter().any(|c| &c.target == r && &c.tag == tag) {
            return Planned::Conflict;
        }
        let current = match self.repo(r) {
            RepoView::Known(s) => s.tags.get(tag),
            RepoView::Unknown => None,
        };
        let hits: Vec<&Intent> = self.intents_on(r, tag).collect();
        if let Some(first) = hits.first() {
            // Different digests block every one of them in `resolve`.
            if hits.iter().any(|i| i.digest != first.digest) {
                return Planned::Conflict;
            }
            // An intent that may not move an existing tag elsewhere is
            // blocked by `resolve` and the tag stays: later rules must not
            // build on the move.
            if current.is_none_or(|c| *c == first.digest) || hits.iter().all(|i| i.may_move) {
                return Planned::At(first.digest.clone(), first.source.clone());
            }
        }
        match current {
            Some(d) => Planned::At(d.clone(), r.clone()),
            None => Planned::Missing,
        }
    }

    /// Records that `rule` wants `tag` of `target` as `follows` will be,
    /// which is itself in conflict.
    pub fn claim(
        &mut self,
        rule: &str,
        target: &RepoAddr,
        tag: &Tag,
        follows: String,
        reason: String,
    ) {
        self.push_claim(rule, target, tag, follows, reason, false);
    }

    /// As [`PlanCx::claim`], for what `follows` names could not be read.
    pub fn claim_unread(
        &mut self,
        rule: &str,
        target: &RepoAddr,
        tag: &Tag,
        follows: String,
        reason: String,
    ) {
        self.push_claim(rule, target, tag, follows, reason, true);
    }

    fn push_claim(
        &mut self,
        rule: &str,
        target: &RepoAddr,
        tag: &Tag,
        follows: String,
        reason: String,
        unread: bool,
    ) {
        self.claims.push(Claim {
            target: target.clone(),
            tag: tag.clone(),
            rule: rule.to_string(),
            follows,
            reason,
            unread,
        });
    }

    /// Whether an earlier rule's intent puts an image under a tag of `r`
    /// (referrer tags aside: they are no tags a selector sees).
    pub fn fed(&self, r: &RepoAddr) -> bool {
        self.fed.contains(r)
    }

    /// Adds an intent as it is (see [`PlanCx::bring`] for one `policies`
    /// judges first).
    /// `repo:tag` when a change of this plan will put (or move) that tag:
    /// what reads it depends on that change.
    pub fn depends_on(&self, r: &RepoAddr, tag: &Tag) -> Option<String> {
        let current = match self.repo(r) {
            RepoView::Known(s) => s.tags.get(tag).cloned(),
            RepoView::Unknown => None,
        };
        self.intents_on(r, tag)
            .any(|i| Some(&i.digest) != current.as_ref())
            .then(|| format!("{r}:{tag}"))
    }

    pub fn push_intent(&mut self, i: Intent) {
        if i.tag.is_referrer_tag() {
            self.referrer_intents
                .entry(i.target.clone())
                .or_default()
                .push(i.tag.clone());
        } else {
            self.fed.insert(i.target.clone());
        }
        self.by_target
            .entry((i.target.clone(), i.tag.clone()))
            .or_default()
            .push(self.intents.len());
        self.intents.push(i);
    }

    /// Whether some rule's intent puts `r:tag`.
    pub fn has_intent_on(&self, r: &RepoAddr, tag: &Tag) -> bool {
        self.intents_on(r, tag).next().is_some()
    }

    /// Plans the copy of referrer `digest` of `subject` into `to` (merging
    /// the rules of several that want it).
    pub fn plan_referrer_copy(
        &mut self,
        (to, subject, digest): (&RepoAddr, &Digest, &Digest),
        copy: ReferrerCopy,
    ) {
        match self.referrer_copies.entry((to.clone(), digest.clone())) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                for r in copy.rules {
                    if !e.get().rules.contains(&r) {
                        e.get_mut().rules.push(r);
                    }
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(copy);
                self.referrer_arrivals
                    .entry((to.clone(), subject.clone()))
                    .or_default()
                    .push(digest.clone());
            }
        }
    }

    /// Referrers of `subject` an earlier rule's copy brings into the repo
    /// (`key`: repo, subject): (digest, artifact type, repo it is read from).
    pub fn indexed_arrivals(&self, key: &(RepoAddr, Digest)) -> Vec<(Digest, String, RepoAddr)> {
        self.referrer_arrivals
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let c = self.referrer_copies.get(&(key.0.clone(), d.clone()))?;
                Some((d.clone(), c.artifact_type.clone(), c.source.clone()))
            })
            .collect()
    }

    /// Referrer tags earlier rules' intents bring into `r`.
    pub fn arriving_referrers(&self, r: &RepoAddr) -> &[Tag] {
        self.referrer_intents.get(r).map_or(&[], Vec::as_slice)
    }

    /// Where earlier rules' intents put a referrer tag of `r` (when they
    /// agree), and the repo its content is read from; `None` when no rule
    /// writes it.
    pub fn planned_referrer(&self, r: &RepoAddr, tag: &Tag) -> Option<(Digest, RepoAddr)> {
        let mut hits = self.intents_on(r, tag);
        let first = hits.next()?;
        hits.all(|i| i.digest == first.digest)
            .then(|| (first.digest.clone(), first.source.clone()))
    }

    /// The intents on `tag` of `r`, in the order rules added them.
    fn intents_on<'a>(&'a self, r: &RepoAddr, tag: &Tag) -> impl Iterator<Item = &'a Intent> {
        self.by_target
            .get(&(r.clone(), tag.clone()))
            .into_iter()
            .flatten()
            .filter_map(|&n| self.intents.get(n))
    }

    /// For a tag an earlier rule fills with a platform-filtered copy (an
    /// index that exists nowhere yet): the full index it is made from at
    /// the intent's source, and the platforms kept. A later rule makes the
    /// same copy from there, so it need not wait for the first to land.
    pub fn planned_filter(
        &self,
        r: &RepoAddr,
        tag: &Tag,
        digest: &Digest,
    ) -> Option<(Digest, Vec<String>)> {
        self.intents_on(r, tag)
            .filter(|i| &i.digest == digest)
            .find_map(|i| Some((i.source_digest.clone()?, i.only_platforms.clone()?)))
    }

    /// A repo's tags as they will be once earlier rules' intents are applied,
    /// with creation times where read. Lets `newest:`, mirrors and
    /// promotions see what a mirror, promotion or retag in the same plan
    /// brings, so one apply converges. With `created`, the creation times of
    /// images brought from elsewhere are asked for (selectors that order by
    /// them).
    pub fn planned_tags(
        &mut self,
        r: &RepoAddr,
        created: bool,
    ) -> Option<Vec<(Tag, Option<Timestamp>)>> {
        let RepoView::Known(state) = self.repo(r) else {
            return None;
        };
        let names: BTreeSet<Tag> = state
            .tags
            .keys()
            .chain(
                self.intents
                    .iter()
                    .filter(|i| &i.target == r && !i.tag.is_referrer_tag())
                    .map(|i| &i.tag),
            )
            .chain(
                self.claims
                    .iter()
                    .filter(|c| &c.target == r)
                    .map(|c| &c.tag),
            )
            .cloned()
            .collect();
        let planned: Vec<(Tag, Planned)> = names
            .into_iter()
            .map(|t| {
                let p = self.plans_for(r, &t);
                (t, p)
            })
            .collect();
        // Images brought from elsewhere: their creation times are asked
        // for (selectors that order by them).
        if created && self.collect_needed {
            for (_, p) in &planned {
                if let Planned::At(d, src) = p {
                    if src != r {
                        self.needed.insert((src.clone(), d.clone()));
                    }
                }
            }
        }
        Some(
            planned
                .into_iter()
                .filter_map(|(t, p)| match p {
                    Planned::At(d, src) => {
                        let created = match self.observed.image(&src, &d) {
                            Some(Fact::Known(i)) => i.created,
                            _ => None,
                        };
                        Some((t, created))
                    }
                    // Still a tag rules want: a selector may pick it, and
                    // what follows it is then in conflict too.
                    Planned::Conflict => Some((t, None)),
                    Planned::Missing => None,
                })
                .collect(),
        )
    }

    /// Adds an intent, after `policies` has judged the image it would put
    /// under its tag: what a merge brings must be seen in the plan of the
    /// pull request, not only in the plan after the apply. The violations
    /// are kept (and reported against the target) for intents that become
    /// changes; under `on_violation: enforce` a violating image is blocked,
    /// as promotions are, and later rules do not build on it.
    pub fn bring(&mut self, intent: Intent, checker: Option<&Checker<'_>>) {
        let Some(checker) = checker.filter(|c| c.judges_images()) else {
            self.push_intent(intent);
            return;
        };
        // Referrer tags hold artifacts, not images; a tag already in place
        // is judged as observed; an unknown target gets no change.
        let current = match self.repo(&intent.target) {
            RepoView::Known(s) => s.tags.get(&intent.tag),
            RepoView::Unknown => {
                self.push_intent(intent);
                return;
            }
        };
        if intent.tag.is_referrer_tag() || current == Some(&intent.digest) {
            self.push_intent(intent);
            return;
        }
        // A filtered copy has the facts of the index it is made from.
        let read = intent.source_digest.as_ref().unwrap_or(&intent.digest);
        let subject = ImageRef::tagged(intent.target.clone(), intent.tag.clone()).to_string();
        let source = intent.source.clone();
        let found = match self.image(&source, read) {
            Some(Fact::Known(info)) if info.is_regimen_placeholder() => Vec::new(),
            Some(Fact::Known(info)) => checker.image(info, self.now),
            // Listed as unobserved; under enforce, not judged is not clean.
            Some(Fact::Unknown { reason }) => {
                if checker.enforces() && !self.collect_needed {
                    let why = format!("image details could not be read: {reason}");
                    self.block(&intent.rule, subject, why);
                    return;
                }
                Vec::new()
            }
            None => {
                if checker.enforces() && !self.collect_needed {
                    self.block(&intent.rule, subject, "image details were not read");
                    return;
                }
                Vec::new()
            }
        };
        if checker.enforces() && !found.is_empty() {
            let why: Vec<String> = found
                .iter()
                .map(|v| format!("policy {}: {}", v.policy, v.message))
                .collect();
            self.block(&intent.rule, subject, why.join("; "));
            return;
        }
        for v in found {
            self.incoming.push(Incoming {
                target: intent.target.clone(),
                tag: intent.tag.clone(),
                digest: intent.digest.clone(),
                violation: Violation {
                    policy: v.policy.to_string(),
                    kind: v.kind.map(str::to_string),
                    subject: subject.clone(),
                    message: format!("{}; comes with this plan: {}", v.message, intent.reason),
                },
            });
        }
        self.push_intent(intent);
    }

    /// Turns intents into changes: same target and digest from several rules
    /// merge; different digests are a conflict that blocks all of them.
    pub fn resolve(self) -> Plan {
        let mut plan = Plan {
            blocked: self.blocked,
            ..Plan::default()
        };
        let mut by_target: BTreeMap<(RepoAddr, Tag), Vec<Intent>> = BTreeMap::new();
        for i in self.intents {
            by_target
                .entry((i.target.clone(), i.tag.clone()))
                .or_default()
                .push(i);
        }
        let mut claims: BTreeMap<(RepoAddr, Tag), Vec<Claim>> = BTreeMap::new();
        for c in self.claims {
            claims
                .entry((c.target.clone(), c.tag.clone()))
                .or_default()
                .push(c);
        }
        // A tag only claims want: each says why it cannot be resolved.
        for ((repo, tag), cs) in &claims {
            if by_target.contains_key(&(repo.clone(), tag.clone())) {
                continue;
            }
            let target = ImageRef::tagged(repo.clone(), tag.clone()).to_string();
            for c in cs {
                plan.blocked.push(Blocked {
                    target: None,
                    rule: c.rule.clone(),
                    subject: target.clone(),
                    reason: c.reason.clone(),
                });
            }
        }
        for ((repo, tag), intents) in by_target {
            let target = ImageRef::tagged(repo.clone(), tag.clone()).to_string();
            let digests: BTreeSet<&Digest> = intents.iter().map(|i| &i.digest).collect();
            let claimed = claims
                .remove(&(repo.clone(), tag.clone()))
                .unwrap_or_default();
            if digests.len() > 1 || !claimed.is_empty() {
                let wants: Vec<String> = intents
                    .iter()
                    .map(|i| format!("{} wants {}", i.rule, i.digest.short()))
                    .chain(claimed.iter().map(|c| {
                        let why = if c.unread {
                            c.reason.as_str()
                        } else {
                            "itself in conflict"
                        };
                        format!("{} wants {} ({why})", c.rule, c.follows)
                    }))
                    .collect();
                let rules = intents
                    .iter()
                    .map(|i| &i.rule)
                    .chain(claimed.iter().map(|c| &c.rule));
                for rule in rules {
                    plan.blocked.push(Blocked {
                        target: None,
                        rule: rule.clone(),
                        subject: target.clone(),
                        reason: format!("conflict: {}", wants.join(", ")),
                    });
                }
                continue;
            }
            let RepoView::Known(state) = (match self.observed.repos.get(&repo) {
                Some(Fact::Known(s)) => RepoView::Known(s),
                _ => RepoView::Unknown,
            }) else {
                // Unknown target: listed as unobserved; never written blind.
                continue;
            };
            let first = &intents[0];
            let rules: Vec<&str> = {
                let mut r: Vec<&str> = intents.iter().map(|i| i.rule.as_str()).collect();
                r.dedup();
                r
            };
            // Referrer tags are listed apart, their digests read separately.
            let current = if tag.is_referrer_tag() && state.referrer_tags.contains(&tag) {
                match self.observed.referrer_tag(&repo, &tag) {
                    Some(Fact::Known(d)) => Some(d),
                    _ => continue, // listed but not read: never written blind
                }
            } else {
                state.tags.get(&tag)
            };
            let (action, expect) = match current {
                Some(cur) if *cur == first.digest => continue,
                Some(cur) => {
                    if !intents.iter().all(|i| i.may_move) {
                        for i in intents.iter().filter(|i| !i.may_move) {
                            plan.blocked.push(Blocked {
                                target: None,
                                rule: i.rule.clone(),
                                subject: target.clone(),
                                reason: format!(
                                    "conflict: {target} already points at {}, not {} (overwrite: false)",
                                    cur.short(),
                                    first.digest.short()
                                ),
                            });
                        }
                        continue;
                    }
                    (Action::Retag, cur.to_string())
                }
                None if intents.iter().any(|i| i.is_retag) => (Action::Retag, "absent".to_string()),
                None => (Action::Copy, "absent".to_string()),
            };
            let info = match self.observed.image(&first.source, &first.digest) {
                Some(Fact::Known(i)) => Some(i),
                _ => None,
            };
            plan.changes.push(Change {
                action,
                target,
                source: Some(format!(
                    "{}@{}",
                    first.source,
                    first.source_digest.as_ref().unwrap_or(&first.digest)
                )),
                digest: Some(first.digest.to_string()),
                expect,
                rule: rules.join(", "),
                reason: first.reason.clone(),
                platforms: info.map(|i| i.platforms.len() as u32),
                referrers: info
                    .filter(|_| first.with_referrers && first.only_platforms.is_none())
                    .map(|i| i.referrers.len() as u32),
                size: info.map(|i| i.size),
                with_referrers: first.with_referrers,
                only_platforms: first.only_platforms.clone(),
                also_tags: Vec::new(),
                kept_by: Vec::new(),
                after: intents.iter().find_map(|i| i.after.clone()),
            });
        }
        for ((to, digest), r) in self.referrer_copies {
            let rules = r.rules;
            plan.changes.push(Change {
                target: format!("{to}@{digest}"),
                source: Some(format!("{}@{digest}", r.source)),
                digest: Some(digest.to_string()),
                expect: "absent".into(),
                rule: rules.join(", "),
                reason: r.reason,
                ..Change::new(Action::Copy)
            });
        }
        plan
    }
}

/// A referrer the source's registry indexes for an image already at the
/// target, which the target does not list: copied on its own, untagged.
#[derive(Debug)]
pub struct ReferrerCopy {
    pub source: RepoAddr,
    pub rules: Vec<String>,
    pub reason: String,
    pub artifact_type: String,
}

/// `5d` style age of a creation time, for reasons.
pub fn age(now: Timestamp, created: Timestamp) -> String {
    Duration::human(now.0 - created.0)
}
