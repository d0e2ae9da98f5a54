//! Import: an archive staged and verified whole before anything is visible, then
//! pushed through the registry's own blob and manifest paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{ANNOTATION_REF_NAME, ImageIndex, OciLayout};
use tokio::sync::mpsc;

use super::archive::{self, Event};
use super::{ANNOTATION_PACK_ID, ANNOTATION_PACK_VERSION, BundlePack};
use crate::digest::Digest;
use crate::names::{Reference, RepoName, Tag};
use crate::registry::manifests::{Parsed, check};
use crate::registry::packs::{MAX_CONFIG_BYTES, PACK_CONFIG, ValidPack, validate_manifest};
use crate::registry::uploads::StagedBlob;
use crate::registry::{Error, Registry, Result};
use crate::storage::ByteStream;

/// Deepest nesting of indexes followed.
const MAX_DEPTH: usize = 8;

fn invalid(message: impl Into<String>) -> Error {
    Error::BundleInvalid(message.into())
}

/// A blob of the archive, verified against its name.
#[derive(Debug)]
struct ArchiveBlob {
    size: u64,
    /// Its bytes, staged; `None` when the registry already stored them (then only
    /// hashed, not written again).
    staged: Option<StagedBlob>,
}

/// A manifest of the archive, read and checked.
#[derive(Debug, Clone)]
struct Node {
    media_type: String,
    /// Blobs it references (config, layers).
    blobs: Vec<Digest>,
    /// Manifests it references (index children).
    children: Vec<Digest>,
    subject: Option<Digest>,
    /// The pack it is, when its config is a valid pack manifest.
    pack: Option<(ValidPack, Digest)>,
}

/// One manifest to push into one repository.
#[derive(Debug, Clone)]
struct Planned {
    repo: RepoName,
    digest: Digest,
    tags: Vec<Tag>,
    /// Whether the repository lacks the manifest, and which tags and blob links it
    /// lacks (filled in by the check against the registry).
    manifest_new: bool,
    tags_new: Vec<Tag>,
    links_new: Vec<Digest>,
}

/// An archive read, verified and staged: nothing of it is visible yet. Hand it to
/// [`Registry::import_staged`] to push it, or [`Registry::discard_bundle`] to drop it.
#[derive(Debug)]
pub struct StagedBundle {
    blobs: BTreeMap<Digest, ArchiveBlob>,
    nodes: HashMap<Digest, Node>,
    planned: Vec<Planned>,
    /// The packs in the archive.
    pub packs: Vec<BundlePack>,
    /// Whether each pack (same order) is new to the registry.
    pub packs_new: Vec<bool>,
    /// Manifests that are referrers (signatures, SBOMs, attestations).
    pub referrers: usize,
    /// Uncompressed bytes of the archive.
    pub bytes: u64,
}

impl StagedBundle {
    /// Repositories the import writes (or would, were they not up to date).
    pub fn repositories(&self) -> BTreeSet<RepoName> {
        self.planned.iter().map(|p| p.repo.clone()).collect()
    }

    /// Manifests in the archive.
    pub fn manifests(&self) -> usize {
        self.nodes.len()
    }

    /// Blobs in the archive that are not manifests.
    pub fn blobs(&self) -> usize {
        self.blobs
            .keys()
            .filter(|d| !self.nodes.contains_key(*d))
            .count()
    }

    /// Whether the registry already holds everything in the archive.
    pub fn nothing_new(&self) -> bool {
        self.planned
            .iter()
            .all(|p| !p.manifest_new && p.tags_new.is_empty() && p.links_new.is_empty())
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// The packs in the bundle, and whether each was added.
    pub packs: Vec<(BundlePack, bool)>,
    /// Manifests stored that the registry did not hold (per repository).
    pub manifests_added: usize,
    /// Manifests already there.
    pub manifests_present: usize,
    /// Blob links added (a blob linked into a repository that lacked it).
    pub blobs_added: usize,
    /// Blob links already there.
    pub blobs_present: usize,
    /// Bytes of blobs the registry stored anew.
    pub bytes_added: u64,
    /// Tags added.
    pub tags_added: usize,
    /// Referrers in the bundle.
    pub referrers: usize,
    /// Repositories written.
    pub repositories: Vec<String>,
}

impl ImportReport {
    /// Whether the import changed nothing.
    pub fn nothing_new(&self) -> bool {
        self.manifests_added == 0 && self.blobs_added == 0 && self.tags_added == 0
    }
}

/// `<repository>:<tag>` from a `ref.name`, if it is one.
fn repo_and_tag(name: &str) -> Option<(RepoName, Tag)> {
    let (repo, tag) = name.rsplit_once(':')?;
    if tag.contains('/') {
        return None;
    }
    Some((RepoName::parse(repo).ok()?, Tag::parse(tag).ok()?))
}

impl Registry {
    /// Reads an archive (`.tar` or `.tar.gz`) from a byte stream: see
    /// [`stage_bundle_from`](Self::stage_bundle_from).
    pub async fn stage_bundle(&self, body: ByteStream) -> Result<StagedBundle> {
        let body = body.map_err(|e| archive::refused_io(Error::Body(e.to_string())));
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        self.stage_bundle_from(Box::new(reader)).await
    }

