//! The behavioural suite every [`MetadataStore`] backend runs, in the manner of
//! distribution's storage driver testsuites and Garage's `db/test.rs`.
//!
//! Each case is an `async fn(&dyn MetadataStore)` checking one part of the contract
//! written on the traits, against a freshly migrated, empty store. [`metadata_suite!`]
//! turns every case into a `#[tokio::test]` for one backend; the backends' runs are at
//! the bottom of this file. SQLite always runs (a file and `sqlite::memory:`);
//! PostgreSQL runs when `PACKS_TEST_POSTGRES_URL` is set, each test in a database of
//! its own.

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use super::{
    BlobBytes, BoxError, GcRunRecord, GcTotals, ManifestRecord, MetadataError, MetadataStore,
    PackFilter, PackVersionRecord, Page, ReferenceKind, Referrer, SessionCap, SessionCaps,
    UploadRecord, UsageRecord, now_millis,
};
use crate::digest::{Algorithm, Digest};
use crate::names::{RepoName, Tag};
use crate::storage::PartInfo;

/// What the suite reads beyond the traits: rows they do not expose.
#[async_trait]
pub(crate) trait Inspect: MetadataStore {
    /// Number of `manifest_references` rows in `repo`.
    async fn reference_rows(&self, repo: &str) -> i64;

    /// Brings the planner's statistics up to date, as autovacuum would after a while.
    async fn analyze(&self);

    /// Whether one collector at a time is enforced (see `CollectIndex::collector_lock`).
    fn orders_collectors(&self) -> bool;

    /// Sets the push time of every manifest, and the link time of every blob link, of
    /// `repo` to `at` (ms since the epoch): rows as old as a test needs.
    async fn backdate(&self, repo: &str, at: i64);
}

// ---------------------------------------------------------------------------------
// Helpers

/// The blob store as these cases see it: every blob's bytes present, deletes
/// recorded (see [`BlobBytes`]).
#[derive(Default)]
pub(crate) struct StoredBytes {
    /// Digests whose bytes are absent.
    pub absent: std::sync::Mutex<std::collections::HashSet<Digest>>,
    /// Digests deleted, in order.
    pub deleted: std::sync::Mutex<Vec<Digest>>,
}

#[async_trait]
impl BlobBytes for StoredBytes {
    async fn present(&self, digest: &Digest) -> Result<bool, BoxError> {
        Ok(!self.absent.lock().unwrap().contains(digest))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BoxError> {
        self.absent.lock().unwrap().insert(digest.clone());
        self.deleted.lock().unwrap().push(digest.clone());
        Ok(())
    }
}

/// Bytes always present, for cases about something else.
pub(crate) static PRESENT: std::sync::LazyLock<StoredBytes> =
    std::sync::LazyLock::new(StoredBytes::default);

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("valid repository name")
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).expect("valid tag")
}

fn tags(names: &[&str]) -> Vec<Tag> {
    names.iter().map(|n| tag(n)).collect()
}

