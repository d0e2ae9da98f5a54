//! Export: the closure of a selection of packs, and the archive streamed from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use oci_spec::image::{
    ANNOTATION_REF_NAME, ANNOTATION_VERSION, DescriptorBuilder, ImageIndexBuilder, MediaType,
    OciLayoutBuilder,
};

use super::archive::{self, Kind};
use super::{ANNOTATION_PACK_ID, ANNOTATION_PACK_TYPE, ANNOTATION_PACK_VERSION};
use crate::digest::Digest;
use crate::metadata::PackVersionRecord;
use crate::names::RepoName;
use crate::registry::manifests::check;
use crate::registry::packs::PackDependency;
use crate::registry::{Error, PackType, Registry, Result};
use crate::storage::ByteStream;

/// What to export: packs by `<id>@<version or requirement>`, every pack (`all`), or
/// every pack of a type; `pack_type` also narrows the named packs. Each chosen
/// version brings its dependencies and members (newest match of each requirement,
/// as publishing resolves them) and everything they reach.
#[derive(Debug, Clone, Default)]
pub struct BundleSelection {
    /// `<id>@<version or semver requirement>` each.
    pub packs: Vec<String>,
    /// Only packs of this type (alone: every pack of this type).
    pub pack_type: Option<PackType>,
    /// Every version of every pack (of `pack_type`, when given).
    pub all: bool,
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    Dir,
    Bytes(Bytes),
    Manifest(RepoName, Digest),
    Blob(Digest),
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    size: u64,
    source: Source,
}

/// A planned export: every entry of the archive, in order, and what it holds.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    entries: Vec<Entry>,
    /// The pack versions in the bundle (chosen and needed), by id then precedence.
    pub packs: Vec<PackVersionRecord>,
    /// Manifests in the bundle (packs, their index children, referrers).
    pub manifests: usize,
    /// Of which referrers (signatures, SBOMs, attestations).
    pub referrers: usize,
    /// Blobs in the bundle (configs and layers).
    pub blobs: usize,
    /// Bytes of the archive.
    pub size: u64,
    /// Repositories read.
    pub repositories: BTreeSet<RepoName>,
}

fn unknown(message: String) -> Error {
    Error::PackUnknown(message)
}

