//! The grant vocabulary: actions, repository patterns, grants (what a principal may
//! do), needs (what a request must be allowed) and Docker token scopes (what a client
//! asks `/token` for). Pure values: no keys, no I/O.
//!
//! Text forms:
//!
//! | thing | form | examples |
//! |---|---|---|
//! | actions | `pull`, `push`, `delete`, comma-separated, or `*` (all three) | `pull`, `pull,push`, `*` |
//! | repository pattern | an exact name; a prefix ending in `/`; or `*` (every repository) | `packs/a`, `packs/`, `*` |
//! | grant | `<pattern>:<actions>`, or `registry:catalog:*` for the catalog | `packs/:pull`, `packs/team/x:*` |
//! | scope | `repository:<name>:<actions>` or `registry:catalog:*` | `repository:packs/a/b:pull,push` |
//!
//! **The prefix rule.** A prefix is a run of whole name components and always ends in
//! `/`: `packs/team/` covers `packs/team/x` and `packs/team/x/y`, and neither
//! `packs/team` itself nor `packs/teammate`. A pattern without a trailing `/` is an
//! exact name, so `packs/team` never covers `packs/teammate` (nor `packs/team/x`);
//! to cover a name and everything below it, grant both `packs/team` and `packs/team/`.
//! There are no wildcards inside names.

use std::fmt;
use std::str::FromStr;

use crate::names::RepoName;

/// One action on a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests, tags, blobs, referrers; download and list packs.
    Pull,
    /// Upload blobs and manifests, mount blobs into the repository, publish packs.
    Push,
    /// Delete manifests, tags, blobs and pack versions.
    Delete,
}

impl Action {
    /// Every action, in display order.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The action's name: `pull`, `push` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = GrantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            _ => Err(GrantError(format!(
                "unknown action {s:?} (pull, push, delete or *)"
            ))),
        }
    }
}

/// A set of actions. Displays as a comma-separated list in the order pull, push,
/// delete (never as `*`; [`Grant`] writes `*` for all three).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Every action (`*`).
    pub const ALL: Actions = Actions(7);

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set with `action` added.
    #[must_use]
    pub fn with(self, action: Action) -> Actions {
        Actions(self.0 | action.bit())
    }

    /// Actions in either set.
    #[must_use]
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// Actions in both sets.
    #[must_use]
    pub fn intersection(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// The actions in the set, in display order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Parses `*` or a comma-separated list of action names; unknown names are
    /// errors (this is for configuration and the command line).
    pub fn parse(s: &str) -> Result<Actions, GrantError> {
        if s == "*" {
            return Ok(Actions::ALL);
        }
        let mut set = Actions::NONE;
        for name in s.split(',') {
            set = set.with(name.trim().parse()?);
        }
        Ok(set)
    }

    /// Parses a scope's action list leniently: `*` is every action, unknown names
    /// are ignored (they could never be granted).
    fn parse_lenient(s: &str) -> Actions {
        s.split(',')
            .map(str::trim)
            .fold(Actions::NONE, |set, name| match name {
                "*" => Actions::ALL,
                _ => name.parse().map_or(set, |a| set.with(a)),
            })
    }
}

impl From<Action> for Actions {
    fn from(a: Action) -> Actions {
        Actions(a.bit())
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{self}]")
    }
}

/// Which repositories a grant covers (see the module docs for the prefix rule).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RepoPattern {
    /// Exactly this repository.
    Exact(RepoName),
    /// Every repository whose name starts with this string, which ends in `/`.
    Prefix(String),
    /// Every repository (`*`).
    Any,
}

impl RepoPattern {
    /// Parses `*`, a prefix ending in `/`, or an exact repository name.
    pub fn parse(s: &str) -> Result<RepoPattern, GrantError> {
        if s == "*" {
            return Ok(RepoPattern::Any);
        }
        if s.ends_with('/') {
            // A prefix is valid when it followed by one more component is a valid name.
            return match RepoName::parse(&format!("{s}x")) {
                Ok(_) => Ok(RepoPattern::Prefix(s.to_owned())),
                Err(_) => Err(GrantError(format!(
                    "invalid repository prefix {s:?}: name components ending in '/'"
                ))),
            };
        }
        RepoName::parse(s).map(RepoPattern::Exact).map_err(|_| {
            GrantError(format!(
                "invalid repository pattern {s:?}: a repository name, a prefix ending in '/', or *"
            ))
        })
    }