    /// Reads an archive (`.tar` or `.tar.gz`) from `input` on a blocking thread,
    /// stages its blobs (each verified against its name as it streams; bytes the
    /// registry already has are only hashed), then verifies the whole: `oci-layout`
    /// and `index.json` present and well-formed, everything `index.json` names
    /// present, every manifest parsed with every blob and child it references
    /// present with the size it declares, each manifest's repository known (a pack's
    /// from its id, others from their `ref.name`, referrers from their subject), and
    /// no tag in the registry pointing elsewhere. Nothing is visible; on a refusal
    /// the staged bytes are dropped.
    pub async fn stage_bundle_from(&self, input: Box<dyn Read + Send>) -> Result<StagedBundle> {
        let (tx, mut rx) = mpsc::channel(1);
        let limits = self.limits.bundles.clone();
        let max_index = self.limits.max_manifest_bytes;
        let reader =
            tokio::task::spawn_blocking(move || archive::read(input, &limits, max_index, &tx));
        let mut blobs: BTreeMap<Digest, ArchiveBlob> = BTreeMap::new();
        let received = self.receive(&mut rx, &mut blobs).await;
        drop(rx);
        let _ = reader.await;
        match received {
            Ok((layout, index, bytes)) => self.verify_bundle(blobs, &layout, &index, bytes).await,
            Err(e) => {
                self.drop_blobs(blobs).await;
                Err(e)
            }
        }
    }

    /// Drops a staged bundle without importing it.
    pub async fn discard_bundle(&self, staged: StagedBundle) {
        self.drop_blobs(staged.blobs).await;
    }

    async fn drop_blobs(&self, blobs: BTreeMap<Digest, ArchiveBlob>) {
        for blob in blobs.into_values() {
            if let Some(s) = blob.staged {
                self.discard_staged(&s).await;
            }
        }
    }

    /// Takes the reading thread's events: the layout files and every blob, staged.
    async fn receive(
        &self,
        rx: &mut mpsc::Receiver<Result<Event>>,
        blobs: &mut BTreeMap<Digest, ArchiveBlob>,
    ) -> Result<(Vec<u8>, Vec<u8>, u64)> {
        let (mut layout, mut index) = (None, None);
        loop {
            let event = match rx.recv().await {
                Some(event) => event?,
                None => return Err(Error::Internal("the bundle reader stopped early".into())),
            };
            match event {
                Event::Layout(b) => layout = Some(b),
                Event::Index(b) => index = Some(b),
                Event::End { bytes } => {
                    let layout = layout.ok_or_else(|| {
                        invalid("no oci-layout file: the archive is not an OCI image layout")
                    })?;
                    let index = index.ok_or_else(|| {
                        invalid("no index.json: the archive is not an OCI image layout")
                    })?;
                    return Ok((layout, index, bytes));
                }
                Event::Blob { digest, size, data } => {
                    if blobs.contains_key(&digest) {
                        return Err(invalid(format!(
                            "{} appears twice",
                            archive::blob_path(&digest)
                        )));
                    }
                    let stored = matches!(self.blobs.stat(&digest).await, Ok(Some(s)) if s == size);
                    let outcome = if stored {
                        hash_only(&digest, data).await.map(|d| (d, None))
                    } else {
                        let stream: ByteStream =
                            futures_util::stream::unfold(data, |mut data| async move {
                                data.recv().await.map(|chunk| (chunk, data))
                            })
                            .boxed();
                        self.stage_blob(digest.algorithm(), stream, size, "bundle entry")
                            .await
                            .map(|s| (s.digest.clone(), Some(s)))
                    };
                    let (actual, staged) = match outcome {
                        Ok(v) => v,
                        // The reader's reason, when it stopped the blob's bytes.
                        Err(e) => {
                            return Err(match rx.recv().await {
                                Some(Err(reason)) => reason,
                                _ => e,
                            });
                        }
                    };
                    if actual != digest {
                        if let Some(s) = &staged {
                            self.discard_staged(s).await;
                        }
                        return Err(invalid(format!(
                            "{} is corrupted: its content hashes to {actual}",
                            archive::blob_path(&digest)
                        )));
                    }
                    blobs.insert(digest, ArchiveBlob { size, staged });
                }
            }
        }
    }