fn blob(seed: &str) -> Digest {
    Digest::of(Algorithm::Sha256, format!("blob {seed}").as_bytes())
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image manifest whose body (and so digest) is unique to `seed`.
fn manifest(seed: &str) -> ManifestRecord {
    let body = format!(r#"{{"schemaVersion":2,"mediaType":"{IMAGE}","seed":"{seed}"}}"#);
    ManifestRecord {
        digest: Digest::of(Algorithm::Sha256, body.as_bytes()),
        media_type: IMAGE.to_owned(),
        artifact_type: Some("application/vnd.stellaops.pack.policy.v1".to_owned()),
        subject: None,
        annotations: Some(r#"{"org.opencontainers.image.title":"x"}"#.to_owned()),
        body: Bytes::from(body),
        created_at: 1_700_000_000_000,
    }
}

/// A manifest referring to `subject`, of `artifact_type`.
fn referrer(seed: &str, subject: &Digest, artifact_type: Option<&str>) -> ManifestRecord {
    ManifestRecord {
        subject: Some(subject.clone()),
        artifact_type: artifact_type.map(str::to_owned),
        annotations: None,
        ..manifest(seed)
    }
}

fn refs(seed: &str) -> Vec<(Digest, ReferenceKind)> {
    vec![
        (blob(&format!("{seed} config")), ReferenceKind::Config),
        (blob(&format!("{seed} layer 0")), ReferenceKind::Layer),
        (blob(&format!("{seed} layer 1")), ReferenceKind::Layer),
    ]
}

/// `refs(seed)`'s blobs as a publish links them, `(digest, size)`.
fn ref_links(seed: &str) -> Vec<(Digest, u64)> {
    refs(seed).into_iter().map(|(d, _)| (d, 10)).collect()
}

/// Links `refs(seed)`'s blobs into `r`, as a push does before the manifest that
/// refers to them.
async fn link_refs(s: &dyn MetadataStore, r: &RepoName, seed: &str) {
    for (d, size) in ref_links(seed) {
        s.link_blob(r, &d, size, &*PRESENT)
            .await
            .expect("link_blob");
    }
}

fn page(items: &[&str], more: bool) -> Page<String> {
    Page {
        items: items.iter().map(|s| s.to_string()).collect(),
        more,
    }
}

fn as_referrer(m: &ManifestRecord) -> Referrer {
    Referrer {
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        size: m.body.len() as u64,
        artifact_type: m.artifact_type.clone(),
        annotations: m.annotations.clone(),
    }
}

/// No cap on open upload sessions.
const NO_CAPS: SessionCaps = SessionCaps {
    total: 0,
    per_repository: 0,
};

fn upload(repo_name: &str) -> UploadRecord {
    UploadRecord {
        id: Uuid::new_v4(),
        repo: repo(repo_name),
        offset: 0,
        hash_state: b"sha256:\x00\x01\xfe\xff state".to_vec(),
        parts: vec![],
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
    }
}

/// `upload` after a chunk of `size` bytes stored as part `id`.
fn advanced(upload: &UploadRecord, id: &str, size: u64) -> UploadRecord {
    let mut next = upload.clone();
    next.offset += size;
    next.parts.push(PartInfo {
        id: id.to_owned(),
        size,
    });
    next.hash_state.extend_from_slice(id.as_bytes());
    next.updated_at += 1000;
    next
}

/// Puts `m` into `r` with no references and `tag_names`.
async fn put(s: &dyn MetadataStore, r: &RepoName, m: &ManifestRecord, tag_names: &[&str]) {
    s.put_manifest(r, m, &[], &tags(tag_names), &[])
        .await
        .expect("put_manifest");
}

async fn by_tag(s: &dyn MetadataStore, r: &RepoName, t: &str) -> Option<Digest> {
    s.get_manifest_by_tag(r, &tag(t))
        .await
        .expect("get_manifest_by_tag")
        .map(|m| m.digest)
}

/// Every tag of `r`, read in pages of `n`, checking `more` on the way.
async fn all_tags(s: &dyn MetadataStore, r: &RepoName, n: u32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let p = s
            .list_tags(r, out.last().map(String::as_str), n)
            .await
            .unwrap();
        assert!(p.items.len() <= n as usize, "page longer than {n}: {p:?}");
        out.extend(p.items.iter().cloned());
        if !p.more {
            return out;
        }
        assert_eq!(
            p.items.len(),
            n as usize,
            "a page with more after it is full"
        );
    }
}

// ---------------------------------------------------------------------------------
// Cases: blobs and repositories

/// `link_blob` makes a blob visible in one repository (and its size known globally);
/// `unlink_blob` removes the link only from that repository.
pub(crate) async fn link_and_unlink_blobs(s: &dyn MetadataStore) {
    let (a, b) = (repo("library/a"), repo("library/b"));
    let d = blob("one");
    let big = blob("big");
    assert_eq!(s.blob_in_repo(&a, &d).await.unwrap(), None);
    assert_eq!(s.blob_size(&d).await.unwrap(), None);

    s.link_blob(&a, &d, 42, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    s.link_blob(&a, &d, 42, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap(); // idempotent
    assert_eq!(s.blob_in_repo(&a, &d).await.unwrap(), Some(42));
    assert_eq!(s.blob_size(&d).await.unwrap(), Some(42));
    assert_eq!(
        s.blob_in_repo(&b, &d).await.unwrap(),
        None,
        "linked into a only"
    );

    // Sizes past 4 GiB survive the round trip.
    let five_gib = 5 * 1024 * 1024 * 1024;
    s.link_blob(&b, &big, five_gib, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    assert_eq!(s.blob_in_repo(&b, &big).await.unwrap(), Some(five_gib));
    assert_eq!(s.blob_size(&big).await.unwrap(), Some(five_gib));

    // A cross-repository mount links the same blob into b.
    s.link_blob(&b, &d, 42, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    assert_eq!(s.blob_in_repo(&b, &d).await.unwrap(), Some(42));

    assert!(s.unlink_blob(&a, &d).await.unwrap());
    assert!(
        !s.unlink_blob(&a, &d).await.unwrap(),
        "second unlink finds nothing"
    );
    assert_eq!(s.blob_in_repo(&a, &d).await.unwrap(), None);
    assert_eq!(
        s.blob_in_repo(&b, &d).await.unwrap(),
        Some(42),
        "b keeps its link"
    );
    assert_eq!(s.blob_size(&d).await.unwrap(), Some(42), "still known in b");
    assert!(!s.unlink_blob(&repo("never/seen"), &d).await.unwrap());

    // Linking again after an unlink works.
    s.link_blob(&a, &d, 42, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    assert_eq!(s.blob_in_repo(&a, &d).await.unwrap(), Some(42));
}

/// A repository exists once a blob is linked or a manifest put into it.
pub(crate) async fn repositories_come_into_being(s: &dyn MetadataStore) {
    let (a, b, c) = (repo("team/a"), repo("team/b"), repo("team/c"));
    for r in [&a, &b, &c] {
        assert!(!s.repository_exists(r).await.unwrap());
    }
    s.link_blob(&a, &blob("x"), 1, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    put(s, &b, &manifest("m"), &[]).await;
    assert!(s.repository_exists(&a).await.unwrap());
    assert!(s.repository_exists(&b).await.unwrap());
    assert!(!s.repository_exists(&c).await.unwrap());
    assert!(
        !s.repository_exists(&repo("team")).await.unwrap(),
        "no prefix match"
    );
}

/// The catalog is in byte order and pages by `n` and `last`, `more` telling exactly
/// whether names follow.
pub(crate) async fn list_repositories_pages(s: &dyn MetadataStore) {
    assert_eq!(
        s.list_repositories(None, 10).await.unwrap(),
        page(&[], false)
    );
    // Byte order: '-' < '.' < '/' < '0' < '_' < 'b'; a linguistic collation differs.
    let names = ["a_b", "b", "a0", "a", "a/b", "a.b", "a-b"];
    for (i, name) in names.iter().enumerate() {
        if i % 2 == 0 {
            s.link_blob(
                &repo(name),
                &blob(name),
                1,
                &*crate::metadata::suite::PRESENT,
            )
            .await
            .unwrap();
        } else {
            put(s, &repo(name), &manifest(name), &["latest"]).await;
        }
    }
    let sorted = ["a", "a-b", "a.b", "a/b", "a0", "a_b", "b"];
    assert_eq!(
        s.list_repositories(None, 100).await.unwrap(),
        page(&sorted, false)
    );
    assert_eq!(
        s.list_repositories(None, 7).await.unwrap(),
        page(&sorted, false)
    );
    assert_eq!(
        s.list_repositories(None, 6).await.unwrap(),
        page(&sorted[..6], true)
    );
    assert_eq!(
        s.list_repositories(None, 3).await.unwrap(),
        page(&sorted[..3], true)
    );
    assert_eq!(
        s.list_repositories(Some("a.b"), 3).await.unwrap(),
        page(&["a/b", "a0", "a_b"], true)
    );
    assert_eq!(
        s.list_repositories(Some("a_b"), 3).await.unwrap(),
        page(&["b"], false)
    );
    assert_eq!(
        s.list_repositories(Some("a_b"), 1).await.unwrap(),
        page(&["b"], false),
        "a page that ends exactly at the end has no more"
    );
    // `last` need not exist.
    assert_eq!(
        s.list_repositories(Some("a/a"), 2).await.unwrap(),
        page(&["a/b", "a0"], true)
    );
    assert_eq!(
        s.list_repositories(Some("b"), 5).await.unwrap(),
        page(&[], false)
    );
    assert_eq!(
        s.list_repositories(Some("zzz"), 5).await.unwrap(),
        page(&[], false)
    );
}

// ---------------------------------------------------------------------------------
// Cases: manifests and tags

/// A manifest reads back exactly, by digest and by each of its tags, only in its
/// repository.
pub(crate) async fn put_and_get_manifests(s: &dyn MetadataStore) {
    let (r, other) = (repo("packs/policy-a"), repo("packs/policy-b"));
    let m = manifest("one");
    assert_eq!(s.get_manifest(&r, &m.digest).await.unwrap(), None);
    link_refs(s, &r, "one").await;
    s.put_manifest(&r, &m, &refs("one"), &tags(&["v1", "latest"]), &[])
        .await
        .unwrap();
    assert_eq!(
        s.get_manifest(&r, &m.digest).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.get_manifest_by_tag(&r, &tag("v1")).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.get_manifest_by_tag(&r, &tag("latest")).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(s.get_manifest_by_tag(&r, &tag("v2")).await.unwrap(), None);
    assert_eq!(s.get_manifest(&other, &m.digest).await.unwrap(), None);
    assert_eq!(
        s.get_manifest_by_tag(&other, &tag("v1")).await.unwrap(),
        None
    );
    assert_eq!(s.get_manifest(&r, &blob("nope")).await.unwrap(), None);

    // Optional fields absent, a subject, and a large body of arbitrary bytes.
    let mut bare = referrer("two", &m.digest, None);
    bare.media_type = "application/vnd.oci.image.index.v1+json".to_owned();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    bare.digest = Digest::of(Algorithm::Sha512, &body);
    bare.body = Bytes::from(body);
    bare.created_at = i64::from(u32::MAX) * 1000;
    s.put_manifest(&r, &bare, &[], &[], &[]).await.unwrap();
    assert_eq!(s.get_manifest(&r, &bare.digest).await.unwrap(), Some(bare));

    // The same manifest in another repository is a separate record.
    put(s, &other, &m, &["other"]).await;
    assert_eq!(
        s.get_manifest(&other, &m.digest).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(by_tag(s, &other, "v1").await, None);
    assert_eq!(by_tag(s, &r, "other").await, None);
}

/// Re-putting a digest changes nothing but its tags; a tag put on another manifest
/// moves there.
pub(crate) async fn put_manifest_is_idempotent_and_moves_tags(s: &dyn MetadataStore) {
    let r = repo("packs/moving");
    let (m1, m2) = (manifest("m1"), manifest("m2"));
    link_refs(s, &r, "m1").await;
    link_refs(s, &r, "m2").await;
    s.put_manifest(&r, &m1, &refs("m1"), &tags(&["latest", "v1"]), &[])
        .await
        .unwrap();
    s.put_manifest(&r, &m2, &refs("m2"), &tags(&["latest", "v2"]), &[])
        .await
        .unwrap();
    assert_eq!(by_tag(s, &r, "latest").await, Some(m2.digest.clone()));
    assert_eq!(by_tag(s, &r, "v1").await, Some(m1.digest.clone()));
    assert_eq!(by_tag(s, &r, "v2").await, Some(m2.digest.clone()));

    // Re-put m1: idempotent, and `latest` moves back.
    s.put_manifest(&r, &m1, &refs("m1"), &tags(&["latest"]), &[])
        .await
        .unwrap();
    assert_eq!(by_tag(s, &r, "latest").await, Some(m1.digest.clone()));
    assert_eq!(
        s.get_manifest(&r, &m1.digest).await.unwrap(),
        Some(m1.clone())
    );
    assert_eq!(
        s.get_manifest(&r, &m2.digest).await.unwrap(),
        Some(m2.clone())
    );
    assert_eq!(all_tags(s, &r, 10).await, ["latest", "v1", "v2"]);

    // No tags, and a tag listed twice, are both fine.
    s.put_manifest(&r, &m2, &refs("m2"), &[], &[])
        .await
        .unwrap();
    s.put_manifest(&r, &m2, &refs("m2"), &tags(&["v3", "v3"]), &[])
        .await
        .unwrap();
    assert_eq!(by_tag(s, &r, "v3").await, Some(m2.digest.clone()));
    assert_eq!(all_tags(s, &r, 10).await, ["latest", "v1", "v2", "v3"]);
}

/// Deleting a tag leaves its manifest (and other tags) in place.
pub(crate) async fn delete_tag_keeps_manifest(s: &dyn MetadataStore) {
    let r = repo("packs/tags");
    let m = manifest("m");
    put(s, &r, &m, &["a", "b"]).await;
    assert!(s.delete_tag(&r, &tag("a")).await.unwrap());
    assert!(!s.delete_tag(&r, &tag("a")).await.unwrap());
    assert_eq!(by_tag(s, &r, "a").await, None);
    assert_eq!(by_tag(s, &r, "b").await, Some(m.digest.clone()));
    assert_eq!(all_tags(s, &r, 10).await, ["b"]);
    assert!(s.delete_tag(&r, &tag("b")).await.unwrap());
    assert_eq!(all_tags(s, &r, 10).await, Vec::<String>::new());
    assert_eq!(
        s.get_manifest(&r, &m.digest).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.manifest_sizes(&r, std::slice::from_ref(&m.digest))
            .await
            .unwrap(),
        [Some(m.body.len() as u64)]
    );
    assert!(!s.delete_tag(&repo("packs/none"), &tag("b")).await.unwrap());
}

/// Deleting a manifest removes its tags and its references, nothing else.
pub(crate) async fn delete_manifest_removes_tags_and_references(s: &dyn Inspect) {
    let r = repo("packs/deleting");
    let (m1, m2) = (manifest("m1"), manifest("m2"));
    link_refs(s, &r, "m1").await;
    link_refs(s, &r, "m2").await;
    s.put_manifest(&r, &m1, &refs("m1"), &tags(&["v1", "latest"]), &[])
        .await
        .unwrap();
    s.put_manifest(&r, &m2, &refs("m2")[..2], &tags(&["v2"]), &[])
        .await
        .unwrap();
    assert_eq!(s.reference_rows(r.as_str()).await, 5);
    // Re-putting does not duplicate references.
    s.put_manifest(&r, &m1, &refs("m1"), &[], &[])
        .await
        .unwrap();
    assert_eq!(s.reference_rows(r.as_str()).await, 5);

    assert!(s.delete_manifest(&r, &m1.digest).await.unwrap());
    assert!(!s.delete_manifest(&r, &m1.digest).await.unwrap());
    assert_eq!(s.get_manifest(&r, &m1.digest).await.unwrap(), None);
    assert_eq!(by_tag(s, &r, "v1").await, None);
    assert_eq!(by_tag(s, &r, "latest").await, None);
    assert_eq!(all_tags(s, &r, 10).await, ["v2"]);
    assert_eq!(
        s.reference_rows(r.as_str()).await,
        2,
        "m1's references are gone"
    );
    assert_eq!(
        s.manifest_sizes(&r, &[m1.digest.clone(), m2.digest.clone()])
            .await
            .unwrap(),
        [None, Some(m2.body.len() as u64)]
    );
    // The blobs stay linked: garbage collection decides about them.
    for (d, _) in refs("m1") {
        assert_eq!(s.blob_in_repo(&r, &d).await.unwrap(), Some(10));
    }
    assert!(
        !s.delete_manifest(&repo("packs/none"), &m2.digest)
            .await
            .unwrap()
    );

    // It can be pushed again, references and all.
    s.put_manifest(&r, &m1, &refs("m1"), &tags(&["v1"]), &[])
        .await
        .unwrap();
    assert_eq!(s.reference_rows(r.as_str()).await, 5);
    assert_eq!(by_tag(s, &r, "v1").await, Some(m1.digest.clone()));
}

/// Tags list in byte order (not a linguistic or numeric one) and page by `n` and `last`.
pub(crate) async fn list_tags_byte_order_and_pages(s: &dyn Inspect) {
    let r = repo("packs/ordered");
    assert_eq!(s.list_tags(&r, None, 10).await.unwrap(), page(&[], false));
    let names = [
        "b",
        "a",
        "B",
        "1.9",
        "1.10",
        "_x",
        "A-b",
        "latest",
        "v1.0.0-rc.1",
    ];
    for (i, name) in names.iter().enumerate() {
        put(s, &r, &manifest(&format!("m{}", i % 3)), &[name]).await;
    }
    put(s, &repo("packs/elsewhere"), &manifest("e"), &["0", "zz"]).await;

    let sorted = [
        "1.10",
        "1.9",
        "A-b",
        "B",
        "_x",
        "a",
        "b",
        "latest",
        "v1.0.0-rc.1",
    ];
    let mut by_bytes: Vec<&str> = names.to_vec();
    by_bytes.sort_unstable();
    assert_eq!(by_bytes, sorted);
    assert_eq!(
        s.list_tags(&r, None, 100).await.unwrap(),
        page(&sorted, false)
    );
    assert_eq!(
        s.list_tags(&r, None, 9).await.unwrap(),
        page(&sorted, false)
    );
    assert_eq!(
        s.list_tags(&r, None, 2).await.unwrap(),
        page(&sorted[..2], true)
    );
    assert_eq!(
        s.list_tags(&r, Some("1.9"), 3).await.unwrap(),
        page(&["A-b", "B", "_x"], true)
    );
    assert_eq!(
        s.list_tags(&r, Some("b"), 2).await.unwrap(),
        page(&["latest", "v1.0.0-rc.1"], false)
    );
    assert_eq!(
        s.list_tags(&r, Some("Z"), 1).await.unwrap(),
        page(&["_x"], true),
        "`last` need not exist"
    );
    assert_eq!(
        s.list_tags(&r, Some("v2"), 3).await.unwrap(),
        page(&[], false)
    );
    for n in [1, 2, 3, 4, 8, 9, 10] {
        assert_eq!(all_tags(s, &r, n).await, sorted, "pages of {n}");
    }

    // Long pages (PostgreSQL reads those in no order first, then pages again in
    // order when more than the page remains). The tags are pushed as 150 manifests of
    // 10 tags each, the tens in shuffled order, so that they lie out of order in the
    // table; with fresh statistics PostgreSQL then reads them in that order.
    let many = repo("packs/many");
    let mut names: Vec<String> = Vec::new();
    for push in 0..150u32 {
        let tens = push * 7 % 150;
        let batch: Vec<String> = (0..10).map(|i| format!("t{:04}", tens * 10 + i)).collect();
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        put(s, &many, &manifest(&format!("many{push}")), &refs).await;
        names.extend(batch);
    }
    s.analyze().await;
    let mut sorted: Vec<String> = names.clone();
    sorted.sort_unstable();
    let whole = s.list_tags(&many, None, 1_500).await.unwrap();
    assert_eq!(
        (whole.items.as_slice(), whole.more),
        (sorted.as_slice(), false)
    );
    let first = s.list_tags(&many, None, 1_200).await.unwrap();
    assert_eq!(
        (first.items.as_slice(), first.more),
        (&sorted[..1_200], true)
    );
    let rest = s.list_tags(&many, Some("t0999"), 1_000).await.unwrap();
    assert_eq!(
        (rest.items.as_slice(), rest.more),
        (&sorted[1_000..], false)
    );
    let middle = s.list_tags(&many, Some("t0099"), 1_000).await.unwrap();
    assert_eq!(
        (middle.items.as_slice(), middle.more),
        (&sorted[100..1_100], true)
    );
    assert_eq!(all_tags(s, &many, 1_000).await, sorted, "pages of 1000");
    assert_eq!(
        s.list_tags(&repo("packs/none"), None, 10).await.unwrap(),
        page(&[], false)
    );
}

/// Referrers of a subject, in digest order, filtered by artifact type, paged.
pub(crate) async fn referrers_by_subject(s: &dyn MetadataStore) {
    let (r, other) = (repo("packs/signed"), repo("packs/other"));
    let target = manifest("target");
    put(s, &r, &target, &["v1"]).await;
    let subject = target.digest.clone();
    let sig = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let sbom = "application/spdx+json";

    assert_eq!(
        s.list_referrers(&r, &subject, None, None, 10)
            .await
            .unwrap(),
        Page {
            items: vec![],
            more: false
        }
    );
    let mut signatures: Vec<ManifestRecord> = (0..3)
        .map(|i| referrer(&format!("sig{i}"), &subject, Some(sig)))
        .collect();
    let sbom_m = referrer("sbom", &subject, Some(sbom));
    let untyped = referrer("untyped", &subject, None);
    for m in signatures.iter().chain([&sbom_m, &untyped]) {
        put(s, &r, m, &[]).await;
    }
    // Not listed: another subject, the same subject in another repository.
    put(
        s,
        &r,
        &referrer("elsewhere", &blob("other subject"), Some(sig)),
        &[],
    )
    .await;
    put(s, &other, &referrer("other repo", &subject, Some(sig)), &[]).await;

    let mut all: Vec<ManifestRecord> = signatures
        .iter()
        .cloned()
        .chain([sbom_m.clone(), untyped.clone()])
        .collect();
    all.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
    signatures.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
    let listed = |ms: &[ManifestRecord]| ms.iter().map(as_referrer).collect::<Vec<_>>();

    let p = s
        .list_referrers(&r, &subject, None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&all),
            more: false
        }
    );
    let p = s
        .list_referrers(&r, &subject, Some(sig), None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&signatures),
            more: false
        }
    );
    let p = s
        .list_referrers(&r, &subject, Some(sbom), None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(std::slice::from_ref(&sbom_m)),
            more: false
        }
    );
    let p = s
        .list_referrers(&r, &subject, Some("application/none"), None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: vec![],
            more: false
        }
    );

    // Pages.
    let p = s.list_referrers(&r, &subject, None, None, 2).await.unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&all[..2]),
            more: true
        }
    );
    let last = all[1].digest.as_str();
    let p = s
        .list_referrers(&r, &subject, None, Some(last), 2)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&all[2..4]),
            more: true
        }
    );
    let last = all[3].digest.as_str();
    let p = s
        .list_referrers(&r, &subject, None, Some(last), 2)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&all[4..]),
            more: false
        }
    );
    let first = signatures[0].digest.as_str();
    let p = s
        .list_referrers(&r, &subject, Some(sig), Some(first), 1)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&signatures[1..2]),
            more: true
        }
    );
    let p = s
        .list_referrers(&r, &subject, Some(sig), Some(first), 2)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&signatures[1..]),
            more: false
        }
    );

    // An unknown subject or repository has no referrers, and is no error.
    let p = s
        .list_referrers(&r, &blob("unknown"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: vec![],
            more: false
        }
    );
    let p = s
        .list_referrers(&repo("packs/none"), &subject, None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: vec![],
            more: false
        }
    );

    // A deleted referrer is no longer listed.
    assert!(s.delete_manifest(&r, &all[0].digest).await.unwrap());
    let p = s
        .list_referrers(&r, &subject, None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        p,
        Page {
            items: listed(&all[1..]),
            more: false
        }
    );
}