    /// Whether the pattern covers the repository `name`.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            RepoPattern::Exact(n) => n.as_str() == name,
            RepoPattern::Prefix(p) => name.starts_with(p.as_str()),
            RepoPattern::Any => true,
        }
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoPattern::Exact(n) => f.write_str(n.as_str()),
            RepoPattern::Prefix(p) => f.write_str(p),
            RepoPattern::Any => f.write_str("*"),
        }
    }
}

impl FromStr for RepoPattern {
    type Err = GrantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoPattern::parse(s)
    }
}

impl TryFrom<String> for RepoPattern {
    type Error = GrantError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoPattern::parse(&s)
    }
}

impl From<RepoPattern> for String {
    fn from(p: RepoPattern) -> String {
        p.to_string()
    }
}

impl serde::Serialize for RepoPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RepoPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RepoPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Something a principal may do: actions on the repositories a pattern covers, or
/// list the registry's catalog.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// `<pattern>:<actions>`.
    Repository {
        /// Which repositories.
        pattern: RepoPattern,
        /// Which actions on them.
        actions: Actions,
    },
    /// `registry:catalog:*`: list every repository name (`/v2/_catalog`).
    Catalog,
}

/// The text form of the catalog grant and scope.
pub const CATALOG: &str = "registry:catalog:*";

impl Grant {
    /// Parses `<pattern>:<actions>` or `registry:catalog:*`.
    pub fn parse(s: &str) -> Result<Grant, GrantError> {
        if s == CATALOG {
            return Ok(Grant::Catalog);
        }
        let (pattern, actions) = s.rsplit_once(':').ok_or_else(|| {
            GrantError(format!(
                "invalid grant {s:?}: <repository pattern>:<actions> or {CATALOG}"
            ))
        })?;
        Ok(Grant::Repository {
            pattern: RepoPattern::parse(pattern)?,
            actions: Actions::parse(actions)?,
        })
    }

    /// The actions this grant gives on the repository `name`.
    pub fn actions_on(&self, name: &str) -> Actions {
        match self {
            Grant::Repository { pattern, actions } if pattern.matches(name) => *actions,
            _ => Actions::NONE,
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Repository { pattern, actions } if *actions == Actions::ALL => {
                write!(f, "{pattern}:*")
            }
            Grant::Repository { pattern, actions } => write!(f, "{pattern}:{actions}"),
            Grant::Catalog => f.write_str(CATALOG),
        }
    }
}

impl FromStr for Grant {
    type Err = GrantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Grant::parse(s)
    }
}

impl serde::Serialize for Grant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Grant::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What actions a list of grants gives on the repository `name`.
pub fn actions_on(grants: &[Grant], name: &str) -> Actions {
    grants
        .iter()
        .fold(Actions::NONE, |set, g| set.union(g.actions_on(name)))
}

/// Whether a list of grants includes the catalog.
pub fn has_catalog(grants: &[Grant]) -> bool {
    grants.contains(&Grant::Catalog)
}

/// A grant, pattern or action list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(String);

/// What a request must be allowed, one action on one thing. A request may need
/// several: a cross-repository mount needs [`Action::Push`] on the target and
/// [`Action::Pull`] on the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need<'a> {
    /// An action on a repository (a valid repository name).
    Repository {
        /// The repository's name.
        name: &'a str,
        /// The action.
        action: Action,
    },
    /// Listing the catalog of repositories.
    Catalog,
}

