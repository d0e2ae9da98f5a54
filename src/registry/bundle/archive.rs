//! The tar format of bundles, both ways.
//!
//! Writing: the `tar` crate builds each header (GNU format, with a GNU long-name
//! entry before a path over 100 bytes, as its `Builder` writes one) with the fields
//! its deterministic mode fixes: modification time `DETERMINISTIC_TIMESTAMP`, owner
//! and group 0, mode 0644 (0755 for folders). The content between headers is streamed
//! by the caller; [`entry_len`] tells the bytes an entry takes, so an archive's size
//! is known before it is written.
//!
//! Reading: [`read`] runs on a blocking thread over any `Read` (a request body
//! bridged from its stream, or a file), detects gzip by its magic bytes, and hands the
//! entries over one by one: small files whole, blobs as a bounded channel of chunks,
//! so an archive of any size passes in constant memory. It refuses, before reading
//! further: paths that are absolute or climb out (`..`), links, devices and other
//! special entries, entries over their limit, more entries than allowed, more
//! uncompressed bytes than allowed (or, for gzip, per compressed byte), an archive
//! that ends early or without its end-of-archive blocks, and data after them.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tar::{EntryType, Header};
use tokio::sync::mpsc;

use super::{BundleLimits, GZIP_RATIO_GRACE};
use crate::digest::Digest;
use crate::registry::{Error, Result};

/// A tar block.
pub(super) const BLOCK: u64 = 512;
/// The end of an archive: two zero blocks.
pub(super) const END: [u8; 1024] = [0; 1024];
/// Largest `oci-layout` file read.
const MAX_LAYOUT_BYTES: u64 = 64 * 1024;
/// Chunks of a blob handed over at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks that may wait between the reading thread and the consumer.
const CHANNEL_CHUNKS: usize = 8;

/// `size` rounded up to whole blocks.
pub(super) fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A folder (`path` ends in `/`).
    Dir,
    /// A regular file.
    File,
}

fn fixed(header: &mut Header, mode: u32) {
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(tar::DETERMINISTIC_TIMESTAMP);
}