/// `linked_blob_sizes` and `manifest_sizes` answer for one repository, in input order,
/// with the sizes recorded.
pub(crate) async fn blob_and_manifest_sizes(s: &dyn MetadataStore) {
    let (r, other) = (repo("packs/missing"), repo("packs/elsewhere"));
    let (b1, b2, b3, b4) = (blob("1"), blob("2"), blob("3"), blob("4"));
    s.link_blob(&r, &b1, 1, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    s.link_blob(&r, &b2, 2, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    s.link_blob(&other, &b3, 3, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    assert_eq!(s.linked_blob_sizes(&r, &[]).await.unwrap(), []);
    assert_eq!(
        s.linked_blob_sizes(
            &r,
            &[b4.clone(), b1.clone(), b3.clone(), b2.clone(), b1.clone()]
        )
        .await
        .unwrap(),
        [None, Some(1), None, Some(2), Some(1)]
    );
    assert_eq!(
        s.linked_blob_sizes(&repo("packs/none"), std::slice::from_ref(&b1))
            .await
            .unwrap(),
        [None]
    );
    // Sizes beyond 4 GiB come back whole.
    let big = blob("big");
    s.link_blob(&r, &big, 5 << 32, &*crate::metadata::suite::PRESENT)
        .await
        .unwrap();
    assert_eq!(
        s.linked_blob_sizes(&r, std::slice::from_ref(&big))
            .await
            .unwrap(),
        [Some(5 << 32)]
    );

    let (m1, m2) = (manifest("1"), manifest("2"));
    put(s, &r, &m1, &[]).await;
    put(s, &other, &m2, &[]).await;
    assert_eq!(s.manifest_sizes(&r, &[]).await.unwrap(), []);
    assert_eq!(
        s.manifest_sizes(&r, &[m2.digest.clone(), m1.digest.clone(), b1.clone()])
            .await
            .unwrap(),
        [None, Some(m1.body.len() as u64), None],
        "a blob is not a manifest; another repository's manifest is not this one's"
    );
}

// ---------------------------------------------------------------------------------
// Cases: uploads

/// An upload session is created, read back only in its repository, advanced by
/// compare-and-swap on its offset, and deleted.
pub(crate) async fn upload_sessions(s: &dyn MetadataStore) {
    let u = upload("packs/uploading");
    let r = u.repo.clone();
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), None);
    s.create_upload(&u, NO_CAPS).await.unwrap();
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(
        s.get_upload(&repo("packs/other"), u.id).await.unwrap(),
        None
    );
    assert_eq!(s.get_upload(&r, Uuid::new_v4()).await.unwrap(), None);

    let u1 = advanced(&u, "000000.a", 100);
    s.update_upload(&u1, 0).await.unwrap();
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), Some(u1.clone()));

    // A writer that still believes the offset is 0 loses.
    let stale = advanced(&u, "000000.b", 7);
    assert!(matches!(
        s.update_upload(&stale, 0).await,
        Err(MetadataError::Conflict)
    ));
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), Some(u1.clone()));

    // Offsets past 4 GiB.
    let u2 = advanced(&u1, "000001.c", 5 * 1024 * 1024 * 1024);
    s.update_upload(&u2, 100).await.unwrap();
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), Some(u2.clone()));

    // Sessions are independent.
    let v = upload("packs/uploading");
    s.create_upload(&v, NO_CAPS).await.unwrap();
    assert_eq!(s.get_upload(&r, v.id).await.unwrap(), Some(v.clone()));
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), Some(u2.clone()));

    assert!(s.delete_upload(u.id).await.unwrap());
    assert!(!s.delete_upload(u.id).await.unwrap());
    assert_eq!(s.get_upload(&r, u.id).await.unwrap(), None);
    assert!(matches!(
        s.update_upload(&advanced(&u2, "000002.d", 1), u2.offset)
            .await,
        Err(MetadataError::Conflict)
    ));
    assert_eq!(s.get_upload(&r, v.id).await.unwrap(), Some(v));
}

/// A session is refused, storing nothing, when its repository or the whole registry
/// holds as many open sessions as its cap; the per-repository cap is named when both
/// are reached; room made by a deleted session is used again; 0 is no cap.
pub(crate) async fn upload_session_caps(s: &dyn MetadataStore) {
    let caps = SessionCaps {
        total: 5,
        per_repository: 3,
    };
    let mut in_a = Vec::new();
    for _ in 0..3 {
        let u = upload("capped/a");
        s.create_upload(&u, caps).await.unwrap();
        in_a.push(u);
    }
    let refused = upload("capped/a");
    let e = s.create_upload(&refused, caps).await.unwrap_err();
    assert!(
        matches!(e, MetadataError::CapReached(SessionCap::PerRepository)),
        "{e:?}"
    );
    assert_eq!(s.get_upload(&refused.repo, refused.id).await.unwrap(), None);
    for _ in 0..2 {
        s.create_upload(&upload("capped/b"), caps).await.unwrap();
    }
    let e = s
        .create_upload(&upload("capped/c"), caps)
        .await
        .unwrap_err();
    assert!(
        matches!(e, MetadataError::CapReached(SessionCap::Total)),
        "{e:?}"
    );
    let e = s
        .create_upload(&upload("capped/a"), caps)
        .await
        .unwrap_err();
    assert!(
        matches!(e, MetadataError::CapReached(SessionCap::PerRepository)),
        "{e:?}"
    );
    assert!(s.delete_upload(in_a[0].id).await.unwrap());
    s.create_upload(&upload("capped/c"), caps).await.unwrap();
    let only_total = SessionCaps {
        total: 6,
        per_repository: 0,
    };
    s.create_upload(&upload("capped/a"), only_total)
        .await
        .unwrap();
    let e = s
        .create_upload(&upload("capped/a"), only_total)
        .await
        .unwrap_err();
    assert!(
        matches!(e, MetadataError::CapReached(SessionCap::Total)),
        "{e:?}"
    );
    for _ in 0..5 {
        s.create_upload(&upload("capped/a"), NO_CAPS).await.unwrap();
    }
    assert_eq!(s.stale_uploads(i64::MAX, 100).await.unwrap().len(), 11);
}

/// Of two writers advancing a session from the same offset at once, exactly one wins.
pub(crate) async fn concurrent_upload_updates(s: &dyn MetadataStore) {
    for round in 0..5 {
        let u = upload("packs/racing");
        s.create_upload(&u, NO_CAPS).await.unwrap();
        let attempts: Vec<UploadRecord> = (0..4)
            .map(|i| advanced(&u, &format!("000000.{round}{i}"), 10 + i))
            .collect();
        let results =
            futures_util::future::join_all(attempts.iter().map(|a| s.update_upload(a, 0))).await;
        let mut won = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(()) => {
                    assert!(won.is_none(), "two writers won the same offset");
                    won = Some(i);
                }
                Err(MetadataError::Conflict) => {}
                Err(e) => panic!("expected Ok or Conflict, got {e:?}"),
            }
        }
        let won = won.expect("one writer wins");
        assert_eq!(
            s.get_upload(&u.repo, u.id).await.unwrap(),
            Some(attempts[won].clone())
        );
    }
}

/// Concurrent pushes into one new repository, with tags given in different orders,
/// all succeed.
pub(crate) async fn concurrent_pushes(s: &dyn MetadataStore) {
    for round in 0..3 {
        let r = repo(&format!("packs/busy{round}"));
        let ms: Vec<ManifestRecord> = (0..6).map(|i| manifest(&format!("{round}/{i}"))).collect();
        let tag_sets: Vec<Vec<Tag>> = (0..6)
            .map(|i| {
                let mut t = tags(&["latest", "stable", "v1"]);
                t.rotate_left(i % 3);
                if i % 2 == 1 {
                    t.reverse();
                }
                t.push(tag(&format!("only{i}")));
                t
            })
            .collect();
        let pushes = ms
            .iter()
            .zip(&tag_sets)
            .map(|(m, t)| s.put_manifest(&r, m, &[], t, &[]));
        let shared = [blob("shared 0"), blob("shared 1")];
        let links =
            (0..6).map(|i| s.link_blob(&r, &shared[i % 2], 1, &*crate::metadata::suite::PRESENT));
        let (pushed, linked) = futures_util::future::join(
            futures_util::future::join_all(pushes),
            futures_util::future::join_all(links),
        )
        .await;
        for p in pushed.into_iter().chain(linked) {
            p.unwrap();
        }
        let listed = all_tags(s, &r, 100).await;
        assert_eq!(
            listed,
            [
                "latest", "only0", "only1", "only2", "only3", "only4", "only5", "stable", "v1"
            ]
        );
        let latest = by_tag(s, &r, "latest").await.unwrap();
        assert!(ms.iter().any(|m| m.digest == latest));
    }
}

// ---------------------------------------------------------------------------------
// Cases: health and migrations

/// Migrating an up-to-date store again changes nothing.
pub(crate) async fn migrate_twice_is_a_no_op(s: &dyn MetadataStore) {
    let r = repo("packs/kept");
    let m = manifest("kept");
    put(s, &r, &m, &["v1"]).await;
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(by_tag(s, &r, "v1").await, Some(m.digest));
}

