//! The web UI's pages: typed maud templates, rendered on the server. Every value is
//! escaped by maud; the only script (`ui.js`) adds copy buttons, so every page reads
//! and works with JavaScript off.

use maud::{DOCTYPE, Markup, html};

use crate::metadata::{PackSummaryRecord, PackVersionRecord, Referrer, StorageUsage};
use crate::registry::packs::format_rfc3339;

/// The pack types, as the type filter offers them.
pub const PACK_TYPES: [&str; 4] = ["policy", "analyzer", "task", "bundle"];

/// What every page's frame shows: the title, who is signed in, and the token that
/// the sign-out form carries.
pub struct Chrome<'a> {
    /// The page's own title.
    pub title: &'a str,
    /// Whether logins exist (`auth.mode = "token"`).
    pub auth_on: bool,
    /// The signed-in account.
    pub user: Option<&'a str>,
    /// The CSRF token of the session's forms.
    pub csrf: &'a str,
}

/// The frame of every page: landmarks, navigation, skip link, sign-in state.
pub fn layout(chrome: &Chrome<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (chrome.title) " · PacksRegistry" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/ui/" { "PacksRegistry" }
                        ul {
                            li { a href="/ui/" { "Packs" } }
                            li { a href="/ui/status" { "Status" } }
                        }
                        @if chrome.auth_on {
                            div.who {
                                @if let Some(user) = chrome.user {
                                    span { "Signed in as " strong { (user) } }
                                    form method="post" action="/ui/logout" {
                                        input type="hidden" name="csrf" value=(chrome.csrf);
                                        button type="submit" { "Sign out" }
                                    }
                                } @else {
                                    a href="/ui/login" { "Sign in" }
                                }
                            }
                        }
                    }
                }
                main #main { (body) }
                footer {
                    "PacksRegistry " (env!("CARGO_PKG_VERSION")) " · "
                    a href="/packs/openapi.json" { "API (OpenAPI)" }
                }
            }
        }
    }
}

/// An error page's body.
pub fn error(status: u16, reason: &str, message: &str) -> Markup {
    html! {
        h1 { (status) " " (reason) }
        p { (message) }
        p { a href="/ui/" { "Back to the packs" } }
    }
}

/// Bytes for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A date as `2026-12-05 10:31 UTC`, in a `<time>` element.
fn when(ms: i64) -> Markup {
    let iso = format_rfc3339(ms);
    let shown = iso.get(..16).unwrap_or(&iso).replace('T', " ");
    html! { time datetime=(iso) { (shown) " UTC" } }
}

/// The query of a listing, kept in its links.
pub struct ListQuery<'a> {
    /// Search text.
    pub q: &'a str,
    /// Type filter.
    pub pack_type: Option<&'a str>,
    /// Where this page starts.
    pub cursor: Option<&'a str>,
}

impl ListQuery<'_> {
    /// `/ui/?…` continuing after `cursor`.
    fn href(&self, cursor: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            query.append_pair("q", self.q);
        }
        if let Some(t) = self.pack_type {
            query.append_pair("type", t);
        }
        if let Some(c) = cursor {
            query.append_pair("cursor", c);
        }
        let query = query.finish();
        if query.is_empty() {
            "/ui/".into()
        } else {
            format!("/ui/?{query}")
        }
    }
}