    /// The bytes of a blob of the archive (at most `limit`).
    async fn archive_bytes(
        &self,
        blobs: &BTreeMap<Digest, ArchiveBlob>,
        digest: &Digest,
        limit: u64,
    ) -> Result<Bytes> {
        let blob = blobs
            .get(digest)
            .ok_or_else(|| Error::Internal(format!("{digest} is not staged")))?;
        if blob.size > limit {
            return Err(invalid(format!(
                "{digest} is {} bytes, more than the {limit} a manifest may have",
                blob.size
            )));
        }
        let mut stream = match &blob.staged {
            Some(s) => self.read_staged(s).await?,
            None => self.blobs.get(digest, None).await?,
        };
        let mut out = Vec::with_capacity(blob.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Internal(format!("reading {digest}: {e}")))?;
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != blob.size {
            return Err(Error::Internal(format!(
                "{digest}: read {} of {} bytes",
                out.len(),
                blob.size
            )));
        }
        Ok(Bytes::from(out))
    }

    async fn verify_bundle(
        &self,
        blobs: BTreeMap<Digest, ArchiveBlob>,
        layout: &[u8],
        index: &[u8],
        bytes: u64,
    ) -> Result<StagedBundle> {
        let mut staged = StagedBundle {
            blobs,
            nodes: HashMap::new(),
            planned: Vec::new(),
            packs: Vec::new(),
            packs_new: Vec::new(),
            referrers: 0,
            bytes,
        };
        match self.plan_import(&mut staged, layout, index).await {
            Ok(()) => Ok(staged),
            Err(e) => {
                self.discard_bundle(staged).await;
                Err(e)
            }
        }
    }

    async fn plan_import(
        &self,
        staged: &mut StagedBundle,
        layout: &[u8],
        index: &[u8],
    ) -> Result<()> {
        let layout: OciLayout = serde_json::from_slice(layout)
            .map_err(|e| invalid(format!("oci-layout is not an OCI layout file: {e}")))?;
        if layout.image_layout_version() != "1.0.0" {
            return Err(invalid(format!(
                "oci-layout: image layout version {:?} is not 1.0.0",
                layout.image_layout_version()
            )));
        }
        let index: ImageIndex = serde_json::from_slice(index)
            .map_err(|e| invalid(format!("index.json is not an OCI image index: {e}")))?;

        // Every manifest index.json names, and everything they reach, read and checked.
        struct Top {
            digest: Digest,
            whence: String,
            ref_name: Option<String>,
            pack_id: Option<String>,
            pack_version: Option<String>,
        }
        let mut tops = Vec::new();
        for (i, d) in index.manifests().iter().enumerate() {
            let whence = format!("index.json manifests[{i}]");
            let digest = Digest::parse(d.digest().as_ref())
                .map_err(|e| invalid(format!("{whence}: {e}")))?;
            self.load_nodes(staged, &digest, d.size(), d.media_type().as_ref(), &whence)
                .await?;
            let annotation = |key: &str| d.annotations().as_ref().and_then(|a| a.get(key)).cloned();
            tops.push(Top {
                digest,
                whence,
                ref_name: annotation(ANNOTATION_REF_NAME),
                pack_id: annotation(ANNOTATION_PACK_ID),
                pack_version: annotation(ANNOTATION_PACK_VERSION),
            });
        }

        // Where each goes: a pack to its repository under its version's tag; another
        // manifest to the `<repository>:<tag>` of its ref name; a referrer to its
        // subject's repositories; an index's children with their index.
        let mut repos_of: HashMap<Digest, Vec<RepoName>> = HashMap::new();
        let mut pending: Vec<&Top> = Vec::new();
        for top in &tops {
            let node = &staged.nodes[&top.digest];
            if node.subject.is_some() {
                pending.push(top);
                continue;
            }
            if let Some((pack, _)) = &node.pack {
                let m = &pack.manifest;
                if top.pack_id.as_ref().is_some_and(|id| id != &m.pack_id)
                    || top.pack_version.as_ref().is_some_and(|v| v != &m.version)
                {
                    return Err(invalid(format!(
                        "{}: its annotations name another pack than its manifest ({}@{})",
                        top.whence, m.pack_id, m.version
                    )));
                }
                let repo = self.pack_repo(&m.pack_id)?;
                let tag = pack.tag.clone();
                self.assign(staged, &mut repos_of, &repo, &top.digest, Some(tag));
            } else if let Some((repo, tag)) = top.ref_name.as_deref().and_then(repo_and_tag) {
                self.assign(staged, &mut repos_of, &repo, &top.digest, Some(tag));
            } else {
                pending.push(top);
            }
        }
        // Referrers follow their subjects (which may be referrers themselves).
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for top in pending {
                let node = &staged.nodes[&top.digest];
                let subject_repos = node.subject.as_ref().and_then(|s| repos_of.get(s)).cloned();
                match subject_repos {
                    Some(repos) => {
                        staged.referrers += 1;
                        for repo in repos {
                            self.assign(staged, &mut repos_of, &repo, &top.digest, None);
                        }
                    }
                    None => still.push(top),
                }
            }
            pending = still;
            if pending.len() == before || pending.is_empty() {
                break;
            }
        }
        for top in pending {
            if repos_of.contains_key(&top.digest) {
                continue;
            }
            let node = &staged.nodes[&top.digest];
            if let Some((repo, tag)) = top.ref_name.as_deref().and_then(repo_and_tag) {
                if node.subject.is_some() {
                    staged.referrers += 1;
                }
                self.assign(staged, &mut repos_of, &repo, &top.digest, Some(tag));
                continue;
            }
            return Err(invalid(match &node.subject {
                Some(s) => format!(
                    "{} ({}): a referrer whose subject {s} is not in the archive, and no \
                     ref name <repository>:<tag> says where it goes",
                    top.whence, top.digest
                ),
                None => format!(
                    "{} ({}) is not a pack, and has no ref name <repository>:<tag>: \
                     nothing says which repository it belongs to",
                    top.whence, top.digest
                ),
            }));
        }