/// `ping` answers, also many at once.
pub(crate) async fn ping(s: &dyn MetadataStore) {
    s.ping().await.unwrap();
    for p in futures_util::future::join_all((0..8).map(|_| s.ping())).await {
        p.unwrap();
    }
}

// ---------------------------------------------------------------------------------
// Cases: the packs index

/// A pack version record for `packs/<id>:<version>` on `manifest`, with fields that
/// vary with `seed`.
fn pack_row(id: &str, version: &str, m: &ManifestRecord, seed: &str) -> PackVersionRecord {
    let v = semver::Version::parse(version).expect("semver");
    let name = format!("Pack {id} {seed}");
    let description = format!("Description of {id} ({seed})");
    PackVersionRecord {
        pack_id: id.to_owned(),
        version: version.to_owned(),
        // Test code may borrow the domain's key function; the metadata layer never does.
        sort_key: crate::registry::packs::sort_key(&v),
        prerelease: !v.pre.is_empty(),
        pack_type: "policy".to_owned(),
        search_text: crate::registry::packs::search_text(id, &name, &description),
        name,
        description,
        author: "stellaops".to_owned(),
        repository: repo(&format!("packs/{id}")),
        tag: tag(&version.replace('+', "_")),
        manifest_digest: m.digest.clone(),
        content_digest: blob(&format!("{id} {version} content")),
        content_media_type: "application/vnd.stellaops.pack.content.v1.tar+gzip".to_owned(),
        size: 5 * 1024 * 1024 * 1024,
        published_at: 1_736_937_000_000,
        dependencies: r#"[{"packId":"base","version":"^1"}]"#.to_owned(),
        members: "[]".to_owned(),
        metadata: r#"{"minRunnerVersion":"1.5.0"}"#.to_owned(),
    }
}

/// Pushes a manifest for `id@version` tagged with the version, indexed; returns the row.
async fn publish(s: &dyn MetadataStore, id: &str, version: &str) -> PackVersionRecord {
    let m = manifest(&format!("{id}@{version}"));
    let p = pack_row(id, version, &m, "a");
    index_pack(s, &m, &p).await;
    p
}

/// Pushes `m` tagged with `p`'s version and indexes `p` (a publish).
async fn index_pack(s: &dyn MetadataStore, m: &ManifestRecord, p: &PackVersionRecord) {
    s.put_pack_manifest(
        &p.repository,
        m,
        &refs(&p.version),
        std::slice::from_ref(&p.tag),
        p,
        false,
        &ref_links(&p.version),
        &*crate::metadata::suite::PRESENT,
        &[],
    )
    .await
    .expect("put_pack_manifest");
}

async fn versions_of(s: &dyn MetadataStore, id: &str) -> Vec<String> {
    s.list_pack_versions(id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect()
}

async fn latest_of(s: &dyn MetadataStore, id: &str) -> Option<String> {
    s.get_pack(id).await.unwrap().map(|p| p.latest_version)
}

/// A version round-trips every field; the summary takes the latest version's fields.
pub(crate) async fn packs_round_trip(s: &dyn MetadataStore) {
    assert_eq!(s.get_pack("policy-a").await.unwrap(), None);
    let p = publish(s, "policy-a", "1.2.3+build.7").await;
    assert_eq!(
        s.get_pack_version("policy-a", "1.2.3+build.7")
            .await
            .unwrap(),
        Some(p.clone())
    );
    assert_eq!(
        s.list_pack_versions("policy-a").await.unwrap(),
        vec![p.clone()]
    );
    let summary = s.get_pack("policy-a").await.unwrap().expect("summary");
    assert_eq!(
        (
            summary.pack_type.as_str(),
            summary.name.as_str(),
            summary.author.as_str(),
            summary.latest_version.as_str(),
            summary.versions
        ),
        ("policy", p.name.as_str(), "stellaops", "1.2.3+build.7", 1)
    );
    // The manifest and tag went in with it.
    assert_eq!(
        by_tag(s, &p.repository, "1.2.3_build.7").await,
        Some(p.manifest_digest.clone())
    );
    assert_eq!(s.get_pack_version("policy-a", "1.2.3").await.unwrap(), None);

    // Re-indexing the same version replaces its row and refreshes the summary.
    let m2 = manifest("policy-a second");
    let mut p2 = pack_row("policy-a", "1.2.3+build.7", &m2, "b");
    p2.author = "someone".into();
    s.put_pack_manifest(
        &p2.repository,
        &m2,
        &[],
        std::slice::from_ref(&p2.tag),
        &p2,
        false,
        &[],
        &*crate::metadata::suite::PRESENT,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_pack_version("policy-a", "1.2.3+build.7")
            .await
            .unwrap(),
        Some(p2.clone())
    );
    let summary = s.get_pack("policy-a").await.unwrap().unwrap();
    assert_eq!(
        (summary.name, summary.author, summary.versions),
        (p2.name, "someone".into(), 1)
    );
}

/// Latest is the highest release by semver precedence (1.10.0 > 1.9.0), a prerelease
/// only when no release exists; versions list newest first.
pub(crate) async fn packs_semver_order_and_latest(s: &dyn MetadataStore) {
    publish(s, "order", "2.0.0-rc.1").await;
    assert_eq!(latest_of(s, "order").await.as_deref(), Some("2.0.0-rc.1"));
    publish(s, "order", "2.0.0-beta.11").await;
    publish(s, "order", "2.0.0-beta.2").await;
    assert_eq!(latest_of(s, "order").await.as_deref(), Some("2.0.0-rc.1"));
    for v in ["1.9.0", "1.10.0", "1.2.0", "0.9.9"] {
        publish(s, "order", v).await;
    }
    assert_eq!(latest_of(s, "order").await.as_deref(), Some("1.10.0"));
    assert_eq!(
        versions_of(s, "order").await,
        [
            "2.0.0-rc.1",
            "2.0.0-beta.11",
            "2.0.0-beta.2",
            "1.10.0",
            "1.9.0",
            "1.2.0",
            "0.9.9"
        ]
    );
    assert_eq!(s.get_pack("order").await.unwrap().unwrap().versions, 7);
    // Deleting the latest makes the next release the latest.
    assert!(s.delete_pack_version("order", "1.10.0").await.unwrap());
    assert!(!s.delete_pack_version("order", "1.10.0").await.unwrap());
    assert_eq!(latest_of(s, "order").await.as_deref(), Some("1.9.0"));
    assert_eq!(s.get_pack("order").await.unwrap().unwrap().versions, 6);
}

/// Rows go with their tag, their manifest, or a tag moved to another manifest; the
/// summary goes with the last row.
pub(crate) async fn packs_follow_tags_and_manifests(s: &dyn MetadataStore) {
    let a = publish(s, "follow", "1.0.0").await;
    let b = publish(s, "follow", "1.1.0").await;
    let c = publish(s, "follow", "1.2.0").await;
    let r = a.repository.clone();

    // Deleting a tag through /v2.
    assert!(s.delete_tag(&r, &c.tag).await.unwrap());
    assert_eq!(versions_of(s, "follow").await, ["1.1.0", "1.0.0"]);
    assert_eq!(latest_of(s, "follow").await.as_deref(), Some("1.1.0"));
    // Deleting a manifest through /v2 takes its tags and so its rows.
    assert!(s.delete_manifest(&r, &b.manifest_digest).await.unwrap());
    assert_eq!(versions_of(s, "follow").await, ["1.0.0"]);
    // Moving the tag to a manifest that is not this pack drops the row.
    let other = manifest("not a pack");
    put(s, &r, &other, &["1.0.0", "latest"]).await;
    assert_eq!(versions_of(s, "follow").await, Vec::<String>::new());
    assert_eq!(s.get_pack("follow").await.unwrap(), None);
    assert_eq!(by_tag(s, &r, "1.0.0").await, Some(other.digest.clone()));
    // Re-tagging the same manifest keeps a row.
    let d = publish(s, "follow", "3.0.0").await;
    s.put_manifest(
        &r,
        &manifest("follow@3.0.0"),
        &[],
        std::slice::from_ref(&d.tag),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(versions_of(s, "follow").await, ["3.0.0"]);
    // Deleting through the packs index removes the tag, keeps the manifest.
    assert!(s.delete_pack_version("follow", "3.0.0").await.unwrap());
    assert_eq!(by_tag(s, &r, "3.0.0").await, None);
    assert!(
        s.get_manifest(&r, &d.manifest_digest)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.get_pack("follow").await.unwrap(), None);
}

/// Publishes `id@version` with `dependencies` and `members` (JSON array text).
async fn publish_with_edges(
    s: &dyn MetadataStore,
    id: &str,
    version: &str,
    seed: &str,
    dependencies: &str,
    members: &str,
) -> PackVersionRecord {
    let m = manifest(&format!("{id}@{version} {seed}"));
    let mut p = pack_row(id, version, &m, seed);
    p.dependencies = dependencies.to_owned();
    p.members = members.to_owned();
    index_pack(s, &m, &p).await;
    p
}

/// "Used by" follows the versions that name a pack as a dependency or a member:
/// publishes, re-indexing, deletes and tag moves.
pub(crate) async fn packs_used_by_follows_versions(s: &dyn MetadataStore) {
    publish_with_edges(s, "core", "1.0.0", "a", "[]", "[]").await;
    let dep = r#"[{"packId":"core","version":"^1"}]"#;
    publish_with_edges(s, "user-b", "1.0.0", "a", dep, "[]").await;
    publish_with_edges(s, "user-a", "1.0.0", "a", dep, "[]").await;
    publish_with_edges(s, "user-a", "2.0.0", "a", dep, "[]").await;
    let kit = publish_with_edges(
        s,
        "kit",
        "1.0.0",
        "a",
        "[]",
        r#"[{"packId":"core","version":"1.0.0"},{"packId":"user-a","version":"2.0.0"}]"#,
    )
    .await;
    assert_eq!(
        s.pack_used_by("core", 10).await.unwrap(),
        ["kit", "user-a", "user-b"]
    );
    assert_eq!(s.pack_used_by("core", 2).await.unwrap(), ["kit", "user-a"]);
    assert_eq!(s.pack_used_by("user-a", 10).await.unwrap(), ["kit"]);
    assert!(s.pack_used_by("nobody", 10).await.unwrap().is_empty());
    // One version of user-a going keeps the other's edge; both going drop it.
    assert!(s.delete_pack_version("user-a", "1.0.0").await.unwrap());
    assert_eq!(
        s.pack_used_by("core", 10).await.unwrap(),
        ["kit", "user-a", "user-b"]
    );
    assert!(s.delete_pack_version("user-a", "2.0.0").await.unwrap());
    assert_eq!(s.pack_used_by("core", 10).await.unwrap(), ["kit", "user-b"]);
    // Re-indexing a version without dependencies drops its edges.
    publish_with_edges(s, "user-b", "1.0.0", "b", "[]", "[]").await;
    assert_eq!(s.pack_used_by("core", 10).await.unwrap(), ["kit"]);
    // A /v2 push moving the tag off the pack drops its row, and so its edges.
    put(s, &kit.repository, &manifest("not a pack"), &["1.0.0"]).await;
    assert!(s.pack_used_by("core", 10).await.unwrap().is_empty());
}

/// `create_only` refuses an existing version or a taken tag, storing nothing.
pub(crate) async fn packs_create_only(s: &dyn MetadataStore) {
    let first = publish(s, "once", "1.0.0").await;
    let m = manifest("once again");
    let again = pack_row("once", "1.0.0", &m, "b");
    let r = &first.repository;
    let e = s
        .put_pack_manifest(
            r,
            &m,
            &[],
            std::slice::from_ref(&again.tag),
            &again,
            true,
            &[],
            &*crate::metadata::suite::PRESENT,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, MetadataError::Conflict), "{e:?}");
    assert_eq!(
        s.get_manifest(r, &m.digest).await.unwrap(),
        None,
        "nothing stored"
    );
    assert_eq!(
        s.get_pack_version("once", "1.0.0").await.unwrap(),
        Some(first.clone())
    );
    // A tag taken by something else.
    let plain = manifest("plain");
    put(s, r, &plain, &["2.0.0"]).await;
    let m2 = manifest("once 2");
    let v2 = pack_row("once", "2.0.0", &m2, "a");
    let e = s
        .put_pack_manifest(
            r,
            &m2,
            &[],
            std::slice::from_ref(&v2.tag),
            &v2,
            true,
            &[],
            &*crate::metadata::suite::PRESENT,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, MetadataError::Conflict), "{e:?}");
    assert_eq!(by_tag(s, r, "2.0.0").await, Some(plain.digest));
    // A new version is created.
    let v3 = pack_row("once", "3.0.0", &manifest("once 3"), "a");
    s.put_pack_manifest(
        r,
        &manifest("once 3"),
        &[],
        std::slice::from_ref(&v3.tag),
        &v3,
        true,
        &[],
        &*crate::metadata::suite::PRESENT,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(versions_of(s, "once").await, ["3.0.0", "1.0.0"]);
}

/// `put_pack_manifest` records and links the blobs it is given (a publish's content and
/// config) in its own transaction: created with the version, and not at all when the
/// version or its tag exists already.
pub(crate) async fn packs_link_blobs_with_the_manifest(s: &dyn MetadataStore) {
    let m = manifest("linked 1");
    let p = pack_row("linked", "1.0.0", &m, "a");
    let r = &p.repository;
    let (content, config) = (blob("linked content"), blob("linked config"));
    assert!(!s.repository_exists(r).await.unwrap());
    s.put_pack_manifest(
        r,
        &m,
        &[
            (config.clone(), ReferenceKind::Config),
            (content.clone(), ReferenceKind::Layer),
        ],
        std::slice::from_ref(&p.tag),
        &p,
        true,
        &[(content.clone(), 5 << 32), (config.clone(), 3)],
        &*crate::metadata::suite::PRESENT,
        &[],
    )
    .await
    .unwrap();
    assert!(s.repository_exists(r).await.unwrap());
    assert_eq!(
        s.linked_blob_sizes(r, &[content.clone(), config.clone()])
            .await
            .unwrap(),
        [Some(5 << 32), Some(3)]
    );

    // The same version again (a lost race): nothing of the loser is recorded.
    let loser = blob("loser content");
    let m2 = manifest("linked 1 again");
    let again = pack_row("linked", "1.0.0", &m2, "b");
    let e = s
        .put_pack_manifest(
            r,
            &m2,
            &[],
            std::slice::from_ref(&again.tag),
            &again,
            true,
            &[(loser.clone(), 7)],
            &*crate::metadata::suite::PRESENT,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, MetadataError::Conflict), "{e:?}");
    assert_eq!(s.blob_in_repo(r, &loser).await.unwrap(), None);
    assert_eq!(s.blob_size(&loser).await.unwrap(), None);

    // A tag taken by something else, in a repository of its own: no link either.
    let taken = repo("packs/taken");
    put(s, &taken, &manifest("plain image"), &["1.0.0"]).await;
    let m3 = manifest("taken 1");
    let mut v = pack_row("taken", "1.0.0", &m3, "a");
    v.repository = taken.clone();
    let e = s
        .put_pack_manifest(
            &taken,
            &m3,
            &[],
            std::slice::from_ref(&v.tag),
            &v,
            true,
            &[(loser.clone(), 7)],
            &*crate::metadata::suite::PRESENT,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, MetadataError::Conflict), "{e:?}");
    assert_eq!(s.blob_in_repo(&taken, &loser).await.unwrap(), None);
    assert_eq!(s.get_pack_version("taken", "1.0.0").await.unwrap(), None);
}