impl<'a> Need<'a> {
    /// `action` on the repository `name`.
    pub fn repository(name: &'a RepoName, action: Action) -> Need<'a> {
        Need::Repository {
            name: name.as_str(),
            action,
        }
    }

    /// Pull from `name`.
    pub fn pull(name: &'a RepoName) -> Need<'a> {
        Need::repository(name, Action::Pull)
    }

    /// Push to `name`.
    pub fn push(name: &'a RepoName) -> Need<'a> {
        Need::repository(name, Action::Push)
    }

    /// Delete from `name`.
    pub fn delete(name: &'a RepoName) -> Need<'a> {
        Need::repository(name, Action::Delete)
    }
}

/// The `scope` value of a `WWW-Authenticate: Bearer` challenge for `needs`: one
/// `repository:<name>:<actions>` per repository, in the order first needed (actions
/// merged; `push` also asks for `pull`, as Distribution does, since a client that
/// pushes also checks what exists), then `registry:catalog:*` if needed; separated by
/// spaces. Empty when nothing is needed (omit the `scope` attribute then).
pub fn challenge_scope(needs: &[Need<'_>]) -> String {
    let mut repos: Vec<(&str, Actions)> = Vec::with_capacity(needs.len());
    let mut catalog = false;
    for need in needs {
        match *need {
            Need::Repository { name, action } => {
                let mut add = Actions::from(action);
                if action == Action::Push {
                    add = add.with(Action::Pull);
                }
                match repos.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, set)) => *set = set.union(add),
                    None => repos.push((name, add)),
                }
            }
            Need::Catalog => catalog = true,
        }
    }
    let mut out = String::new();
    for (name, actions) in repos {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("repository:");
        out.push_str(name);
        out.push(':');
        out.push_str(&actions.to_string());
    }
    if catalog {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(CATALOG);
    }
    out
}

/// One scope of a Docker token request (`GET /token?scope=…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>` (also `repository(<class>):…`: the class is
    /// ignored, as Distribution's token servers do).
    Repository {
        /// The repository.
        name: RepoName,
        /// The actions asked for; unknown action names were dropped.
        actions: Actions,
    },
    /// `registry:catalog:*`.
    Catalog,
}

impl Scope {
    /// Parses one scope. The resource name is everything between the first `:` and
    /// the last `:`, and must be a repository name (which has no `:`; multi-segment
    /// paths like `packs/team/x` are one name). Unknown action names are ignored;
    /// unknown resource types, missing parts and invalid names are errors (answer
    /// 400).
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let malformed = || ScopeError(format!("invalid scope {s:?}"));
        let (kind, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        let kind = match kind.split_once('(') {
            Some((kind, class)) if class.ends_with(')') && class.len() > 1 => kind,
            Some(_) => return Err(malformed()),
            None => kind,
        };
        match kind {
            "repository" => Ok(Scope::Repository {
                name: RepoName::parse(name).map_err(|_| {
                    ScopeError(format!("invalid repository name {name:?} in scope {s:?}"))
                })?,
                actions: Actions::parse_lenient(actions),
            }),
            "registry" if name == "catalog" && actions.split(',').any(|a| a.trim() == "*") => {
                Ok(Scope::Catalog)
            }
            _ => Err(ScopeError(format!("unknown resource in scope {s:?}"))),
        }
    }

    /// Parses a `scope` parameter that may hold several scopes separated by spaces
    /// (older clients send them so; newer ones repeat the parameter).
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, ScopeError> {
        s.split_ascii_whitespace().map(Scope::parse).collect()
    }

    /// The needs this scope stands for (one per action).
    pub fn needs(&self) -> Vec<Need<'_>> {
        match self {
            Scope::Repository { name, actions } => {
                actions.iter().map(|a| Need::repository(name, a)).collect()
            }
            Scope::Catalog => vec![Need::Catalog],
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str(CATALOG),
        }
    }
}