        // Against the registry: no tag moves, no pack changes type; what is new.
        let mut pack_types: HashMap<String, String> = HashMap::new();
        for i in 0..staged.planned.len() {
            let p = staged.planned[i].clone();
            let node = &staged.nodes[&p.digest];
            let manifest_new = self.meta.get_manifest(&p.repo, &p.digest).await?.is_none();
            let mut tags_new = Vec::new();
            for tag in &p.tags {
                match self.meta.get_manifest_by_tag(&p.repo, tag).await? {
                    Some(r) if r.digest != p.digest => {
                        return Err(Error::PackConflict(format!(
                            "{}:{tag} is {} in the registry and {} in the bundle: an \
                             import never moves a tag",
                            p.repo, r.digest, p.digest
                        )));
                    }
                    Some(_) => {}
                    None => tags_new.push(tag.clone()),
                }
            }
            if let Some((pack, _)) = &node.pack {
                let id = &pack.manifest.pack_id;
                let existing = match pack_types.get(id) {
                    Some(t) => Some(t.clone()),
                    None => self.meta.get_pack(id).await?.map(|s| s.pack_type),
                };
                if let Some(t) = existing
                    && t != pack.pack_type.as_str()
                {
                    return Err(Error::PackConflict(format!(
                        "pack {id} is a {t} pack in the registry, and a {} pack in the bundle",
                        pack.pack_type.as_str()
                    )));
                }
                pack_types.insert(id.clone(), pack.pack_type.as_str().to_owned());
            }
            let sizes = self.meta.linked_blob_sizes(&p.repo, &node.blobs).await?;
            let links_new = node
                .blobs
                .iter()
                .zip(sizes)
                .filter(|(_, s)| s.is_none())
                .map(|(d, _)| d.clone())
                .collect();
            let planned = &mut staged.planned[i];
            planned.manifest_new = manifest_new;
            planned.tags_new = tags_new;
            planned.links_new = links_new;
        }