/// Versions of one pack indexed concurrently all land, and the summary names the
/// highest of them: no writer computes "latest" from a stale view.
pub(crate) async fn packs_concurrent_versions(s: &dyn MetadataStore) {
    let versions: Vec<String> = (0..8).map(|i| format!("1.{i}.0")).collect();
    let writes = versions.iter().map(|v| publish(s, "racy", v));
    futures_util::future::join_all(writes).await;
    let summary = s.get_pack("racy").await.unwrap().expect("summary");
    assert_eq!(summary.latest_version, "1.7.0");
    assert_eq!(summary.versions, 8);
    // And deletes racing each other.
    let deletes = versions[4..]
        .iter()
        .map(|v| s.delete_pack_version("racy", v));
    for d in futures_util::future::join_all(deletes).await {
        assert!(d.unwrap());
    }
    let summary = s.get_pack("racy").await.unwrap().expect("summary");
    assert_eq!(
        (summary.latest_version.as_str(), summary.versions),
        ("1.3.0", 4)
    );
}

/// Pushes of a pack version (through either API) race deletes and moves of its tag,
/// round after round: every operation succeeds (no deadlock between the pack's
/// summary lock and the tag's row), and after each round the index agrees with the
/// tag.
pub(crate) async fn packs_race_tag_deletes_and_moves(s: &dyn MetadataStore) {
    let r = &repo("packs/race");
    // The blobs the pushes refer to, linked beforehand (as the pushes' blob uploads
    // would have).
    link_refs(s, r, "race").await;
    for round in 0..24 {
        let pushes = (0..6).map(|i| {
            let m = manifest(&format!("race {round} {i}"));
            let p = pack_row("race", "1.0.0", &m, "a");
            async move {
                s.put_pack_manifest(
                    r,
                    &m,
                    &refs("race"),
                    std::slice::from_ref(&p.tag),
                    &p,
                    false,
                    &[],
                    &*crate::metadata::suite::PRESENT,
                    &[],
                )
                .await
            }
        });
        let creates = (0..2).map(|i| {
            let m = manifest(&format!("race create {round} {i}"));
            let p = pack_row("race", "1.0.0", &m, "b");
            async move {
                match s
                    .put_pack_manifest(
                        r,
                        &m,
                        &[],
                        std::slice::from_ref(&p.tag),
                        &p,
                        true,
                        &[],
                        &*crate::metadata::suite::PRESENT,
                        &[],
                    )
                    .await
                {
                    Err(MetadataError::Conflict) => Ok(()),
                    other => other,
                }
            }
        });
        let deletes = (0..2).map(|_| async { s.delete_tag(r, &tag("1.0.0")).await.map(drop) });
        let unpublishes =
            (0..2).map(|_| async { s.delete_pack_version("race", "1.0.0").await.map(drop) });
        let moves = (0..4).map(|i| {
            let m = manifest(&format!("race plain {round} {i}"));
            async move { s.put_manifest(r, &m, &[], &tags(&["1.0.0"]), &[]).await }
        });
        let results = futures_util::future::join5(
            futures_util::future::join_all(pushes),
            futures_util::future::join_all(creates),
            futures_util::future::join_all(deletes),
            futures_util::future::join_all(unpublishes),
            futures_util::future::join_all(moves),
        )
        .await;
        let (a, b, c, d, e) = results;
        for result in a.into_iter().chain(b).chain(c).chain(d).chain(e) {
            if let Err(err) = result {
                panic!("round {round}: {err}");
            }
        }
        let indexed = s.get_pack_version("race", "1.0.0").await.unwrap();
        let summary = s.get_pack("race").await.unwrap();
        match indexed {
            Some(v) => {
                assert_eq!(by_tag(s, r, "1.0.0").await, Some(v.manifest_digest));
                assert_eq!(summary.map(|p| p.versions), Some(1));
            }
            None => assert_eq!(summary, None),
        }
    }
}

/// A tag pushed as immutable never moves to another manifest (the same manifest again
/// is fine, other tags move as before); deleting it frees it; a tag written before it
/// was immutable cannot be moved by a push that marks it; and of concurrent pushes
/// creating one immutable tag with different manifests exactly one wins.
pub(crate) async fn immutable_tags(s: &dyn MetadataStore) {
    let r = repo("packs/frozen");
    let (m1, m2) = (manifest("frozen one"), manifest("frozen two"));
    let v1 = tags(&["1.0.0"]);
    s.put_manifest(&r, &m1, &[], &tags(&["1.0.0", "latest"]), &v1)
        .await
        .unwrap();
    let moved = s
        .put_manifest(&r, &m2, &[], &tags(&["1.0.0", "latest"]), &v1)
        .await;
    assert!(
        matches!(moved, Err(MetadataError::TagImmutable)),
        "{moved:?}"
    );
    // Nothing of the refused push was stored: not the manifest, not "latest".
    assert_eq!(s.get_manifest(&r, &m2.digest).await.unwrap(), None);
    assert_eq!(by_tag(s, &r, "latest").await, Some(m1.digest.clone()));
    // Without the marking on this push, the mark on the row still holds.
    let moved = s.put_manifest(&r, &m2, &[], &v1, &[]).await;
    assert!(
        matches!(moved, Err(MetadataError::TagImmutable)),
        "{moved:?}"
    );
    // The same manifest again, and a mutable tag moving, are fine.
    s.put_manifest(&r, &m1, &[], &v1, &v1).await.unwrap();
    s.put_manifest(&r, &m2, &[], &tags(&["latest"]), &[])
        .await
        .unwrap();
    assert_eq!(by_tag(s, &r, "latest").await, Some(m2.digest.clone()));
    assert_eq!(by_tag(s, &r, "1.0.0").await, Some(m1.digest.clone()));
    // Deleted, it can be set again.
    assert!(s.delete_tag(&r, &tag("1.0.0")).await.unwrap());
    s.put_manifest(&r, &m2, &[], &v1, &v1).await.unwrap();
    assert_eq!(by_tag(s, &r, "1.0.0").await, Some(m2.digest.clone()));
    // A tag written mutable is protected once a push marks it.
    s.put_manifest(&r, &m1, &[], &tags(&["2.0.0"]), &[])
        .await
        .unwrap();
    let marked = s
        .put_manifest(&r, &m2, &[], &tags(&["2.0.0"]), &tags(&["2.0.0"]))
        .await;
    assert!(
        matches!(marked, Err(MetadataError::TagImmutable)),
        "{marked:?}"
    );
    // Concurrent creators of one immutable tag: one wins, the rest are refused.
    let candidates: Vec<ManifestRecord> = (0..6).map(|i| manifest(&format!("racer {i}"))).collect();
    let v3 = tags(&["3.0.0"]);
    let results = futures_util::future::join_all(
        candidates
            .iter()
            .map(|m| s.put_manifest(&r, m, &[], &v3, &v3)),
    )
    .await;
    let winners: Vec<&ManifestRecord> = candidates
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(m, _)| m)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for r in &results {
        assert!(
            matches!(r, Ok(()) | Err(MetadataError::TagImmutable)),
            "{r:?}"
        );
    }
    assert_eq!(
        by_tag(s, &r, "3.0.0").await,
        Some(winners[0].digest.clone())
    );
}

