//! The behavioural suite every [`BlobStore`] backend runs, in the manner of
//! distribution's storage driver testsuites and object_store's `integration.rs`.
//!
//! Each case is an `async fn(&dyn BlobStore)` checking one part of the contract
//! written on the trait. [`blob_store_suite!`] turns every case into a `#[tokio::test]`
//! for one backend; the backends' runs are at the bottom of this file: the filesystem
//! and memory always, S3 when `PACKS_TEST_S3_ENDPOINT` names an S3-compatible server
//! that accepts any credentials (moto), each test in a bucket of its own.

use std::ops::Range;

use bytes::Bytes;
use futures_util::StreamExt;
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError};
use crate::digest::{Algorithm, Digest};

// ---------------------------------------------------------------------------------
// Helpers

/// `len` deterministic pseudo-random bytes (xorshift), different for each `seed`.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

/// A body delivering `bytes` in chunks of `chunk` bytes.
fn body(bytes: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks).boxed()
}

/// A body delivering `bytes` and then failing, as when the client goes away.
fn failing_body(bytes: &[u8]) -> ByteStream {
    let mut chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    chunks.push(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    futures_util::stream::iter(chunks).boxed()
}

async fn read_all(mut stream: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

/// Stores `parts` as the parts of `upload`, in order, checking each returned size.
async fn put_parts(store: &dyn BlobStore, upload: Uuid, parts: &[&[u8]]) -> Vec<PartInfo> {
    let mut infos = Vec::new();
    let mut offset = 0;
    for (number, bytes) in parts.iter().enumerate() {
        let info = store
            .put_part(upload, number as u32, offset, body(bytes, 64 * 1024))
            .await
            .expect("put_part");
        offset += bytes.len() as u64;
        assert_eq!(info.size, bytes.len() as u64, "size of part {number}");
        infos.push(info);
    }
    infos
}

/// The bytes of `digest` (or of `range` of it), or the error opening it.
async fn get(
    store: &dyn BlobStore,
    digest: &Digest,
    range: Option<Range<u64>>,
) -> Result<Vec<u8>, StorageError> {
    Ok(read_all(store.get(digest, range).await?).await)
}

async fn read_part(
    store: &dyn BlobStore,
    upload: Uuid,
    part: &PartInfo,
) -> Result<Vec<u8>, StorageError> {
    Ok(read_all(store.read_part(upload, part).await?).await)
}

/// Asserts that none of `parts` of `upload` can be read any more.
async fn assert_parts_gone(store: &dyn BlobStore, upload: Uuid, parts: &[PartInfo]) {
    for p in parts {
        match read_part(store, upload, p).await {
            Err(StorageError::NotFound(_)) => {}
            other => panic!("part {} of {upload} should be gone, got {other:?}", p.id),
        }
    }
}

/// Commits `bytes` as one single-part upload and returns its digest.
async fn store_blob(store: &dyn BlobStore, bytes: &[u8]) -> Digest {
    let digest = sha256(bytes);
    let upload = Uuid::new_v4();
    let parts = put_parts(store, upload, &[bytes]).await;
    store.commit(upload, &parts, &digest).await.expect("commit");
    digest
}

// ---------------------------------------------------------------------------------
// Cases

/// One part, committed: the blob reads back exactly, `stat` gives its size, and the
/// upload's part is gone.
pub(crate) async fn commit_single_part(store: &dyn BlobStore) {
    let bytes = data(100_000, 1);
    let digest = sha256(&bytes);
    let upload = Uuid::new_v4();
    let parts = put_parts(store, upload, &[&bytes]).await;
    assert_eq!(read_part(store, upload, &parts[0]).await.unwrap(), bytes);
    assert_eq!(
        store.stat(&digest).await.unwrap(),
        None,
        "not a blob before commit"
    );

    store.commit(upload, &parts, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(get(store, &digest, None).await.unwrap(), bytes);
    assert_parts_gone(store, upload, &parts).await;
}

/// Many parts of uneven sizes (one of them empty) are joined in order.
pub(crate) async fn commit_many_parts(store: &dyn BlobStore) {
    let a = data(70_001, 2);
    let b = data(1, 3);
    let c: Vec<u8> = Vec::new();
    let d = data(200_000, 4);
    let whole: Vec<u8> = [&a[..], &b, &c, &d].concat();
    let digest = sha256(&whole);
    let upload = Uuid::new_v4();
    let parts = put_parts(store, upload, &[&a, &b, &c, &d]).await;
    let sizes: Vec<u64> = parts.iter().map(|p| p.size).collect();
    assert_eq!(sizes, [70_001, 1, 0, 200_000]);
    let ids: std::collections::HashSet<&str> = parts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), parts.len(), "part ids are distinct");

    store.commit(upload, &parts, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(whole.len() as u64));
    assert_eq!(get(store, &digest, None).await.unwrap(), whole);
    assert_parts_gone(store, upload, &parts).await;
}

/// Committing a digest that is already stored only removes the new upload's parts.
pub(crate) async fn commit_existing_blob(store: &dyn BlobStore) {
    let bytes = data(10_000, 5);
    let digest = store_blob(store, &bytes).await;

    let again = Uuid::new_v4();
    let parts = put_parts(store, again, &[&bytes[..4000], &bytes[4000..]]).await;
    store.commit(again, &parts, &digest).await.unwrap();
    assert_parts_gone(store, again, &parts).await;
    assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(get(store, &digest, None).await.unwrap(), bytes);
}

/// The empty blob, from no parts at all and from one empty part.
pub(crate) async fn empty_blob(store: &dyn BlobStore) {
    let digest = sha256(b"");
    store.commit(Uuid::new_v4(), &[], &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(0));
    assert_eq!(get(store, &digest, None).await.unwrap(), b"");
    assert!(matches!(
        get(store, &digest, Some(0..1)).await,
        Err(StorageError::RangeNotSatisfiable)
    ));

    store.delete(&digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    let upload = Uuid::new_v4();
    let parts = put_parts(store, upload, &[b""]).await;
    assert_eq!(parts[0].size, 0);
    store.commit(upload, &parts, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(0));
    assert_eq!(get(store, &digest, None).await.unwrap(), b"");
    assert_parts_gone(store, upload, &parts).await;
}

/// Ranges within the blob are served exactly, up to and including its last byte;
/// ranges that are empty or reach past the end are `RangeNotSatisfiable`.
pub(crate) async fn get_ranges(store: &dyn BlobStore) {
    let bytes = data(10_000, 6);
    let len = bytes.len() as u64;
    let digest = store_blob(store, &bytes).await;

    for r in [
        0..1,
        0..len,
        1..len,
        5..17,
        len - 1..len,
        len - 100..len,
        4096..8192,
    ] {
        let got = get(store, &digest, Some(r.clone())).await.unwrap();
        assert_eq!(got, &bytes[r.start as usize..r.end as usize], "range {r:?}");
    }
    for r in [
        len..len + 1,
        len + 10..len + 20,
        len - 1..len + 1,
        0..len + 1,
        5..5,
    ] {
        match get(store, &digest, Some(r.clone())).await {
            Err(StorageError::RangeNotSatisfiable) => {}
            other => {
                panic!("range {r:?} of {len} bytes: expected RangeNotSatisfiable, got {other:?}")
            }
        }
    }
    let missing = sha256(b"not stored");
    assert!(matches!(
        get(store, &missing, None).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        get(store, &missing, Some(0..1)).await,
        Err(StorageError::NotFound(_))
    ));
}

/// Reads yield exactly the bytes asked for, whatever the backend's chunking: a blob
/// of several MiB, read whole and in ranges that start and end on and off 4 KiB and
/// MiB boundaries, and one byte at a time at the edges.
pub(crate) async fn ranges_across_chunks(store: &dyn BlobStore) {
    const MIB: u64 = 1024 * 1024;
    let bytes = data(5 * MIB as usize + 4097, 16);
    let len = bytes.len() as u64;
    let digest = store_blob(store, &bytes).await;
    assert!(
        get(store, &digest, None).await.unwrap() == bytes,
        "whole blob"
    );
    for r in [
        0..MIB,
        0..2 * MIB + 1,
        1..2 * MIB,
        4095..4097,
        4096..2 * MIB + 4096,
        2 * MIB - 1..2 * MIB + 1,
        2 * MIB - 3..4 * MIB + 3,
        MIB + 17..len,
        4 * MIB..len,
        len - 4097..len,
        len - 2..len,
    ] {
        let got = get(store, &digest, Some(r.clone())).await.unwrap();
        assert!(
            got == bytes[r.start as usize..r.end as usize],
            "range {r:?}: {} bytes back",
            got.len()
        );
    }
}

/// `stat` tells present from missing; `delete` removes, and deleting a missing blob is Ok.
pub(crate) async fn stat_and_delete(store: &dyn BlobStore) {
    let missing = sha256(b"never stored");
    assert_eq!(store.stat(&missing).await.unwrap(), None);
    store.delete(&missing).await.unwrap();

    let bytes = data(1234, 7);
    let digest = store_blob(store, &bytes).await;
    assert_eq!(store.stat(&digest).await.unwrap(), Some(1234));
    store.delete(&digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(matches!(
        get(store, &digest, None).await,
        Err(StorageError::NotFound(_))
    ));
    store.delete(&digest).await.unwrap();
}

/// `abort` removes every part, leaves blobs alone, and may be repeated.
pub(crate) async fn abort_removes_parts(store: &dyn BlobStore) {
    let kept = data(500, 8);
    let kept_digest = store_blob(store, &kept).await;

    let upload = Uuid::new_v4();
    let parts = put_parts(store, upload, &[&data(3000, 9), &data(10, 10)]).await;
    store.abort(upload).await.unwrap();
    assert_parts_gone(store, upload, &parts).await;
    store.abort(upload).await.unwrap();
    store.abort(Uuid::new_v4()).await.unwrap();
    assert_eq!(get(store, &kept_digest, None).await.unwrap(), kept);

    // An upload's parts are its own: aborting one leaves another's alone.
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let pa = put_parts(store, a, &[b"aaa"]).await;
    let pb = put_parts(store, b, &[b"bbb"]).await;
    store.abort(a).await.unwrap();
    assert_parts_gone(store, a, &pa).await;
    assert_eq!(read_part(store, b, &pb[0]).await.unwrap(), b"bbb");
    store.abort(b).await.unwrap();
}

/// `read_part` returns a part's bytes; an unknown part is `NotFound`.
pub(crate) async fn read_parts(store: &dyn BlobStore) {
    let upload = Uuid::new_v4();
    let first = data(300_000, 11);
    let second = data(17, 12);
    let parts = put_parts(store, upload, &[&first, &second]).await;
    assert_eq!(read_part(store, upload, &parts[0]).await.unwrap(), first);
    assert_eq!(read_part(store, upload, &parts[1]).await.unwrap(), second);

    let bogus = PartInfo {
        id: format!("{}-missing", parts[0].id),
        size: 1,
    };
    assert!(matches!(
        read_part(store, upload, &bogus).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        read_part(store, Uuid::new_v4(), &parts[0]).await,
        Err(StorageError::NotFound(_))
    ));
    store.abort(upload).await.unwrap();
}

/// A body failing mid-way is `StorageError::Body`; nothing appears under the blob's
/// key, and the upload can retry the part and finish.
pub(crate) async fn failing_body_stores_nothing(store: &dyn BlobStore) {
    let bytes = data(50_000, 13);
    let digest = sha256(&bytes);
    let partial = sha256(&bytes[..20_000]);
    let upload = Uuid::new_v4();
    match store
        .put_part(upload, 0, 0, failing_body(&bytes[..20_000]))
        .await
    {
        Err(StorageError::Body(e)) => assert!(e.to_string().contains("client went away"), "{e}"),
        other => panic!("expected StorageError::Body, got {other:?}"),
    }
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert_eq!(store.stat(&partial).await.unwrap(), None);

    let parts = put_parts(store, upload, &[&bytes]).await;
    store.commit(upload, &parts, &digest).await.unwrap();
    assert_eq!(get(store, &digest, None).await.unwrap(), bytes);
    assert_eq!(store.stat(&partial).await.unwrap(), None);
    store.abort(upload).await.unwrap();

    // And a failure with nothing stored yet.
    let other = Uuid::new_v4();
    assert!(matches!(
        store.put_part(other, 0, 0, failing_body(b"")).await,
        Err(StorageError::Body(_))
    ));
    store.abort(other).await.unwrap();
}

/// A later part whose body fails leaves the parts before it as they were: the part
/// is written again at the same offset and the upload commits to exactly its bytes.
pub(crate) async fn failed_part_then_resume(store: &dyn BlobStore) {
    let bytes = data(6 * 1024 * 1024 + 33, 17);
    let digest = sha256(&bytes);
    let upload = Uuid::new_v4();
    let cut = 5 * 1024 * 1024 + 1;
    let first = store
        .put_part(upload, 0, 0, body(&bytes[..cut], 256 * 1024))
        .await
        .unwrap();
    for sent in [1, 4097, bytes.len() - cut] {
        let failed = store
            .put_part(upload, 1, cut as u64, failing_body(&bytes[cut..cut + sent]))
            .await;
        assert!(matches!(failed, Err(StorageError::Body(_))), "{failed:?}");
    }
    let second = store
        .put_part(upload, 1, cut as u64, body(&bytes[cut..], 64 * 1024))
        .await
        .unwrap();
    assert_eq!(
        read_part(store, upload, &first).await.unwrap(),
        &bytes[..cut]
    );
    store
        .commit(upload, &[first, second], &digest)
        .await
        .unwrap();
    assert!(
        get(store, &digest, None).await.unwrap() == bytes,
        "blob differs"
    );
}

/// Two uploads of the same content committing at the same time both succeed, and the
/// blob holds that content.
pub(crate) async fn concurrent_commits(store: &dyn BlobStore) {
    let bytes = data(300_000, 14);
    let digest = sha256(&bytes);
    let (u1, u2, u3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let p1 = put_parts(store, u1, &[&bytes]).await;
    let p2 = put_parts(store, u2, &[&bytes[..100_000], &bytes[100_000..]]).await;
    let p3 = put_parts(store, u3, &[&bytes[..1], &bytes[1..]]).await;
    let (r1, r2, r3) = tokio::join!(
        store.commit(u1, &p1, &digest),
        store.commit(u2, &p2, &digest),
        store.commit(u3, &p3, &digest),
    );
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(get(store, &digest, None).await.unwrap(), bytes);
    assert_parts_gone(store, u1, &p1).await;
    assert_parts_gone(store, u2, &p2).await;
    assert_parts_gone(store, u3, &p3).await;
}

/// A blob of several MiB in several parts, each sent in small chunks, reads back
/// exactly, including a range across a part boundary.
pub(crate) async fn multi_mib_blob(store: &dyn BlobStore) {
    const MIB: usize = 1024 * 1024;
    let bytes = data(9 * MIB + 12_345, 15);
    let digest = sha256(&bytes);
    let upload = Uuid::new_v4();
    let cuts = [0, 5 * MIB + 7, 8 * MIB, bytes.len()];
    let mut parts = Vec::new();
    for (number, w) in cuts.windows(2).enumerate() {
        let info = store
            .put_part(
                upload,
                number as u32,
                w[0] as u64,
                body(&bytes[w[0]..w[1]], 16 * 1024),
            )
            .await
            .unwrap();
        assert_eq!(info.size, (w[1] - w[0]) as u64);
        parts.push(info);
    }
    store.commit(upload, &parts, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    let back = get(store, &digest, None).await.unwrap();
    assert!(back == bytes, "{} bytes read back differ", back.len());
    let across = (5 * MIB - 100) as u64..(5 * MIB + 100) as u64;
    let got = get(store, &digest, Some(across.clone())).await.unwrap();
    assert_eq!(got, &bytes[across.start as usize..across.end as usize]);
    assert_parts_gone(store, upload, &parts).await;
}

/// `ping` succeeds, also many at once (as `/readyz` probes may arrive).
pub(crate) async fn ping(store: &dyn BlobStore) {
    store.ping().await.unwrap();
    let pings = futures_util::future::join_all((0..16).map(|_| store.ping())).await;
    for p in pings {
        p.unwrap();
    }
}

/// `list_blobs` lists every stored blob once, in key order (algorithm, then hex), page
/// after page, with its size and a recent write time; uploads in progress and
/// deleted blobs are not listed.
pub(crate) async fn list_blobs_in_key_order(store: &dyn BlobStore) {
    assert_eq!(store.list_blobs(None, 10).await.unwrap(), []);
    let mut blobs = Vec::new();
    for i in 0..7u64 {
        let bytes = data(100 + i as usize, 40 + i);
        blobs.push((store_blob(store, &bytes).await, bytes.len() as u64));
    }
    let sha512 = Digest::of(Algorithm::Sha512, b"a sha512 blob");
    let upload = Uuid::new_v4();
    let parts = put_parts(store, upload, &[b"a sha512 blob"]).await;
    store.commit(upload, &parts, &sha512).await.unwrap();
    blobs.push((sha512, 13));
    // In progress: not a blob.
    put_parts(store, Uuid::new_v4(), &[b"half an upload"]).await;
    let key = |d: &Digest| (d.algorithm().as_str().to_owned(), d.hex().to_owned());
    blobs.sort_by_key(|(d, _)| key(d));

    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut listed = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store.list_blobs(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3, "a page of {}", page.len());
        for b in &page {
            assert!(b.modified > started, "written just now: {:?}", b.modified);
        }
        after = page.last().map(|b| b.digest.clone());
        let full = page.len() == 3;
        listed.extend(page.into_iter().map(|b| (b.digest, b.size)));
        if !full {
            break;
        }
    }
    assert_eq!(listed, blobs);

    store.delete(&blobs[2].0).await.unwrap();
    let all = store.list_blobs(None, 100).await.unwrap();
    assert_eq!(all.len(), blobs.len() - 1);
    assert!(all.iter().all(|b| b.digest != blobs[2].0));
}

/// Records: written (replacing), read back, listed by prefix in byte order (never
/// among blobs), deleted (deleting a missing one is fine).
pub(crate) async fn records(store: &dyn BlobStore) {
    assert_eq!(store.list_records("").await.unwrap(), Vec::<String>::new());
    assert_eq!(store.get_record("a/b/x").await.unwrap(), None);
    store
        .put_record("a/b/x", Bytes::from_static(b"one"))
        .await
        .unwrap();
    store
        .put_record("a/b/x", Bytes::from_static(b"two"))
        .await
        .unwrap();
    store
        .put_record("a/c/y", Bytes::from_static(b"three"))
        .await
        .unwrap();
    store
        .put_record("ab/z", Bytes::from_static(b"four"))
        .await
        .unwrap();
    assert_eq!(
        store.get_record("a/b/x").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(store.list_records("a/").await.unwrap(), ["a/b/x", "a/c/y"]);
    assert_eq!(
        store.list_records("").await.unwrap(),
        ["a/b/x", "a/c/y", "ab/z"]
    );
    assert_eq!(store.list_blobs(None, 10).await.unwrap(), []);
    store.delete_record("a/b/x").await.unwrap();
    store.delete_record("a/b/x").await.unwrap();
    assert_eq!(store.list_records("a/").await.unwrap(), ["a/c/y"]);
}

// ---------------------------------------------------------------------------------
// Backends

/// One `#[tokio::test]` per case for the backend that `$open` (an async fn returning
/// `(store, guard)`) opens afresh for each case; an attribute given after it (e.g. the
/// `ignore` of a backend that needs a server) goes on every case.
macro_rules! blob_store_suite {
    ($open:path) => {
        // An attribute that does nothing: the cases run unconditionally.
        blob_store_suite!($open, #[cfg_attr(any(), ignore)]);
    };
    ($open:path, #[$attr:meta]) => {
        blob_store_suite!(@cases $open; $attr;
            commit_single_part, commit_many_parts, commit_existing_blob, empty_blob,
            get_ranges, ranges_across_chunks, stat_and_delete, abort_removes_parts, read_parts,
            failing_body_stores_nothing, failed_part_then_resume, concurrent_commits,
            multi_mib_blob, list_blobs_in_key_order, records, ping);
    };
    (@cases $open:path; $attr:meta; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[$attr]
            async fn $case() {
                let (store, _guard) = $open().await;
                $crate::storage::suite::$case(&store).await;
            }
        )*
    };
}

mod fs {
    use crate::storage::FsBlobStore;

    async fn open() -> (FsBlobStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FsBlobStore::open(dir.path()).expect("open fs store");
        (store, dir)
    }

    blob_store_suite!(open);

    /// The same cases with blobs written around the page cache (`O_DIRECT`,
    /// `storage.cache_writes = false`).
    mod direct_writes {
        use crate::storage::FsBlobStore;

        async fn open() -> (FsBlobStore, tempfile::TempDir) {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = FsBlobStore::open(dir.path())
                .expect("open fs store")
                .with_cached_writes(false);
            (store, dir)
        }

        blob_store_suite!(open);
    }
}

mod memory {
    use crate::storage::ObjectBlobStore;

    async fn open() -> (ObjectBlobStore, ()) {
        (ObjectBlobStore::in_memory(), ())
    }

    blob_store_suite!(open);
}

mod s3 {
    use crate::config::S3Config;
    use crate::storage::ObjectBlobStore;

    const ENDPOINT_VAR: &str = "PACKS_TEST_S3_ENDPOINT";

    /// A fresh bucket, and a store over it under a key prefix (as a shared bucket is
    /// used). The cases are ignored unless the variable is set (`build.rs`): missing
    /// here, it means `CI` is set without it, a failure.
    async fn open() -> (ObjectBlobStore, ()) {
        let endpoint = std::env::var(ENDPOINT_VAR)
            .unwrap_or_else(|_| panic!("{ENDPOINT_VAR} must name an S3-compatible server"));
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let bucket = format!("packs-suite-{}", uuid::Uuid::new_v4().simple());
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("reach PACKS_TEST_S3_ENDPOINT");
        assert!(
            created.status().is_success(),
            "create bucket: {}",
            created.status()
        );
        let config = S3Config {
            bucket,
            endpoint,
            access_key_id: "packs-test".into(),
            secret_access_key: "packs-test".to_owned().into(),
            prefix: "registry/".into(),
            ..S3Config::default()
        };
        (ObjectBlobStore::s3(&config).expect("S3 store"), ())
    }

    blob_store_suite!(
        open,
        #[cfg_attr(
            not(packs_test_s3),
            ignore = "needs an S3-compatible server: set PACKS_TEST_S3_ENDPOINT"
        )]
    );
}