impl Registry {
    /// The packs `selection` names, their closure, and every manifest, blob and
    /// referrer they reach, as the entries of an archive (nothing read yet but
    /// metadata). Unknown packs and requirements nothing matches are
    /// [`Error::PackUnknown`]; a malformed selection is [`Error::PackMalformed`].
    pub async fn plan_export(&self, selection: &BundleSelection) -> Result<ExportPlan> {
        let roots = self.export_roots(selection).await?;
        let packs = self.export_closure(roots).await?;

        // Every manifest reachable from the packs: index children, then referrers
        // (and theirs), each with the blobs it references.
        let mut manifests: BTreeMap<Digest, (RepoName, u64)> = BTreeMap::new();
        let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut referrers: BTreeMap<Digest, (RepoName, u64, Option<String>, String)> =
            BTreeMap::new();
        let mut stack: Vec<(RepoName, Digest)> = packs
            .iter()
            .map(|p| (p.repository.clone(), p.manifest_digest.clone()))
            .collect();
        let mut seen: HashSet<Digest> = HashSet::new();
        while let Some((repo, digest)) = stack.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let record = self
                .meta
                .get_manifest(&repo, &digest)
                .await?
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "manifest {digest} of {repo} is indexed but missing"
                    ))
                })?;
            let size = record.body.len() as u64;
            let checked = check(Some(&record.media_type), record.body, digest.clone())
                .map_err(|e| Error::Internal(format!("stored manifest {digest}: {e}")))?;
            let wanted: Vec<Digest> = checked.blobs.iter().map(|b| b.digest.clone()).collect();
            let sizes = self.meta.linked_blob_sizes(&repo, &wanted).await?;
            for (b, found) in checked.blobs.iter().zip(sizes) {
                if found != Some(b.size) {
                    return Err(Error::Internal(format!(
                        "blob {} of manifest {digest} in {repo} is missing",
                        b.digest
                    )));
                }
                blobs.entry(b.digest.clone()).or_insert(b.size);
            }
            for child in &checked.children {
                stack.push((repo.clone(), child.digest.clone()));
            }
            let mut last: Option<String> = None;
            loop {
                let page = self
                    .meta
                    .list_referrers(
                        &repo,
                        &digest,
                        None,
                        last.as_deref(),
                        self.limits.referrers_page,
                    )
                    .await?;
                for r in &page.items {
                    referrers.entry(r.digest.clone()).or_insert((
                        repo.clone(),
                        r.size,
                        r.artifact_type.clone(),
                        r.media_type.clone(),
                    ));
                    stack.push((repo.clone(), r.digest.clone()));
                }
                match (page.more, page.items.last()) {
                    (true, Some(r)) => last = Some(r.digest.to_string()),
                    _ => break,
                }
            }
            manifests.insert(digest, (repo, size));
        }

        // index.json: the packs (by id, then precedence), then the referrers (by digest).
        let mut descriptors = Vec::new();
        for p in &packs {
            let (_, size) = &manifests[&p.manifest_digest];
            let annotations = HashMap::from([
                (
                    ANNOTATION_REF_NAME.to_owned(),
                    format!("{}:{}", p.repository, p.tag),
                ),
                (ANNOTATION_VERSION.to_owned(), p.version.clone()),
                (ANNOTATION_PACK_ID.to_owned(), p.pack_id.clone()),
                (ANNOTATION_PACK_VERSION.to_owned(), p.version.clone()),
                (ANNOTATION_PACK_TYPE.to_owned(), p.pack_type.clone()),
            ]);
            descriptors.push(descriptor(
                crate::registry::media_types::OCI_MANIFEST,
                &p.manifest_digest,
                *size,
                PackType::parse(&p.pack_type).map(|t| t.artifact_type()),
                Some(annotations),
            )?);
        }
        for (digest, (_, size, artifact_type, media_type)) in &referrers {
            descriptors.push(descriptor(
                media_type,
                digest,
                *size,
                artifact_type.clone(),
                None,
            )?);
        }
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(descriptors)
            .build()
            .map_err(|e| Error::Internal(format!("building index.json: {e}")))?;
        let layout = OciLayoutBuilder::default()
            .image_layout_version("1.0.0")
            .build()
            .map_err(|e| Error::Internal(format!("building oci-layout: {e}")))?;

        // The entries, in path order: folders, blobs, index.json, oci-layout.
        let mut files: BTreeMap<String, (u64, Source)> = BTreeMap::new();
        for (digest, (repo, size)) in &manifests {
            files.insert(
                archive::blob_path(digest),
                (*size, Source::Manifest(repo.clone(), digest.clone())),
            );
        }
        for (digest, size) in &blobs {
            files
                .entry(archive::blob_path(digest))
                .or_insert((*size, Source::Blob(digest.clone())));
        }
        let mut folders: BTreeSet<String> = BTreeSet::new();
        for path in files.keys() {
            if let Some((folder, _)) = path.rsplit_once('/') {
                folders.insert("blobs/".into());
                folders.insert(format!("{folder}/"));
            }
        }
        for folder in folders {
            files.insert(folder, (0, Source::Dir));
        }
        for (path, bytes) in [
            ("index.json", sorted_json(&index)?),
            ("oci-layout", sorted_json(&layout)?),
        ] {
            files.insert(path.into(), (bytes.len() as u64, Source::Bytes(bytes)));
        }
        let entries: Vec<Entry> = files
            .into_iter()
            .map(|(path, (size, source))| Entry { path, size, source })
            .collect();
        let size = entries
            .iter()
            .map(|e| archive::entry_len(&e.path, e.size))
            .sum::<u64>()
            + archive::END.len() as u64;
        let repositories = manifests.values().map(|(r, _)| r.clone()).collect();
        Ok(ExportPlan {
            entries,
            manifests: manifests.len(),
            referrers: referrers.len(),
            blobs: blobs.keys().filter(|d| !manifests.contains_key(*d)).count(),
            packs,
            size,
            repositories,
        })
    }

    /// The archive of `plan`, streamed: each entry's header, its bytes (read from
    /// storage as they are sent) and padding, then the end-of-archive blocks. Exactly
    /// `plan.size` bytes; a blob that comes back with another size ends the stream
    /// with an error rather than a malformed archive.
    pub fn export_stream(&self, plan: ExportPlan) -> ByteStream {
        let registry = self.clone();
        stream::iter(plan.entries)
            .then(move |entry| {
                let registry = registry.clone();
                async move { registry.entry_stream(entry).await }
            })
            .try_flatten()
            .chain(stream::once(async {
                Ok(Bytes::from_static(&archive::END))
            }))
            .boxed()
    }

    async fn entry_stream(&self, entry: Entry) -> std::io::Result<ByteStream> {
        let header = Bytes::from(archive::header(
            &entry.path,
            entry.size,
            kind(&entry.source),
        ));
        let size = entry.size;
        let body: ByteStream = match entry.source {
            Source::Dir => stream::empty().boxed(),
            Source::Bytes(b) => stream::once(async move { Ok(b) }).boxed(),
            Source::Manifest(repo, digest) => {
                let record = self
                    .meta
                    .get_manifest(&repo, &digest)
                    .await
                    .map_err(std::io::Error::other)?
                    .ok_or_else(|| {
                        std::io::Error::other(format!("manifest {digest} of {repo} went away"))
                    })?;
                stream::once(async move { Ok(record.body) }).boxed()
            }
            Source::Blob(digest) => self
                .blobs
                .get(&digest, None)
                .await
                .map_err(std::io::Error::other)?,
        };
        let path = entry.path;
        let mut sent = 0u64;
        let counted = body.map(move |chunk| {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            if sent > size {
                return Err(std::io::Error::other(format!(
                    "{path}: more than its {size} bytes"
                )));
            }
            Ok(chunk)
        });
        let padding = archive::padding(size);
        Ok(stream::once(async move { Ok(header) })
            .chain(counted)
            .chain(stream::once(async move { Ok(padding) }))
            .boxed())
    }

    /// The pack versions `selection` names directly.
    async fn export_roots(&self, selection: &BundleSelection) -> Result<Vec<PackVersionRecord>> {
        let type_name = selection.pack_type.map(PackType::as_str);
        let mut roots = Vec::new();
        for spec in &selection.packs {
            let (id, version) = spec.split_once('@').ok_or_else(|| {
                Error::PackMalformed(format!(
                    "pack {spec:?} must be <id>@<version or semver requirement>"
                ))
            })?;
            let record = self.resolve_pack_version(id, version).await?;
            if type_name.is_none_or(|t| t == record.pack_type) {
                roots.push(record);
            }
        }
        if selection.all || (selection.packs.is_empty() && selection.pack_type.is_some()) {
            let filter = crate::metadata::PackFilter {
                pack_type: type_name.map(str::to_owned),
                ..Default::default()
            };
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .meta
                    .list_packs(&filter, cursor.as_deref(), self.packs.max_page)
                    .await?;
                for p in &page.items {
                    roots.extend(self.meta.list_pack_versions(&p.pack_id).await?);
                }
                match (page.more, page.items.last()) {
                    (true, Some(p)) => cursor = Some(p.pack_id.clone()),
                    _ => break,
                }
            }
        }
        if roots.is_empty() {
            return Err(unknown(match (selection.packs.is_empty(), type_name) {
                (false, Some(t)) => format!("none of the packs named is a {t} pack"),
                (_, Some(t)) => format!("no {t} pack is published"),
                (true, None) if selection.all => "no pack is published".into(),
                _ => "nothing selected: name packs (<id>@<version>), a type, or all".into(),
            }));
        }
        Ok(roots)
    }

    /// `roots` and everything they need: each dependency and member resolved to the
    /// newest version its requirement matches, as publishing resolves it.
    async fn export_closure(
        &self,
        roots: Vec<PackVersionRecord>,
    ) -> Result<Vec<PackVersionRecord>> {
        let mut chosen: BTreeMap<(String, String), PackVersionRecord> = BTreeMap::new();
        let mut queue = roots;
        while let Some(record) = queue.pop() {
            let key = (record.pack_id.clone(), record.sort_key.clone());
            if chosen.contains_key(&key) {
                continue;
            }
            let mut needs: Vec<PackDependency> =
                serde_json::from_str(&record.dependencies).unwrap_or_default();
            needs.extend(
                serde_json::from_str::<Vec<PackDependency>>(&record.members).unwrap_or_default(),
            );
            for dep in needs {
                let req = semver::VersionReq::parse(&dep.version).map_err(|e| {
                    Error::Internal(format!(
                        "{}@{}: stored requirement {} of {}: {e}",
                        record.pack_id, record.version, dep.version, dep.pack_id
                    ))
                })?;
                let found = self.newest_matching(&dep.pack_id, &req).await?;
                let found = found.ok_or_else(|| {
                    unknown(format!(
                        "{}@{} needs {} {}, and no published version matches",
                        record.pack_id, record.version, dep.pack_id, dep.version
                    ))
                })?;
                queue.push(found);
            }
            chosen.insert(key, record);
        }
        Ok(chosen.into_values().collect())
    }
}

fn kind(source: &Source) -> Kind {
    match source {
        Source::Dir => Kind::Dir,
        _ => Kind::File,
    }
}

/// JSON with its keys in byte order (`serde_json` maps are sorted here), so that the
/// same content always gives the same bytes.
fn sorted_json(value: &impl serde::Serialize) -> Result<Bytes> {
    serde_json::to_value(value)
        .and_then(|v| serde_json::to_vec(&v))
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("serializing: {e}")))
}

fn descriptor(
    media_type: &str,
    digest: &Digest,
    size: u64,
    artifact_type: Option<String>,
    annotations: Option<HashMap<String, String>>,
) -> Result<oci_spec::image::Descriptor> {
    let internal = |e: String| Error::Internal(format!("building a descriptor: {e}"));
    let mut d = DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(
            oci_spec::image::Digest::from_str(digest.as_str())
                .map_err(|e| internal(e.to_string()))?,
        )
        .size(size)
        .build()
        .map_err(|e| internal(e.to_string()))?;
    if let Some(a) = artifact_type {
        d.set_artifact_type(Some(MediaType::from(a.as_str())));
    }
    d.set_annotations(annotations);
    Ok(d)
}