/// The header block(s) of an entry: a GNU long-name entry first when `path` does not
/// fit the header's 100 bytes, as the `tar` crate's `Builder` writes it.
pub(super) fn header(path: &str, size: u64, kind: Kind) -> Vec<u8> {
    let name = path.as_bytes();
    let mut out = Vec::with_capacity(BLOCK as usize);
    let mut h = Header::new_gnu();
    let field = &mut h.as_gnu_mut().expect("a GNU header").name;
    if name.len() > field.len() {
        let mut long = Header::new_gnu();
        let marker = b"././@LongLink";
        long.as_gnu_mut().expect("a GNU header").name[..marker.len()].copy_from_slice(marker);
        fixed(&mut long, 0o644);
        long.set_mtime(0);
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(name.len() as u64 + 1);
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(name);
        out.push(0);
        out.resize(
            out.len() + (padded(name.len() as u64 + 1) as usize - name.len() - 1),
            0,
        );
        let n = field.len();
        field.copy_from_slice(&name[..n]);
    } else {
        field[..name.len()].copy_from_slice(name);
    }
    match kind {
        Kind::Dir => {
            fixed(&mut h, 0o755);
            h.set_entry_type(EntryType::Directory);
        }
        Kind::File => {
            fixed(&mut h, 0o644);
            h.set_entry_type(EntryType::Regular);
        }
    }
    h.set_size(size);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

/// The path of a blob in the layout: `blobs/<alg>/<hex>`.
pub(super) fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Zero bytes that complete an entry of `size` bytes to whole blocks.
pub(super) fn padding(size: u64) -> Bytes {
    Bytes::from(vec![0u8; (padded(size) - size) as usize])
}

/// Bytes an entry takes in the archive: its header(s) and its padded content.
pub(super) fn entry_len(path: &str, size: u64) -> u64 {
    let long = if path.len() > 100 {
        BLOCK + padded(path.len() as u64 + 1)
    } else {
        0
    };
    long + BLOCK + padded(size)
}

// ---------------------------------------------------------------------------------
// Reading

/// What the reading thread hands over, in archive order.
pub(super) enum Event {
    /// The `oci-layout` file.
    Layout(Vec<u8>),
    /// The `index.json` file.
    Index(Vec<u8>),
    /// A blob (`blobs/<alg>/<hex>`), whose bytes follow on `data`; on an error there,
    /// the reason comes next on the events channel.
    Blob {
        /// The digest its name claims.
        digest: Digest,
        /// Its size, from its header.
        size: u64,
        /// Its bytes.
        data: mpsc::Receiver<io::Result<Bytes>>,
    },
    /// The archive ended well, after this many uncompressed bytes.
    End {
        /// Uncompressed bytes read.
        bytes: u64,
    },
}

/// A refusal carried through `io::Error`s (the `Read` chain only speaks those).
#[derive(Debug)]
pub(super) struct Refused(pub Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refused {}

/// An `io::Error` carrying `e`.
pub(super) fn refused_io(e: Error) -> io::Error {
    io::Error::other(Refused(e))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::BundleInvalid(message.into())
}

/// The domain error an `io::Error` of the reading chain stands for.
pub(super) fn from_io(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Refused>()) {
        if let Some(inner) = e.into_inner()
            && let Ok(refused) = inner.downcast::<Refused>()
        {
            return refused.0;
        }
        return Error::Internal("a refusal lost on the way".into());
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return invalid(format!("the archive is truncated: {e}"));
    }
    let said = e.to_string();
    invalid(format!(
        "not a readable tar archive: {}",
        said.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// Counts bytes read into a shared counter.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The uncompressed stream, held to the archive's bounds.
struct Bounded {
    inner: Box<dyn Read>,
    read: u64,
    max: u64,
    /// Compressed bytes read so far, for a gzip archive.
    compressed: Option<Arc<AtomicU64>>,
    ratio: u64,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(refused_io(Error::BundleTooLarge(format!(
                "the archive is larger than {} bytes uncompressed",
                self.max
            ))));
        }
        if let Some(compressed) = &self.compressed {
            let limit = compressed
                .load(Ordering::Relaxed)
                .saturating_mul(self.ratio)
                .saturating_add(GZIP_RATIO_GRACE);
            if self.read > limit {
                return Err(refused_io(Error::BundleTooLarge(format!(
                    "the gzip archive inflates to more than {} bytes per compressed byte \
                     (a gzip bomb?)",
                    self.ratio
                ))));
            }
        }
        Ok(n)
    }
}

/// Where an entry's path points, once checked.
enum Target {
    Layout,
    Index,
    Blob(Digest),
    /// Anything else inside the layout (ignored).
    Other,
}

/// The path of an entry, checked: relative, no `..`, UTF-8; `./` and empty
/// components dropped.
fn safe_path(raw: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(raw).map_err(|_| {
        invalid(format!(
            "entry {:?}: the path is not UTF-8",
            String::from_utf8_lossy(raw)
        ))
    })?;
    if text.starts_with('/') || text.contains('\\') || text.contains('\0') {
        return Err(invalid(format!(
            "entry {text:?}: absolute paths and backslashes are refused"
        )));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(invalid(format!(
                    "entry {text:?}: a path climbing out of the archive (..) is refused"
                )));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn target(path: &str) -> Result<Target> {
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["oci-layout"] => Ok(Target::Layout),
        ["index.json"] => Ok(Target::Index),
        ["blobs", alg, hex] => Digest::parse(&format!("{alg}:{hex}"))
            .map(Target::Blob)
            .map_err(|e| {
                invalid(format!(
                    "entry {path:?}: not a blob this registry reads: {e}"
                ))
            }),
        _ => Ok(Target::Other),
    }
}

/// Reads an archive from `input`, sending what it finds on `events` (see [`Event`]);
/// a refusal is sent as the last event. Stops quietly when the consumer goes away.
pub(super) fn read(
    input: Box<dyn Read + Send>,
    limits: &BundleLimits,
    max_index_bytes: u64,
    events: &mpsc::Sender<Result<Event>>,
) {
    if let Err(e) = read_inner(input, limits, max_index_bytes, events) {
        let _ = events.blocking_send(Err(e));
    }
}

/// `Ok` also when the consumer went away (it has its own reason).
fn read_inner(
    input: Box<dyn Read + Send>,
    limits: &BundleLimits,
    max_index_bytes: u64,
    events: &mpsc::Sender<Result<Event>>,
) -> Result<()> {
    use io::BufRead;
    let compressed_count = Arc::new(AtomicU64::new(0));
    let mut buffered = io::BufReader::with_capacity(
        CHUNK,
        Counted {
            inner: input,
            count: compressed_count.clone(),
        },
    );
    let head = buffered.fill_buf().map_err(from_io)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let (inner, compressed): (Box<dyn Read>, _) = if gzip {
        (
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Some(compressed_count),
        )
    } else {
        (Box::new(buffered), None)
    };
    let bounded = Bounded {
        inner,
        read: 0,
        max: limits.max_archive_bytes,
        compressed,
        ratio: limits.max_gzip_ratio,
    };
    let mut archive = tar::Archive::new(bounded);
    // Where the last entry's content ended (padded): the end-of-archive block follows.
    let mut end_of_entries = 0u64;
    let mut count = 0u64;
    let (mut layout_seen, mut index_seen) = (false, false);
    for entry in archive.entries().map_err(from_io)? {
        let mut entry = entry.map_err(from_io)?;
        count += 1;
        if count > limits.max_entries {
            return Err(Error::BundleTooLarge(format!(
                "the archive has more than {} entries",
                limits.max_entries
            )));
        }
        let size = entry.size();
        end_of_entries = entry.raw_file_position() + padded(size);
        let path = safe_path(&entry.path_bytes())?;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {}
            EntryType::Directory => continue,
            other => {
                let what = match other {
                    EntryType::Symlink => "a symbolic link",
                    EntryType::Link => "a hard link",
                    EntryType::Char | EntryType::Block => "a device",
                    EntryType::Fifo => "a FIFO",
                    EntryType::GNUSparse => "a sparse file",
                    _ => "a special entry",
                };
                return Err(invalid(format!(
                    "entry {path:?} is {what}: only regular files and folders are accepted"
                )));
            }
        }
        let target = target(&path)?;
        let limit = match target {
            Target::Layout => MAX_LAYOUT_BYTES,
            Target::Index => max_index_bytes,
            _ => limits.max_entry_bytes,
        };
        if size > limit {
            return Err(Error::BundleTooLarge(format!(
                "entry {path:?} has {size} bytes, more than the {limit} allowed"
            )));
        }
        let event = match target {
            Target::Layout | Target::Index => {
                let is_layout = matches!(target, Target::Layout);
                let seen = if is_layout {
                    &mut layout_seen
                } else {
                    &mut index_seen
                };
                if std::mem::replace(seen, true) {
                    return Err(invalid(format!("entry {path:?} appears twice")));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(from_io)?;
                if bytes.len() as u64 != size {
                    return Err(invalid(format!("the archive is truncated in {path:?}")));
                }
                if is_layout {
                    Event::Layout(bytes)
                } else {
                    Event::Index(bytes)
                }
            }
            Target::Blob(digest) => {
                let (tx, data) = mpsc::channel(CHANNEL_CHUNKS);
                if events
                    .blocking_send(Ok(Event::Blob { digest, size, data }))
                    .is_err()
                {
                    return Ok(());
                }
                let mut left = size;
                while left > 0 {
                    let mut buf = BytesMut::zeroed(CHUNK.min(left as usize));
                    let n = match entry.read(&mut buf) {
                        Ok(0) => {
                            let e = invalid(format!("the archive is truncated in {path:?}"));
                            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                            return Err(e);
                        }
                        Ok(n) => n,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                            return Err(from_io(e));
                        }
                    };
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            Target::Other => continue,
        };
        if events.blocking_send(Ok(event)).is_err() {
            return Ok(());
        }
    }
    // The entries ended at an all-zero block, or at the end of the input: only the
    // first is an archive's end.
    let mut rest = archive.into_inner();
    if rest.read < end_of_entries + BLOCK {
        return Err(invalid(
            "the archive is truncated: it ends without its end-of-archive blocks",
        ));
    }
    // Then only zeros (the second block, record padding), to the end of the input (a
    // gzip stream's checksum is verified there).
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = rest.read(&mut buf).map_err(from_io)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(invalid("data follows the end of the archive"));
        }
    }
    let _ = events.blocking_send(Ok(Event::End { bytes: rest.read }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_deterministic_and_read_back() {
        let long = format!("blobs/sha512/{}", "a".repeat(128));
        let mut archive = Vec::new();
        for (path, body) in [
            ("blobs/", &b""[..]),
            (long.as_str(), b"hello"),
            ("index.json", b"{}"),
        ] {
            let kind = if path.ends_with('/') {
                Kind::Dir
            } else {
                Kind::File
            };
            let h = header(path, body.len() as u64, kind);
            assert_eq!(h, header(path, body.len() as u64, kind));
            archive.extend_from_slice(&h);
            archive.extend_from_slice(body);
            archive.extend_from_slice(&padding(body.len() as u64));
            assert_eq!(
                (h.len() + body.len() + padding(body.len() as u64).len()) as u64,
                entry_len(path, body.len() as u64)
            );
        }
        archive.extend_from_slice(&END);
        let mut read = tar::Archive::new(&archive[..]);
        let entries: Vec<(String, u64, u64, u32)> = read
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mtime().unwrap(),
                    e.header().uid().unwrap(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("blobs/".into(), tar::DETERMINISTIC_TIMESTAMP, 0, 0o755),
                (long.clone(), tar::DETERMINISTIC_TIMESTAMP, 0, 0o644),
                ("index.json".into(), tar::DETERMINISTIC_TIMESTAMP, 0, 0o644),
            ]
        );
    }

    #[test]
    fn paths_that_leave_the_archive_are_refused() {
        assert_eq!(safe_path(b"./blobs//sha256/ab").unwrap(), "blobs/sha256/ab");
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"blobs/../../x",
            b"a\\..\\b",
            b"\xff",
        ] {
            assert!(
                matches!(safe_path(bad), Err(Error::BundleInvalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