/// The pack list: search, type filter, one page of packs, and the next page's link.
pub fn pack_list(
    query: &ListQuery<'_>,
    packs: &[PackSummaryRecord],
    next: Option<&str>,
    problem: Option<&str>,
) -> Markup {
    html! {
        h1 { "Packs" }
        form.filters method="get" action="/ui/" role="search" {
            div {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(query.q) minlength="3"
                    placeholder="id, name or description" aria-describedby="q-help";
                small #q-help { "At least 3 characters." }
            }
            div {
                label for="type" { "Type" }
                select #type name="type" {
                    option value="" selected[query.pack_type.is_none()] { "All types" }
                    @for t in PACK_TYPES {
                        option value=(t) selected[query.pack_type == Some(t)] { (t) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @if let Some(problem) = problem {
            p.problem role="alert" { (problem) }
        }
        @if packs.is_empty() {
            p { "No packs match." }
        } @else {
            table.packs {
                caption.sr { "Packs, by id" }
                thead { tr {
                    th scope="col" { "Pack" }
                    th scope="col" { "Type" }
                    th scope="col" { "Latest" }
                    th scope="col" { "Description" }
                    th scope="col" { "Updated" }
                } }
                tbody {
                    @for p in packs {
                        tr {
                            td {
                                a href=(pack_href(&p.pack_id, None)) { strong { (p.name) } }
                                br; code { (p.pack_id) }
                            }
                            td { span.badge { (p.pack_type) } }
                            td { (p.latest_version) " " small { "(" (p.versions) ")" } }
                            td { (p.description) }
                            td { (when(p.updated_at)) }
                        }
                    }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if query.cursor.is_some() {
                a href=(query.href(None)) { "First page" }
            }
            @if let Some(next) = next {
                a rel="next" href=(query.href(Some(next))) { "Next page" }
            }
        }
    }
}

/// The UI's address of a pack (its latest version) or of one version.
pub fn pack_href(pack_id: &str, version: Option<&str>) -> String {
    match version {
        // `_` stands for `+` in versions, as in tags: no escaping needed.
        Some(v) => format!("/ui/packs/{pack_id}/{}", v.replace('+', "_")),
        None => format!("/ui/packs/{pack_id}"),
    }
}

/// A dependency or bundle member: a pack id and a version or requirement.
pub struct Edge {
    /// The pack.
    pub pack_id: String,
    /// Its version or semver requirement.
    pub version: String,
}

/// A copy-ready command.
pub struct Command {
    /// What it is for.
    pub label: &'static str,
    /// The command.
    pub text: String,
}

/// Everything a pack page shows.
pub struct PackPage<'a> {
    /// The version shown.
    pub shown: &'a PackVersionRecord,
    /// The latest version's number.
    pub latest: &'a str,
    /// Every version, highest first.
    pub versions: &'a [PackVersionRecord],
    /// Its dependencies.
    pub dependencies: Vec<Edge>,
    /// Its members (bundles).
    pub members: Vec<Edge>,
    /// Packs that depend on it or hold it as a member.
    pub used_by: &'a [String],
    /// Its `metadata`, flattened to text.
    pub metadata: Vec<(String, String)>,
    /// Signatures, SBOMs and other referrers of its manifest.
    pub referrers: &'a [Referrer],
    /// Commands to fetch it.
    pub commands: Vec<Command>,
    /// Whether the caller may delete versions.
    pub can_delete: bool,
}

/// A pack, one version of it in full.
pub fn pack(page: &PackPage<'_>) -> Markup {
    let v = page.shown;
    let is_latest = v.version == page.latest;
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/ui/" { "Packs" } " / " span aria-current="page" { (v.pack_id) }
        }
        h1 { (v.name) " " small { (v.version) } }
        p.sub {
            span.badge { (v.pack_type) } " "
            code { (v.pack_id) }
            @if v.prerelease { " " span.badge.pre { "prerelease" } }
            @if is_latest { " " span.badge.latest { "latest" } }
            @else { " · " a href=(pack_href(&v.pack_id, None)) { "latest is " (page.latest) } }
        }
        @if !v.description.is_empty() { p.lead { (v.description) } }
        dl.facts {
            @if !v.author.is_empty() { dt { "Author" } dd { (v.author) } }
            dt { "Published" } dd { (when(v.published_at)) }
            dt { "Content" } dd { (bytes(v.size)) ", " code { (v.content_media_type) } }
            dt { "Content digest" } dd { code.digest { (v.content_digest) } }
            dt { "Manifest" } dd {
                a href=(format!("/ui/repos/{}?ref={}", v.repository, v.manifest_digest)) {
                    code.digest { (v.manifest_digest) }
                }
            }
            @for (key, value) in &page.metadata { dt { (key) } dd { (value) } }
        }
        p {
            a.button href=(format!("{}/download", pack_href(&v.pack_id, Some(&v.version))))
                download { "Download " (v.pack_id) " " (v.version) }
            @if page.can_delete {
                " "
                a.danger href=(format!("{}/delete", pack_href(&v.pack_id, Some(&v.version)))) {
                    "Delete this version…"
                }
            }
        }
        section aria-labelledby="get" {
            h2 #get { "Get it" }
            @for (i, c) in page.commands.iter().enumerate() {
                figure.command {
                    figcaption #(format!("cmd-{i}-label")) { (c.label) }
                    pre { code #(format!("cmd-{i}")) { (c.text) } }
                    button.copy type="button" hidden data-copy=(format!("cmd-{i}"))
                        aria-describedby=(format!("cmd-{i}-label")) { "Copy" }
                }
            }
        }
        (edges("Dependencies", "deps", &page.dependencies))
        (edges("Bundle members", "members", &page.members))
        @if !page.used_by.is_empty() {
            section aria-labelledby="used-by" {
                h2 #used-by { "Used by" }
                ul {
                    @for id in page.used_by {
                        li { a href=(pack_href(id, None)) { (id) } }
                    }
                }
            }
        }
        section aria-labelledby="versions" {
            h2 #versions { "Versions" }
            table {
                thead { tr {
                    th scope="col" { "Version" }
                    th scope="col" { "Published" }
                    th scope="col" { "Size" }
                } }
                tbody {
                    @for other in page.versions {
                        tr {
                            td {
                                @if other.version == v.version {
                                    strong aria-current="page" { (other.version) }
                                } @else {
                                    a href=(pack_href(&other.pack_id, Some(&other.version))) { (other.version) }
                                }
                                @if other.prerelease { " " span.badge.pre { "prerelease" } }
                            }
                            td { (when(other.published_at)) }
                            td { (bytes(other.size)) }
                        }
                    }
                }
            }
        }
        (referrers(page.referrers))
    }
}

fn edges(title: &str, id: &str, edges: &[Edge]) -> Markup {
    html! {
        @if !edges.is_empty() {
            section aria-labelledby=(id) {
                h2 #(id) { (title) }
                ul {
                    @for e in edges {
                        li {
                            a href=(pack_href(&e.pack_id, None)) { (e.pack_id) }
                            " " code { (e.version) }
                        }
                    }
                }
            }
        }
    }
}

/// Referrers of a manifest (signatures, attestations, SBOMs).
pub fn referrers(referrers: &[Referrer]) -> Markup {
    html! {
        section aria-labelledby="referrers" {
            h2 #referrers { "Signatures, SBOMs and other referrers" }
            @if referrers.is_empty() {
                p { "None." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Artifact type" }
                        th scope="col" { "Digest" }
                        th scope="col" { "Size" }
                    } }
                    tbody {
                        @for r in referrers {
                            tr {
                                td { code { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) } }
                                td { code.digest { (r.digest) } }
                                td { (bytes(r.size)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A repository: its tags, and one manifest with its referrers.
pub fn repository(
    name: &str,
    tags: &[String],
    more_tags: bool,
    manifest: Option<(&str, &str, &str)>,
    referrers_of: Option<&[Referrer]>,
) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/ui/" { "Packs" } " / " span aria-current="page" { (name) }
        }
        h1 { "Repository " code { (name) } }
        section aria-labelledby="tags" {
            h2 #tags { "Tags" }
            @if tags.is_empty() { p { "No tags." } }
            ul.tags {
                @for t in tags {
                    li { a href=(format!("/ui/repos/{name}?ref={t}")) { code { (t) } } }
                }
            }
            @if more_tags { p { "The first " (tags.len()) " tags are shown." } }
        }
        @if let Some((reference, media_type, body)) = manifest {
            section aria-labelledby="manifest" {
                h2 #manifest { "Manifest " code { (reference) } }
                p { code { (media_type) } }
                pre.json tabindex="0" { code { (body) } }
            }
        }
        @if let Some(r) = referrers_of { (referrers(r)) }
    }
}

/// Health, readiness and storage figures.
pub fn status(
    ready: &[(&str, Option<String>)],
    usage: Option<&StorageUsage>,
    gc: Option<&crate::metadata::GcTotals>,
) -> Markup {
    html! {
        h1 { "Status" }
        section aria-labelledby="health" {
            h2 #health { "Health" }
            ul.checks {
                li { span.ok { "OK" } " The server answers." }
                @for (name, error) in ready {
                    li {
                        @if let Some(e) = error {
                            span.bad { "Not ready" } " " (name) ": " (e)
                        } @else {
                            span.ok { "Ready" } " " (name)
                        }
                    }
                }
            }
        }
        @if let Some(u) = usage {
            section aria-labelledby="storage" {
                h2 #storage { "Storage" }
                dl.facts {
                    dt { "Blobs" } dd { (u.total.blobs) " (" (bytes(u.total.blob_bytes)) ")" }
                    dt { "Manifests" } dd { (u.total.manifests) " (" (bytes(u.total.manifest_bytes)) ")" }
                    dt { "Repositories" } dd { (u.repository_count) }
                }
                @if !u.repositories.is_empty() {
                    table {
                        caption { "Largest repositories you may see" }
                        thead { tr {
                            th scope="col" { "Repository" }
                            th scope="col" { "Blobs" }
                            th scope="col" { "Manifests" }
                        } }
                        tbody {
                            @for r in &u.repositories {
                                tr {
                                    td { a href=(format!("/ui/repos/{}", r.repo)) { code { (r.repo) } } }
                                    td { (r.blobs) " (" (bytes(r.blob_bytes)) ")" }
                                    td { (r.manifests) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(g) = gc {
            section aria-labelledby="gc" {
                h2 #gc { "Garbage collection" }
                @if g.runs == 0 {
                    p { "No collection has run yet." }
                } @else {
                    dl.facts {
                        dt { "Runs" } dd { (g.runs) }
                        dt { "Last run" } dd { (when(g.sums.finished_at)) }
                        dt { "Removed" } dd {
                            (g.sums.manifests) " manifests, " (g.sums.blobs) " blobs, "
                            (bytes(g.sums.reclaimed_bytes)) " reclaimed"
                        }
                    }
                }
            }
        }
    }
}

/// The sign-in form.
pub fn login(problem: Option<&str>, username: &str) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem { p.problem role="alert" { (problem) } }
        form.login method="post" action="/ui/login" {
            div {
                label for="username" { "Username" }
                input #username name="username" autocomplete="username" required value=(username);
            }
            div {
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
            }
            button type="submit" { "Sign in" }
        }
        p { "Robots and tokens sign in with their clients; this form is for accounts with a password." }
    }
}

/// The confirmation before deleting a version.
pub fn confirm_delete(v: &PackVersionRecord, csrf: &str) -> Markup {
    let href = pack_href(&v.pack_id, Some(&v.version));
    html! {
        h1 { "Delete " (v.pack_id) " " (v.version) "?" }
        p {
            "The version's tag and index entry go now; its bytes go with the next garbage "
            "collection unless another version or repository uses them. TaskRunners that "
            "pinned this version will no longer find it."
        }
        form method="post" action=(format!("{href}/delete")) {
            input type="hidden" name="csrf" value=(csrf);
            button.danger type="submit" { "Delete " (v.version) }
            " "
            a href=(href) { "Cancel" }
        }
    }
}

/// The stylesheet.
pub const STYLE: &str = include_str!("style.css");
/// The script (copy buttons).
pub const SCRIPT: &str = include_str!("ui.js");

/// Pretty-printed JSON, or the text as it is when it is not JSON.
pub fn pretty_json(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}