        // The packs, by id then precedence.
        let mut packs: Vec<(semver::Version, BundlePack, bool)> = Vec::new();
        for p in &staged.planned {
            if let Some((pack, content)) = &staged.nodes[&p.digest].pack {
                if !p.tags.contains(&pack.tag) {
                    continue;
                }
                packs.push((
                    pack.version.clone(),
                    BundlePack {
                        pack_id: pack.manifest.pack_id.clone(),
                        version: pack.manifest.version.clone(),
                        pack_type: pack.pack_type.as_str().to_owned(),
                        digest: content.to_string(),
                        manifest_digest: p.digest.to_string(),
                        repository: p.repo.to_string(),
                        dependencies: pack.manifest.dependencies.clone(),
                        members: pack.manifest.members.clone(),
                    },
                    p.manifest_new || !p.tags_new.is_empty(),
                ));
            }
        }
        packs.sort_by(|a, b| (&a.1.pack_id, &a.0).cmp(&(&b.1.pack_id, &b.0)));
        for (_, pack, new) in packs {
            staged.packs.push(pack);
            staged.packs_new.push(new);
        }
        Ok(())
    }

    /// Plans `digest` (and, first, its children) into `repo`, with `tag`.
    fn assign(
        &self,
        staged: &mut StagedBundle,
        repos_of: &mut HashMap<Digest, Vec<RepoName>>,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<Tag>,
    ) {
        let repos = repos_of.entry(digest.clone()).or_default();
        if !repos.contains(repo) {
            repos.push(repo.clone());
            for child in staged.nodes[digest].children.clone() {
                self.assign(staged, repos_of, repo, &child, None);
            }
            staged.planned.push(Planned {
                repo: repo.clone(),
                digest: digest.clone(),
                tags: Vec::new(),
                manifest_new: false,
                tags_new: Vec::new(),
                links_new: Vec::new(),
            });
        }
        if let Some(tag) = tag
            && let Some(p) = staged
                .planned
                .iter_mut()
                .find(|p| &p.repo == repo && &p.digest == digest)
            && !p.tags.contains(&tag)
        {
            p.tags.push(tag);
        }
    }