/// Of concurrent create-only publishes of one new version, exactly one succeeds and
/// the tag names its manifest; the others are refused and store nothing.
pub(crate) async fn packs_create_only_race(s: &dyn MetadataStore) {
    let r = repo("packs/first");
    for round in 0..8 {
        let version = format!("1.{round}.0");
        let candidates: Vec<(ManifestRecord, PackVersionRecord)> = (0..6)
            .map(|i| {
                let m = manifest(&format!("first {round} {i}"));
                let p = pack_row("first", &version, &m, "a");
                (m, p)
            })
            .collect();
        let results = futures_util::future::join_all(candidates.iter().map(|(m, p)| {
            s.put_pack_manifest(
                &r,
                m,
                &[],
                std::slice::from_ref(&p.tag),
                p,
                true,
                &[],
                &*crate::metadata::suite::PRESENT,
                &[],
            )
        }))
        .await;
        let mut winners = Vec::new();
        for ((m, _), result) in candidates.iter().zip(results) {
            match result {
                Ok(()) => winners.push(m.digest.clone()),
                Err(MetadataError::Conflict) => {
                    assert_eq!(s.get_manifest(&r, &m.digest).await.unwrap(), None);
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(by_tag(s, &r, &version).await.as_ref(), winners.first());
        let indexed = s.get_pack_version("first", &version).await.unwrap();
        assert_eq!(indexed.map(|v| v.manifest_digest).as_ref(), winners.first());
    }
}

async fn all_packs(s: &dyn MetadataStore, filter: &PackFilter, n: u32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let p = s
            .list_packs(filter, out.last().map(String::as_str), n)
            .await
            .unwrap();
        assert!(p.items.len() <= n as usize);
        out.extend(p.items.iter().map(|i| i.pack_id.clone()));
        if !p.more {
            return out;
        }
        assert_eq!(
            p.items.len(),
            n as usize,
            "a page with more after it is full"
        );
    }
}

/// Listing: ordered by id, keyset pages, filters by type and author, `q` as a
/// case-insensitive substring of id, name or description (short and long, with LIKE
/// and FTS metacharacters taken literally).
pub(crate) async fn packs_list_filter_and_search(s: &dyn MetadataStore) {
    let mut expected = Vec::new();
    for i in 0..23 {
        let id = format!("pack-{i:02}");
        let m = manifest(&id);
        let mut p = pack_row(&id, "1.0.0", &m, "a");
        p.pack_type = ["policy", "analyzer", "task"][i % 3].to_owned();
        p.author = if i % 2 == 0 { "even" } else { "odd" }.to_owned();
        p.description = match i {
            3 => "Detects 100% of the_secrets \"quoted\"".to_owned(),
            4 => "Détecte les ÉLÉMENTS".to_owned(),
            _ => format!("plain description {i}"),
        };
        p.search_text = crate::registry::packs::search_text(&id, &p.name, &p.description);
        s.put_pack_manifest(
            &p.repository,
            &m,
            &[],
            std::slice::from_ref(&p.tag),
            &p,
            false,
            &[],
            &*crate::metadata::suite::PRESENT,
            &[],
        )
        .await
        .unwrap();
        expected.push(id);
    }
    let none = PackFilter::default();
    for n in [1, 5, 23, 100] {
        assert_eq!(all_packs(s, &none, n).await, expected, "pages of {n}");
    }
    let by = |t: Option<&str>, a: Option<&str>, q: Option<&str>| PackFilter {
        pack_type: t.map(str::to_owned),
        author: a.map(str::to_owned),
        q: q.map(str::to_owned),
    };
    let ids = |is: &[usize]| {
        is.iter()
            .map(|i| format!("pack-{i:02}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        all_packs(s, &by(Some("task"), None, None), 2).await,
        ids(&[2, 5, 8, 11, 14, 17, 20])
    );
    assert_eq!(
        all_packs(s, &by(Some("task"), Some("odd"), None), 2).await,
        ids(&[5, 11, 17])
    );
    assert_eq!(
        all_packs(s, &by(None, Some("nobody"), None), 2).await,
        ids(&[])
    );
    // q: substrings of id, name and description, in pages.
    assert_eq!(
        all_packs(s, &by(None, None, Some("pack-1")), 3).await,
        ids(&[10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    );
    assert_eq!(
        all_packs(s, &by(None, None, Some("100% of the_s")), 3).await,
        ids(&[3])
    );
    assert_eq!(
        all_packs(s, &by(None, None, Some("\"quoted\"")), 3).await,
        ids(&[3])
    );
    assert_eq!(all_packs(s, &by(None, None, Some("%")), 3).await, ids(&[3]));
    assert_eq!(all_packs(s, &by(None, None, Some("_")), 3).await, ids(&[3]));
    assert_eq!(
        all_packs(s, &by(None, None, Some("éléments")), 3).await,
        ids(&[4])
    );
    assert_eq!(
        all_packs(s, &by(None, None, Some("description 2")), 3).await,
        ids(&[2, 20, 21, 22])
    );
    assert_eq!(
        all_packs(s, &by(None, None, Some("22")), 3).await,
        ids(&[22])
    );
    assert_eq!(
        all_packs(s, &by(None, None, Some("zzzz")), 3).await,
        ids(&[])
    );
    assert_eq!(
        all_packs(
            s,
            &by(Some("analyzer"), Some("even"), Some("description")),
            1
        )
        .await,
        ids(&[10, 16, 22])
    );
    // The search follows updates and deletes.
    assert!(s.delete_pack_version("pack-03", "1.0.0").await.unwrap());
    assert_eq!(
        all_packs(s, &by(None, None, Some("secrets")), 3).await,
        ids(&[])
    );
}

// ---------------------------------------------------------------------------------
// Cases: garbage collection

/// A manifest's blob references must be linked into its repository, and its child
/// manifests be in it, as it is stored: otherwise nothing is stored, and the answer
/// says a reference is gone.
pub(crate) async fn references_must_be_in_the_repository(s: &dyn Inspect) {
    let r = repo("gc/refs");
    let m = manifest("needs blobs");
    let put = s
        .put_manifest(&r, &m, &refs("unlinked"), &tags(&["v1"]), &[])
        .await;
    assert!(matches!(put, Err(MetadataError::ReferenceGone)), "{put:?}");
    assert_eq!(s.get_manifest(&r, &m.digest).await.unwrap(), None);
    assert_eq!(by_tag(s, &r, "v1").await, None);
    assert_eq!(s.reference_rows(r.as_str()).await, 0);

    let child = manifest("absent child");
    let index = manifest("index");
    let put = s
        .put_manifest(
            &r,
            &index,
            &[(child.digest.clone(), ReferenceKind::Manifest)],
            &[],
            &[],
        )
        .await;
    assert!(matches!(put, Err(MetadataError::ReferenceGone)), "{put:?}");
    assert_eq!(s.get_manifest(&r, &index.digest).await.unwrap(), None);

    // Linked in another repository is not linked in this one.
    link_refs(s, &repo("gc/elsewhere"), "unlinked").await;
    let put = s.put_manifest(&r, &m, &refs("unlinked"), &[], &[]).await;
    assert!(matches!(put, Err(MetadataError::ReferenceGone)), "{put:?}");

    link_refs(s, &r, "unlinked").await;
    put_ok(s, &r, &m, &refs("unlinked"), &["v1"]).await;
    put_ok(s, &r, &child, &[], &[]).await;
    put_ok(
        s,
        &r,
        &index,
        &[(child.digest.clone(), ReferenceKind::Manifest)],
        &[],
    )
    .await;
}

async fn put_ok(
    s: &dyn MetadataStore,
    r: &RepoName,
    m: &ManifestRecord,
    references: &[(Digest, ReferenceKind)],
    tag_names: &[&str],
) {
    s.put_manifest(r, m, references, &tags(tag_names), &[])
        .await
        .expect("put_manifest");
}

fn digests(items: &[(Digest, u64)]) -> std::collections::BTreeSet<Digest> {
    items.iter().map(|(d, _)| d.clone()).collect()
}

/// The collector's deletes decide as they delete: a manifest goes only untagged, no
/// child of a manifest of its repository, with no subject left (referrers go after
/// their subject), and pushed before the cutoff (a manifest pushed at the cutoff
/// stays; pushing it again moves its time); a link goes only unreferenced and made
/// before the cutoff (linking again moves its time); a blob row goes only unlinked.
pub(crate) async fn gc_deletes_recheck_and_respect_grace(s: &dyn Inspect) {
    let r = repo("gc/grace");
    let (tagged, plain, child, index) = (
        manifest("tagged"),
        manifest("plain"),
        manifest("child"),
        manifest("index"),
    );
    let sig = referrer("sig", &plain.digest, Some("application/x-sig"));
    link_refs(s, &r, "tagged").await;
    let unreferenced = blob("unreferenced");
    s.link_blob(&r, &unreferenced, 5, &*PRESENT).await.unwrap();
    put_ok(s, &r, &tagged, &refs("tagged"), &["v1"]).await;
    put_ok(s, &r, &plain, &refs("tagged")[..1], &[]).await;
    put_ok(s, &r, &child, &[], &[]).await;
    put_ok(
        s,
        &r,
        &index,
        &[(child.digest.clone(), ReferenceKind::Manifest)],
        &[],
    )
    .await;
    put_ok(s, &r, &sig, &[], &[]).await;
    let all = [&tagged, &plain, &child, &index, &sig].map(|m| m.digest.clone());
    s.backdate(r.as_str(), 1_000).await;

    let at_cutoff = s
        .delete_manifests_if_unreachable(&r, &all, 1_000, false)
        .await
        .unwrap();
    assert!(at_cutoff.is_empty(), "pushed at the cutoff: {at_cutoff:?}");
    // Pass after pass, as the collector deletes.
    let mut gone = std::collections::BTreeSet::new();
    loop {
        let deleted = s
            .delete_manifests_if_unreachable(&r, &all, 1_001, false)
            .await
            .unwrap();
        if deleted.is_empty() {
            break;
        }
        for (d, size) in &deleted {
            let m = [&tagged, &plain, &child, &index, &sig]
                .into_iter()
                .find(|m| &m.digest == d)
                .unwrap();
            assert_eq!(*size, m.body.len() as u64);
        }
        gone.extend(digests(&deleted));
    }
    let want: std::collections::BTreeSet<Digest> = [&plain, &child, &index, &sig]
        .map(|m| m.digest.clone())
        .into();
    assert_eq!(gone, want);
    assert!(s.get_manifest(&r, &tagged.digest).await.unwrap().is_some());

    // A referrer whose subject is gone stays when orphans are kept.
    let subject = manifest("subject");
    let orphan = referrer("orphan", &subject.digest, None);
    put_ok(s, &r, &orphan, &[], &[]).await;
    s.backdate(r.as_str(), 1_000).await;
    let kept = s
        .delete_manifests_if_unreachable(&r, std::slice::from_ref(&orphan.digest), 1_001, true)
        .await
        .unwrap();
    assert!(kept.is_empty());

    // Untagged, then pushed again: its time moves, and it stays.
    assert!(s.delete_tag(&r, &tag("v1")).await.unwrap());
    put_ok(s, &r, &tagged, &refs("tagged"), &[]).await;
    let fresh = s
        .delete_manifests_if_unreachable(&r, std::slice::from_ref(&tagged.digest), 1_001, false)
        .await
        .unwrap();
    assert!(fresh.is_empty(), "pushed again just now");

    // Links: referenced ones and ones made at the cutoff stay.
    let linked: Vec<Digest> = refs("tagged")
        .into_iter()
        .map(|(d, _)| d)
        .chain([unreferenced.clone()])
        .collect();
    s.backdate(r.as_str(), 1_000).await;
    assert!(
        s.delete_links_if_unreferenced(&r, &linked, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    let unlinked = s
        .delete_links_if_unreferenced(&r, &linked, 1_001)
        .await
        .unwrap();
    assert_eq!(unlinked, [(unreferenced.clone(), 5)]);
    assert_eq!(s.blob_in_repo(&r, &unreferenced).await.unwrap(), None);
    // Linked again: its time moves.
    s.link_blob(&r, &unreferenced, 5, &*PRESENT).await.unwrap();
    assert!(
        s.delete_links_if_unreferenced(&r, &linked, 1_001)
            .await
            .unwrap()
            .is_empty()
    );

    // Blob rows: only unlinked ones go.
    let other = repo("gc/grace-other");
    let lonely = blob("lonely");
    s.link_blob(&other, &lonely, 9, &*PRESENT).await.unwrap();
    assert!(s.unlink_blob(&other, &lonely).await.unwrap());
    assert_eq!(
        s.unlinked_blobs(None, 100).await.unwrap(),
        [(lonely.clone(), 9)]
    );
    let deleted = s
        .delete_blobs_if_unlinked(&[lonely.clone(), unreferenced.clone()])
        .await
        .unwrap();
    assert_eq!(deleted, [(lonely.clone(), 9)]);
    assert_eq!(s.blob_size(&lonely).await.unwrap(), None);
    assert_eq!(s.blob_size(&unreferenced).await.unwrap(), Some(5));
    assert_eq!(
        s.link_counts(&[lonely, unreferenced]).await.unwrap(),
        [0, 1]
    );
}

/// Byte deletions: a deleted blob row is a pending deletion, carried out by
/// `delete_bytes`; a link of the digest before that cancels it, and one after it
/// checks the bytes (refused when they are gone); bytes found with no row are
/// recorded and deleted the same way, never those with a row.
pub(crate) async fn gc_byte_deletions_and_links(s: &dyn Inspect) {
    let bytes = StoredBytes::default();
    let r = repo("gc/bytes");
    let (a, b, c) = (blob("a"), blob("b"), blob("c"));
    for d in [&a, &b] {
        s.link_blob(&r, d, 3, &bytes).await.unwrap();
        assert!(s.unlink_blob(&r, d).await.unwrap());
    }
    assert_eq!(
        digests(
            &s.delete_blobs_if_unlinked(&[a.clone(), b.clone()])
                .await
                .unwrap()
        ),
        [a.clone(), b.clone()].into()
    );
    let mut pending = s.pending_byte_deletions(10).await.unwrap();
    pending.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(pending, want);
    assert_eq!(
        s.blobs_known(&[a.clone(), c.clone()]).await.unwrap(),
        [true, false]
    );

    // `a` is uploaded again before its bytes go: the deletion is cancelled.
    s.link_blob(&r, &a, 3, &bytes).await.unwrap();
    assert_eq!(
        s.pending_byte_deletions(10).await.unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(
        s.delete_bytes(&[a.clone(), b.clone()], &bytes)
            .await
            .unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(*bytes.deleted.lock().unwrap(), std::slice::from_ref(&b));
    assert!(s.pending_byte_deletions(10).await.unwrap().is_empty());
    // Carried out once only.
    assert!(
        s.delete_bytes(std::slice::from_ref(&b), &bytes)
            .await
            .unwrap()
            .is_empty()
    );

    // `b` is uploaded again after its bytes went: refused while they are absent,
    // linked once they are back.
    let refused = s.link_blob(&r, &b, 3, &bytes).await;
    assert!(
        matches!(refused, Err(MetadataError::BytesGone)),
        "{refused:?}"
    );
    assert_eq!(s.blob_in_repo(&r, &b).await.unwrap(), None);
    bytes.absent.lock().unwrap().remove(&b);
    s.link_blob(&r, &b, 3, &bytes).await.unwrap();
    assert_eq!(s.blob_in_repo(&r, &b).await.unwrap(), Some(3));

    // Stray bytes: recorded only without a row.
    assert_eq!(
        s.quarantine_bytes(&[c.clone(), a.clone()]).await.unwrap(),
        1
    );
    assert_eq!(
        s.quarantine_bytes(std::slice::from_ref(&c)).await.unwrap(),
        0
    );
    assert_eq!(
        s.blobs_known(std::slice::from_ref(&c)).await.unwrap(),
        [true]
    );
    assert_eq!(
        s.delete_bytes(&[c.clone(), a.clone()], &bytes)
            .await
            .unwrap(),
        std::slice::from_ref(&c)
    );
    // Completed deletions are forgotten after a while (`b`'s went with its link).
    assert_eq!(s.forget_byte_deletions(now_millis() + 1).await.unwrap(), 1);
    assert_eq!(s.blobs_known(&[c]).await.unwrap(), [false]);
}

/// Storage figures follow every change (per repository, each blob counted once in
/// all), and completed collections add up.
pub(crate) async fn gc_figures_and_runs(s: &dyn Inspect) {
    let empty = s.storage_usage(10).await.unwrap();
    assert_eq!(empty.total, UsageRecord::default());
    let (a, b) = (repo("gc/fig-a"), repo("gc/fig-b"));
    let shared = blob("shared");
    s.link_blob(&a, &shared, 100, &*PRESENT).await.unwrap();
    s.link_blob(&b, &shared, 100, &*PRESENT).await.unwrap();
    s.link_blob(&b, &shared, 100, &*PRESENT).await.unwrap();
    s.link_blob(&b, &blob("own"), 7, &*PRESENT).await.unwrap();
    let m = manifest("figures");
    put_ok(s, &b, &m, &[], &["v1"]).await;
    let usage = s.storage_usage(10).await.unwrap();
    let size = m.body.len() as u64;
    assert_eq!(
        usage.total,
        UsageRecord {
            repo: String::new(),
            blobs: 2,
            blob_bytes: 107,
            manifests: 1,
            manifest_bytes: size,
        }
    );
    assert_eq!(usage.repository_count, 2);
    assert_eq!(
        usage.repositories,
        [
            UsageRecord {
                repo: b.as_str().to_owned(),
                blobs: 2,
                blob_bytes: 107,
                manifests: 1,
                manifest_bytes: size,
            },
            UsageRecord {
                repo: a.as_str().to_owned(),
                blobs: 1,
                blob_bytes: 100,
                manifests: 0,
                manifest_bytes: 0,
            },
        ]
    );
    assert_eq!(s.storage_usage(1).await.unwrap().repositories.len(), 1);
    assert!(s.delete_manifest(&b, &m.digest).await.unwrap());
    assert!(s.unlink_blob(&a, &shared).await.unwrap());
    let usage = s.storage_usage(10).await.unwrap();
    assert_eq!((usage.total.blobs, usage.total.manifests), (2, 0));
    assert_eq!(usage.repositories[1].blobs, 0);

    assert_eq!(s.gc_totals().await.unwrap(), GcTotals::default());
    for i in 1..=2 {
        s.record_gc_run(&GcRunRecord {
            finished_at: 1_000 * i,
            duration_ms: 5,
            tags: 1,
            manifests: 2,
            links: 3,
            blobs: 4,
            stray: 5,
            reclaimed_bytes: 600,
            manifest_bytes: 70,
        })
        .await
        .unwrap();
    }
    let totals = s.gc_totals().await.unwrap();
    assert_eq!(totals.runs, 2);
    assert_eq!(
        totals.sums,
        GcRunRecord {
            finished_at: 2_000,
            duration_ms: 10,
            tags: 2,
            manifests: 4,
            links: 6,
            blobs: 8,
            stray: 10,
            reclaimed_bytes: 1_200,
            manifest_bytes: 140,
        }
    );
}

/// One collector at a time where the backend orders them (PostgreSQL): a second
/// taker does not get the lock until the first lets it go.
pub(crate) async fn collector_lock(s: &dyn Inspect) {
    let first = s.collector_lock(false).await.unwrap().expect("the lock");
    let second = s.collector_lock(false).await.unwrap();
    if s.orders_collectors() {
        assert!(second.is_none(), "two collectors at once");
        drop(first);
        let third =
            tokio::time::timeout(std::time::Duration::from_secs(30), s.collector_lock(true))
                .await
                .expect("the lock is let go")
                .unwrap();
        assert!(third.is_some());
    } else {
        assert!(second.is_some());
    }
}

// ---------------------------------------------------------------------------------
// Backends

/// One `#[tokio::test]` per case for the backend that `$open` (an async fn returning
/// `Option<(store, guard)>`, `None` to skip) opens, migrated and empty, for each case.
macro_rules! metadata_suite {
    ($open:path) => {
        // An attribute that does nothing: the cases run unconditionally.
        metadata_suite!($open, #[cfg_attr(any(), ignore)]);
    };
    ($open:path, #[$attr:meta]) => {
        metadata_suite!(@cases $open; $attr;
            link_and_unlink_blobs, repositories_come_into_being, list_repositories_pages,
            put_and_get_manifests, put_manifest_is_idempotent_and_moves_tags,
            delete_tag_keeps_manifest, delete_manifest_removes_tags_and_references,
            list_tags_byte_order_and_pages, referrers_by_subject,
            blob_and_manifest_sizes, upload_sessions, upload_session_caps,
            concurrent_upload_updates,
            concurrent_pushes, migrate_twice_is_a_no_op, ping,
            packs_round_trip, packs_semver_order_and_latest, packs_follow_tags_and_manifests,
            packs_create_only, packs_link_blobs_with_the_manifest, packs_list_filter_and_search,
            packs_concurrent_versions, packs_race_tag_deletes_and_moves, packs_create_only_race, packs_used_by_follows_versions,
            immutable_tags, references_must_be_in_the_repository,
            gc_deletes_recheck_and_respect_grace, gc_byte_deletions_and_links,
            gc_figures_and_runs, collector_lock);
    };
    (@cases $open:path; $attr:meta; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[$attr]
            async fn $case() {
                let (store, guard) = $open().await;
                $crate::metadata::suite::$case(&store).await;
                // The store first: its connections, then what it lived in.
                drop((store, guard));
            }
        )*
    };
}

mod sqlite_file {
    use crate::metadata::{
        BlobIndex, MetadataStore, PackIndex, PoolOptions, SqliteStore, UploadIndex,
    };

    async fn open() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/m.db", dir.path().display());
        let store = SqliteStore::connect(&url, &PoolOptions::default())
            .await
            .expect("open sqlite file");
        store.migrate().await.expect("migrate");
        (store, dir)
    }

    metadata_suite!(open);

    /// Writers of two stores on one file (a `migrate` or a second `serve` beside this
    /// one) wait for each other instead of failing: every write transaction takes
    /// the write lock as it begins (a deferred one that read first could not take
    /// it once the other store had committed since its read: `SQLITE_BUSY`, at
    /// once), and a busy timeout covers the waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_on_one_file_from_two_stores_wait_for_each_other() {
        let (a, dir) = open().await;
        let url = format!("sqlite://{}/m.db", dir.path().display());
        let b = SqliteStore::connect(&url, &PoolOptions::default())
            .await
            .expect("second store");
        let work = |s: SqliteStore, who: &'static str| async move {
            let mut failures = Vec::new();
            for i in 0..40 {
                let m = super::manifest(&format!("{who} {i}"));
                let p = super::pack_row(who, &format!("1.{i}.0"), &m, "a");
                let published = s
                    .put_pack_manifest(
                        &p.repository,
                        &m,
                        &[],
                        std::slice::from_ref(&p.tag),
                        &p,
                        true,
                        &[],
                        &*crate::metadata::suite::PRESENT,
                        &[],
                    )
                    .await;
                let linked = s
                    .link_blob(
                        &p.repository,
                        &super::blob(&format!("{who} {i}")),
                        7,
                        &*crate::metadata::suite::PRESENT,
                    )
                    .await;
                let uploaded = s
                    .create_upload(&super::upload(&format!("{who}/x")), super::NO_CAPS)
                    .await;
                for r in [published, linked, uploaded] {
                    if let Err(e) = r {
                        failures.push(e.to_string());
                    }
                }
            }
            failures
        };
        let (fa, fb) = tokio::join!(
            tokio::spawn(work(a.clone(), "left")),
            tokio::spawn(work(b.clone(), "right"))
        );
        let failures: Vec<String> = fa.unwrap().into_iter().chain(fb.unwrap()).collect();
        assert!(
            failures.is_empty(),
            "{} failed: {failures:?}",
            failures.len()
        );
        assert_eq!(a.list_pack_versions("right").await.unwrap().len(), 40);
        assert_eq!(b.list_pack_versions("left").await.unwrap().len(), 40);
        drop((a, b, dir));
    }

    /// Version 3 rebuilds `pack_versions` to make `prerelease` a BOOLEAN: the rows a
    /// version 2 database holds keep their values, the column refuses anything but 0
    /// and 1, and the packs triggers, made again with the table, still keep the
    /// summaries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prerelease_becomes_a_boolean_keeping_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/m.db", dir.path().display());
        let old = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
            .await
            .expect("open");
        crate::metadata::migrations::sqlite_up_to(2)
            .await
            .run(&old)
            .await
            .expect("migrate to version 2");
        // Rows as version 2 stored them (today's statements need today's schema).
        for version in ["1.0.0", "2.0.0-rc.1"] {
            let m = super::manifest(&format!("old@{version}"));
            let p = super::pack_row("old", version, &m, "a");
            sqlx::query(
                "INSERT INTO repositories (name, created_at) VALUES ($1, 0)
                 ON CONFLICT DO NOTHING",
            )
            .bind(p.repository.as_str())
            .execute(&old)
            .await
            .expect("repository");
            sqlx::query(
                "INSERT INTO manifests (repo, digest, media_type, size, body, created_at)
                 VALUES ($1, $2, $3, $4, $5, 0)",
            )
            .bind(p.repository.as_str())
            .bind(m.digest.as_str())
            .bind(&m.media_type)
            .bind(m.body.len() as i64)
            .bind(m.body.as_ref())
            .execute(&old)
            .await
            .expect("manifest");
            sqlx::query(
                "INSERT INTO tags (repo, name, manifest_digest, updated_at) VALUES ($1, $2, $3, 0)",
            )
            .bind(p.repository.as_str())
            .bind(p.tag.as_str())
            .bind(m.digest.as_str())
            .execute(&old)
            .await
            .expect("tag");
            sqlx::query(&format!(
                "INSERT INTO pack_versions ({})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                         $16, $17, $18, $19)",
                crate::metadata::sql::rows::PACK_VERSION_COLUMNS
            ))
            .bind(&p.pack_id)
            .bind(&p.version)
            .bind(&p.sort_key)
            .bind(i64::from(p.prerelease))
            .bind(&p.pack_type)
            .bind(&p.name)
            .bind(&p.description)
            .bind(&p.author)
            .bind(&p.search_text)
            .bind(p.repository.as_str())
            .bind(p.tag.as_str())
            .bind(p.manifest_digest.as_str())
            .bind(p.content_digest.as_str())
            .bind(&p.content_media_type)
            .bind(p.size as i64)
            .bind(p.published_at)
            .bind(&p.dependencies)
            .bind(&p.members)
            .bind(&p.metadata)
            .execute(&old)
            .await
            .expect("pack version");
        }
        old.close().await;
        let store = SqliteStore::connect(&url, &PoolOptions::default())
            .await
            .expect("open sqlite file");

        store
            .migrate()
            .await
            .expect("migrate to the latest version");
        let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
        let declared: String = sqlx::query_scalar(
            "SELECT type FROM pragma_table_info('pack_versions') WHERE name = 'prerelease'",
        )
        .fetch_one(&pool)
        .await
        .expect("column type");
        assert_eq!(declared, "BOOLEAN");
        let flags: Vec<(String, bool)> = store
            .list_pack_versions("old")
            .await
            .expect("versions")
            .into_iter()
            .map(|v| (v.version, v.prerelease))
            .collect();
        assert_eq!(
            flags,
            [("2.0.0-rc.1".to_owned(), true), ("1.0.0".to_owned(), false)]
        );
        let refused = sqlx::query("UPDATE pack_versions SET prerelease = 2")
            .execute(&pool)
            .await;
        assert!(refused.is_err(), "{refused:?}");
        pool.close().await;

        assert_eq!(
            super::latest_of(&store, "old").await.as_deref(),
            Some("1.0.0")
        );
        super::publish(&store, "old", "1.1.0").await;
        assert_eq!(
            super::latest_of(&store, "old").await.as_deref(),
            Some("1.1.0")
        );
        assert!(store.delete_pack_version("old", "1.1.0").await.unwrap());
        assert!(store.delete_pack_version("old", "1.0.0").await.unwrap());
        assert_eq!(
            super::latest_of(&store, "old").await.as_deref(),
            Some("2.0.0-rc.1")
        );
        drop(store);
    }
}

mod sqlite_memory {
    use crate::metadata::{MetadataStore, PoolOptions, SqliteStore};

    async fn open() -> (SqliteStore, ()) {
        let store = SqliteStore::connect("sqlite::memory:", &PoolOptions::default())
            .await
            .expect("open sqlite memory");
        store.migrate().await.expect("migrate");
        (store, ())
    }

    metadata_suite!(open);
}

mod postgres {
    use sqlx::{Connection, PgConnection};

    use crate::metadata::{
        BlobIndex, MetadataStore, PackIndex, PoolOptions, PostgresStore, UploadIndex,
    };

    const URL_VAR: &str = "PACKS_TEST_POSTGRES_URL";

    /// A database made for one test, dropped (with any connection left to it) when
    /// this is dropped, also when the test panics.
    struct TestDatabase {
        admin_url: String,
        name: String,
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let admin_url = self.admin_url.clone();
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            // A runtime of its own on a thread of its own: this may run while the
            // test's runtime is unwinding.
            let dropped = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(async {
                        let mut admin = PgConnection::connect(&admin_url).await?;
                        sqlx::raw_sql(&sql).execute(&mut admin).await?;
                        admin.close().await
                    })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop test database {}: {dropped:?}", self.name);
            }
        }
    }

    /// `url` with its database name replaced by `database`.
    fn with_database(url: &str, database: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let authority = base.find("://").map_or(0, |i| i + 3);
        let path = base[authority..]
            .find('/')
            .map_or(base.len(), |i| authority + i);
        let mut out = format!("{}/{database}", &base[..path]);
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }

    /// A new empty database, its URL, and the guard dropping it; `None` to skip.
    /// A fresh database. Tests calling this are ignored unless the variable is set
    /// (`build.rs`): missing here, it means `CI` is set without it, a failure.
    async fn create_database() -> (String, TestDatabase) {
        let admin_url = std::env::var(URL_VAR)
            .unwrap_or_else(|_| panic!("{URL_VAR} must name a PostgreSQL server"));
        let name = format!("packs_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to PACKS_TEST_POSTGRES_URL");
        // A linguistic default collation, as many production servers have, so that
        // the byte-order checks fail if a column lacks COLLATE "C". Older servers (or
        // ones without ICU) get the server's default.
        let icu = format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        );
        if sqlx::raw_sql(&icu).execute(&mut admin).await.is_err() {
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create test database");
        }
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        (url, TestDatabase { admin_url, name })
    }

    async fn open() -> (PostgresStore, TestDatabase) {
        let (url, guard) = create_database().await;
        let store = PostgresStore::connect(&url, &PoolOptions::default())
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate");
        (store, guard)
    }

    metadata_suite!(
        open,
        #[cfg_attr(
            not(packs_test_postgres),
            ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
        )]
    );

    /// A connection the server cuts while it is in steady use (so it is not pinged on
    /// its way out of the pool) fails one request, and is not handed out again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(packs_test_postgres),
        ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
    )]
    async fn a_connection_cut_in_use_fails_once_then_is_replaced() {
        let (url, guard) = create_database().await;
        let options = PoolOptions {
            max_connections: 1,
            ..PoolOptions::default()
        };
        let store = PostgresStore::connect(&url, &options)
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let repo = crate::names::RepoName::parse("cut/conn").expect("name");
        assert!(!store.repository_exists(&repo).await.expect("first query"));
        let mut admin = PgConnection::connect(&guard.admin_url)
            .await
            .expect("admin");
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&guard.name)
        .fetch_all(&mut admin)
        .await
        .expect("terminate the store's connection");
        assert_eq!(cut, [true], "the store held one connection");
        admin.close().await.ok();
        // The pool's one connection is now dead, and was used a moment ago.
        let failed = store.repository_exists(&repo).await;
        assert!(
            matches!(failed, Err(crate::metadata::MetadataError::Unavailable(_))),
            "{failed:?}"
        );
        for _ in 0..3 {
            assert!(
                !store
                    .repository_exists(&repo)
                    .await
                    .expect("a new connection")
            );
        }
        drop(store);
        drop(guard);
    }

    /// Transactions of the store's connections open now (each backend's state is
    /// set before its answer is sent, so this is exact once a call has returned).
    async fn open_transactions(guard: &TestDatabase) -> i64 {
        let mut admin = PgConnection::connect(&guard.admin_url)
            .await
            .expect("admin");
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = $1 AND state LIKE 'idle in transaction%'",
        )
        .bind(&guard.name)
        .fetch_one(&mut admin)
        .await
        .expect("read pg_stat_activity");
        admin.close().await.ok();
        open
    }

    /// A refused publish (or any transaction that fails) is rolled back before its
    /// connection goes back to the pool: a rollback left for the connection's next
    /// use kept the pack's lock held, and every other publish of the pack waited for
    /// it, for as long as nothing else used that connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(packs_test_postgres),
        ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
    )]
    async fn a_refused_publish_leaves_no_transaction_open() {
        let (store, guard) = open().await;
        let first = crate::metadata::suite::publish(&store, "held", "1.0.0").await;
        let m = crate::metadata::suite::manifest("held again");
        let again = crate::metadata::suite::pack_row("held", "1.0.0", &m, "b");
        let refused = store
            .put_pack_manifest(
                &first.repository,
                &m,
                &[],
                std::slice::from_ref(&again.tag),
                &again,
                true,
                &[],
                &*crate::metadata::suite::PRESENT,
                &[],
            )
            .await;
        assert!(
            matches!(refused, Err(crate::metadata::MetadataError::Conflict)),
            "{refused:?}"
        );
        assert_eq!(open_transactions(&guard).await, 0);
        drop(store);
        drop(guard);
    }

    /// Pushes of a pack version race deletes and moves of its tag with no retries, so
    /// that a deadlock (which retries would hide) fails the test: every path takes
    /// the tag's row before the pack's lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(packs_test_postgres),
        ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
    )]
    async fn pack_pushes_and_tag_changes_take_locks_in_one_order() {
        let (store, guard) = open().await;
        let store = store.with_transient_retries(0);
        crate::metadata::suite::packs_race_tag_deletes_and_moves(&store).await;
        drop((store, guard));
    }

    /// A write the database turns away for now (here a lock not granted within
    /// `lock_timeout`: SQLSTATE 55P03) is tried again and succeeds once the lock is
    /// free; with no retries it is [`MetadataError::Busy`].
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(packs_test_postgres),
        ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
    )]
    async fn writes_turned_away_for_now_are_retried() {
        let (url, guard) = create_database().await;
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-c%20lock_timeout%3D40ms");
        let patient = PostgresStore::connect(&url, &PoolOptions::default())
            .await
            .expect("connect")
            .with_transient_retries(1000);
        patient.migrate().await.expect("migrate");
        let strict = PostgresStore::connect(&url, &PoolOptions::default())
            .await
            .expect("connect")
            .with_transient_retries(0);
        let db_url = with_database(&guard.admin_url, &guard.name);
        let mut holder = PgConnection::connect(&db_url).await.expect("connect");
        let mut watcher = PgConnection::connect(&db_url).await.expect("connect");
        sqlx::raw_sql("BEGIN; LOCK TABLE uploads IN ACCESS EXCLUSIVE MODE")
            .execute(&mut holder)
            .await
            .expect("lock uploads");

        let refused = strict
            .create_upload(
                &crate::metadata::suite::upload("busy/x"),
                crate::metadata::suite::NO_CAPS,
            )
            .await;
        assert!(
            matches!(refused, Err(crate::metadata::MetadataError::Busy(_))),
            "{refused:?}"
        );

        let session = crate::metadata::suite::upload("busy/y");
        let task = tokio::spawn({
            let (store, session) = (patient.clone(), session.clone());
            async move {
                store
                    .create_upload(&session, crate::metadata::suite::NO_CAPS)
                    .await
            }
        });
        // Hold the lock until one attempt has failed and the next is waiting: two
        // waits for it with different start times.
        let mut attempts = std::collections::HashSet::new();
        while attempts.len() < 2 && !task.is_finished() {
            let waiting: Vec<String> = sqlx::query_scalar(
                "SELECT query_start::text FROM pg_stat_activity
                 WHERE datname = $1 AND wait_event_type = 'Lock'
                   AND query LIKE 'INSERT INTO uploads%'",
            )
            .bind(&guard.name)
            .fetch_all(&mut watcher)
            .await
            .expect("read pg_stat_activity");
            attempts.extend(waiting);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        sqlx::raw_sql("COMMIT")
            .execute(&mut holder)
            .await
            .expect("unlock");
        task.await.expect("task").expect("created after a retry");
        assert!(attempts.len() >= 2, "{attempts:?}");
        assert!(
            patient
                .get_upload(&session.repo, session.id)
                .await
                .expect("read")
                .is_some()
        );
        drop((holder, watcher, patient, strict, guard));
    }

    /// Replicas starting together on a fresh database migrate it once, all succeeding.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(packs_test_postgres),
        ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
    )]
    async fn replicas_migrate_together() {
        let (url, guard) = create_database().await;
        let mut replicas = Vec::new();
        for _ in 0..4 {
            replicas.push(
                PostgresStore::connect(&url, &PoolOptions::default())
                    .await
                    .expect("connect"),
            );
        }
        let migrated = futures_util::future::join_all(replicas.iter().map(|r| r.migrate())).await;
        for m in migrated {
            m.expect("concurrent migrate");
        }
        crate::metadata::suite::ping(&replicas[0]).await;
        crate::metadata::suite::migrate_twice_is_a_no_op(&replicas[1]).await;
        drop((replicas, guard));
    }
}