/// A scope that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScopeError(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn actions_parse_and_display() {
        assert_eq!(Actions::parse("*").unwrap(), Actions::ALL);
        let pp = Actions::parse("push,pull").unwrap();
        assert_eq!(pp.to_string(), "pull,push");
        assert!(pp.contains(Action::Pull) && !pp.contains(Action::Delete));
        assert!(Actions::parse("pull,write").is_err());
        assert!(Actions::parse("").is_err());
        assert_eq!(Actions::ALL.to_string(), "pull,push,delete");
        assert_eq!(
            Actions::parse_lenient("pull,metadata-read"),
            Actions::from(Action::Pull)
        );
        assert_eq!(Actions::parse_lenient("*"), Actions::ALL);
        assert!(Actions::parse_lenient("").is_empty());
    }

    #[test]
    fn prefixes_cover_whole_components_only() {
        let p = RepoPattern::parse("packs/team/").unwrap();
        assert!(p.matches("packs/team/x"));
        assert!(p.matches("packs/team/x/y"));
        assert!(!p.matches("packs/team"));
        assert!(!p.matches("packs/teammate"));
        assert!(!p.matches("packs/teammate/x"));
        let exact = RepoPattern::parse("packs/team").unwrap();
        assert!(exact.matches("packs/team"));
        assert!(!exact.matches("packs/teammate"));
        assert!(!exact.matches("packs/team/x"));
        assert!(RepoPattern::parse("*").unwrap().matches("anything/at/all"));
        for bad in [
            "packs/team*",
            "packs/*",
            "/",
            "packs//",
            "Packs/",
            "",
            "a:b",
            "packs/../x",
        ] {
            assert!(RepoPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_round_trip() {
        for text in [
            "packs/:pull",
            "packs/a/b:pull,push",
            "*:*",
            "packs/x:delete",
            CATALOG,
        ] {
            let g = Grant::parse(text).unwrap();
            assert_eq!(g.to_string(), text);
        }
        assert_eq!(
            Grant::parse("packs/:pull,push,delete").unwrap().to_string(),
            "packs/:*"
        );
        for bad in [
            "packs/",
            "packs/:",
            ":pull",
            "packs/:read",
            "registry:catalog:pull",
        ] {
            assert!(Grant::parse(bad).is_err(), "{bad}");
        }
        let grants = [
            Grant::parse("packs/:pull").unwrap(),
            Grant::parse("packs/a:push").unwrap(),
        ];
        assert_eq!(actions_on(&grants, "packs/a").to_string(), "pull,push");
        assert_eq!(actions_on(&grants, "packs/b").to_string(), "pull");
        assert!(actions_on(&grants, "other").is_empty());
        assert!(!has_catalog(&grants));
    }

    #[test]
    fn grants_deserialize_from_strings() {
        #[derive(Debug, serde::Deserialize)]
        struct G {
            grants: Vec<Grant>,
            anonymous: Vec<RepoPattern>,
        }
        let g: G = serde_json::from_str(
            r#"{"grants": ["packs/:pull", "registry:catalog:*"], "anonymous": ["public/"]}"#,
        )
        .unwrap();
        assert_eq!(g.grants[1], Grant::Catalog);
        assert_eq!(g.anonymous[0], RepoPattern::Prefix("public/".into()));
        let bad = serde_json::from_str::<G>(r#"{"grants": ["packs:read"], "anonymous": []}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown action"));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(
            Scope::parse("repository:packs/team/policy-x:pull,push").unwrap(),
            Scope::Repository {
                name: name("packs/team/policy-x"),
                actions: Actions::parse("pull,push").unwrap()
            }
        );
        assert_eq!(
            Scope::parse("repository:a/b/c/d/e:*").unwrap(),
            Scope::Repository {
                name: name("a/b/c/d/e"),
                actions: Actions::ALL
            }
        );
        assert_eq!(
            Scope::parse("repository(plugin):library/x:pull").unwrap(),
            Scope::Repository {
                name: name("library/x"),
                actions: Action::Pull.into()
            }
        );
        assert_eq!(Scope::parse(CATALOG).unwrap(), Scope::Catalog);
        // Unknown actions are dropped, not refused.
        assert_eq!(
            Scope::parse("repository:a:pull,frobnicate").unwrap(),
            Scope::Repository {
                name: name("a"),
                actions: Action::Pull.into()
            }
        );
        for bad in [
            "repository",
            "repository:a",
            "repository::pull",
            "repository:localhost:5000/a:pull",
            "repository:A:pull",
            "repository(:a:pull",
            "repository():a:pull",
            "registry:catalog:pull",
            "registry:other:*",
            "unknown:a:pull",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        let list = Scope::parse_list("repository:a:pull  registry:catalog:*").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].to_string() + " " + &list[1].to_string(),
            "repository:a:pull registry:catalog:*"
        );
        assert_eq!(list[0].needs(), vec![Need::pull(&name("a"))]);
    }

    #[test]
    fn challenge_scopes() {
        let (a, b) = (name("packs/a"), name("packs/b"));
        assert_eq!(challenge_scope(&[]), "");
        assert_eq!(
            challenge_scope(&[Need::pull(&a)]),
            "repository:packs/a:pull"
        );
        assert_eq!(
            challenge_scope(&[Need::push(&a), Need::pull(&b)]),
            "repository:packs/a:pull,push repository:packs/b:pull"
        );
        assert_eq!(
            challenge_scope(&[Need::delete(&a), Need::pull(&a), Need::Catalog]),
            "repository:packs/a:pull,delete registry:catalog:*"
        );
        assert_eq!(challenge_scope(&[Need::Catalog]), CATALOG);
    }
}