    /// Reads and checks the manifest `digest` (as `whence` describes it) and every
    /// manifest it reaches.
    async fn load_nodes(
        &self,
        staged: &mut StagedBundle,
        digest: &Digest,
        size: u64,
        media_type: &str,
        whence: &str,
    ) -> Result<()> {
        let mut stack = vec![(
            digest.clone(),
            size,
            media_type.to_owned(),
            whence.to_owned(),
            0,
        )];
        while let Some((digest, size, media_type, whence, depth)) = stack.pop() {
            if staged.nodes.contains_key(&digest) {
                continue;
            }
            if depth > MAX_DEPTH {
                return Err(invalid(format!(
                    "{whence}: indexes nested deeper than {MAX_DEPTH}"
                )));
            }
            let Some(blob) = staged.blobs.get(&digest) else {
                return Err(invalid(format!(
                    "{whence} names {digest}, which is not in the archive"
                )));
            };
            if blob.size != size {
                return Err(invalid(format!(
                    "{whence} says {digest} has {size} bytes; the archive's has {}",
                    blob.size
                )));
            }
            let body = self
                .archive_bytes(&staged.blobs, &digest, self.limits.max_manifest_bytes)
                .await?;
            let checked = check(Some(&media_type), body, digest.clone())
                .map_err(|e| invalid(format!("{whence}: manifest {digest} is unusable: {e}")))?;
            for r in &checked.blobs {
                match staged.blobs.get(&r.digest) {
                    None => {
                        return Err(invalid(format!(
                            "manifest {digest} ({whence}): its {} is {}, which is not in the archive",
                            r.field, r.digest
                        )));
                    }
                    Some(b) if b.size != r.size => {
                        return Err(invalid(format!(
                            "manifest {digest} ({whence}): its {} says {} bytes; the archive's {} has {}",
                            r.field, r.size, r.digest, b.size
                        )));
                    }
                    Some(_) => {}
                }
            }
            for c in &checked.children {
                // The child's media type, as the index's descriptor gives it.
                let child_type = match &checked.parsed {
                    Parsed::Index => index_child_type(&checked.record.body, &c.field),
                    Parsed::Image(_) => None,
                };
                stack.push((
                    c.digest.clone(),
                    c.size,
                    child_type.unwrap_or_default(),
                    format!("manifest {digest} {}", c.field),
                    depth + 1,
                ));
            }
            let pack = match &checked.parsed {
                Parsed::Image(m)
                    if checked.record.subject.is_none()
                        && m.config().media_type().as_ref() == PACK_CONFIG =>
                {
                    let config = Digest::parse(m.config().digest().as_ref())?;
                    let bytes = self
                        .archive_bytes(&staged.blobs, &config, MAX_CONFIG_BYTES)
                        .await?;
                    match validate_manifest(&bytes) {
                        Ok(pack) => {
                            let layer = match &pack.manifest.digest {
                                Some(d) => m.layers().iter().find(|l| l.digest().as_ref() == d),
                                None => m.layers().first(),
                            };
                            layer
                                .and_then(|l| Digest::parse(l.digest().as_ref()).ok())
                                .map(|content| (pack, content))
                        }
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            staged.nodes.insert(
                digest,
                Node {
                    media_type: checked.record.media_type.clone(),
                    blobs: checked.blobs.iter().map(|b| b.digest.clone()).collect(),
                    children: checked.children.iter().map(|c| c.digest.clone()).collect(),
                    subject: checked.record.subject.clone(),
                    pack,
                },
            );
        }
        Ok(())
    }

    /// Pushes a staged bundle: each blob made durable (once) and linked into the
    /// repositories that lack it, then each manifest, children first, through
    /// [`put_manifest`](Registry::put_manifest) with its tags, so packs are indexed
    /// as for any push. What the registry already holds is left as it is. The staged
    /// bytes are dropped at the end, whatever happens.
    pub async fn import_staged(&self, staged: StagedBundle) -> Result<ImportReport> {
        let outcome = self.push_bundle(&staged).await;
        self.discard_bundle(staged).await;
        outcome
    }

    async fn push_bundle(&self, staged: &StagedBundle) -> Result<ImportReport> {
        let mut report = ImportReport {
            packs: staged
                .packs
                .iter()
                .cloned()
                .zip(staged.packs_new.iter().copied())
                .collect(),
            referrers: staged.referrers,
            repositories: staged
                .repositories()
                .iter()
                .map(|r| r.to_string())
                .collect(),
            ..ImportReport::default()
        };
        let mut committed: BTreeSet<&Digest> = BTreeSet::new();
        for p in &staged.planned {
            let node = &staged.nodes[&p.digest];
            for d in &p.links_new {
                let blob = &staged.blobs[d];
                if let Some(s) = &blob.staged
                    && committed.insert(d)
                {
                    self.commit_staged(s).await?;
                    report.bytes_added += blob.size;
                }
                self.meta
                    .link_blob(&p.repo, d, blob.size, &self.bytes())
                    .await?;
            }
            report.blobs_added += p.links_new.len();
            report.blobs_present += node.blobs.len() - p.links_new.len();
            if p.manifest_new || !p.tags_new.is_empty() {
                let body = self
                    .archive_bytes(&staged.blobs, &p.digest, self.limits.max_manifest_bytes)
                    .await?;
                self.put_manifest(
                    &p.repo,
                    &Reference::Digest(p.digest.clone()),
                    Some(&node.media_type),
                    body,
                    &p.tags,
                )
                .await?;
            }
            if p.manifest_new {
                report.manifests_added += 1;
            } else {
                report.manifests_present += 1;
            }
            report.tags_added += p.tags_new.len();
        }
        Ok(report)
    }
}

/// The `mediaType` of an index's child `field` (`manifests[i]`), read from the index.
fn index_child_type(body: &[u8], field: &str) -> Option<String> {
    let i: usize = field
        .strip_prefix("manifests[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["manifests"][i]["mediaType"]
        .as_str()
        .map(str::to_owned)
}

/// Hashes the bytes arriving on `data` on a blocking thread.
async fn hash_only(
    digest: &Digest,
    mut data: mpsc::Receiver<std::io::Result<Bytes>>,
) -> Result<Digest> {
    let mut hasher = digest.algorithm().hasher();
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = data.blocking_recv() {
            hasher.update(&chunk.map_err(|e| Error::Body(e.to_string()))?);
        }
        Ok(hasher.finish())
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_name_a_repository_and_a_tag() {
        let (repo, tag) = repo_and_tag("packs/policy-baseline:2.1.0_build.7").unwrap();
        assert_eq!(
            (repo.as_str(), tag.as_str()),
            ("packs/policy-baseline", "2.1.0_build.7")
        );
        // A bare tag (what `skopeo copy … oci-archive:FILE:v1` writes) names no
        // repository; nor does a reference with a registry host in it.
        for none in [
            "v1",
            "latest",
            "registry:5000/team/app",
            "localhost:5000/team/app:v1",
            "Team/App:v1",
            ":v1",
        ] {
            assert!(repo_and_tag(none).is_none(), "{none}");
        }
    }
}
