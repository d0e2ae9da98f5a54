//! `GET /packs/export` and `POST /packs/import`: offline bundles over HTTP. Thin
//! handlers over the domain's two-step export and import
//! ([`crate::registry::bundle`]): each first plans (what the archive holds, or what
//! the uploaded archive writes, with the repositories involved), then streams or
//! pushes.

use actix_web::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};

use super::error::{ApiError, ErrorEnvelope};
use super::types::{ArchiveDoc, Imported, PackSpecDoc, PackTypeDoc};
use crate::auth::Action;
use crate::http::auth::{Caller, Needs, require};
use crate::http::{QueryPairs, State, body};
use crate::registry::PackType;
use crate::registry::bundle::BundleSelection;

#[utoipa::path(
    get,
    path = "/packs/export",
    tag = "bundles",
    summary = "Export packs as an offline bundle",
    description = "An OCI image layout tar archive (`oci-layout`, `index.json`, \
                   `blobs/<alg>/<hex>`) holding the packs chosen, their dependencies and \
                   bundle members (each requirement resolved to its newest match, as \
                   publishing resolves it), and their referrers (signatures, SBOMs, \
                   attestations). Streamed, with its size known in advance; the same \
                   content always gives the same bytes. `skopeo copy \
                   oci-archive:bundle.tar:<repository>:<tag>` reads it.",
    params(
        ("pack" = Option<Vec<PackSpecDoc>>, Query, explode = true, description = "`<id>@<version or semver requirement>`; repeat for more"),
        ("type" = Option<PackTypeDoc>, Query, description = "Only packs of this type (alone: every pack of this type)"),
        ("all" = Option<bool>, Query, description = "Every version of every pack"),
    ),
    responses(
        (status = 200, description = "The archive",
            content(("application/x-tar")),
            headers(
                ("Content-Length" = u64, description = "Size of the archive"),
                ("Bundle-Packs" = u64, description = "Pack versions in the bundle"),
                ("Bundle-Manifests" = u64, description = "Manifests in the bundle"),
                ("Bundle-Referrers" = u64, description = "Of which referrers"),
                ("Bundle-Blobs" = u64, description = "Blobs (configs and layers) in the bundle"),
            )),
        (status = 400, description = "A malformed parameter", body = ErrorEnvelope),
        (status = 404, description = "A pack, version or dependency that nothing matches, or nothing selected", body = ErrorEnvelope),
    )
)]
pub(super) async fn export(
    state: State,
    req: HttpRequest,
    Caller(caller): Caller,
) -> Result<HttpResponse, ApiError> {
    let mut selection = BundleSelection::default();
    for (key, value) in QueryPairs::of(&req).iter() {
        match key {
            "pack" => selection.packs.push(value.to_owned()),
            "type" => {
                selection.pack_type = Some(PackType::parse(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "type {value:?} must be one of policy, analyzer, task, bundle"
                    ))
                })?)
            }
            "all" => {
                selection.all = match value {
                    // Exactly what the OpenAPI document says: a boolean, spelled out.
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "all {value:?} must be true or false"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    let plan = state.registry.plan_export(&selection).await?;
    // Authorized like a pull of every repository in the bundle.
    let needs = plan.repositories.iter().fold(Needs::default(), |n, repo| {
        n.and(repo.clone(), Action::Pull)
    });
    require(&state, &req, &caller, &needs)?;
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((CONTENT_TYPE, "application/x-tar"))
        .insert_header((CONTENT_DISPOSITION, "attachment; filename=\"bundle.tar\""))
        .insert_header(("Bundle-Packs", plan.packs.len().to_string()))
        .insert_header(("Bundle-Manifests", plan.manifests.to_string()))
        .insert_header(("Bundle-Referrers", plan.referrers.to_string()))
        .insert_header(("Bundle-Blobs", plan.blobs.to_string()));
    let size = plan.size;
    let body = state.registry.export_stream(plan);
    Ok(builder.body(crate::http::body::response(size, body)))
}

#[utoipa::path(
    post,
    path = "/packs/import",
    tag = "bundles",
    summary = "Import an offline bundle",
    description = "The body is an OCI image layout archive (`.tar`, or `.tar.gz`), such as \
                   `GET /packs/export` or `skopeo copy … oci-archive:` writes. Every blob is \
                   checked against its digest and every manifest's references against the \
                   archive before anything is stored; then blobs, manifests and tags are \
                   pushed as `/v2` pushes them, so packs are indexed. A tag is never moved. \
                   Importing the same bundle again changes nothing (200, `nothingNew`).",
    request_body(
        content(
            (ArchiveDoc = "application/x-tar"),
            (ArchiveDoc = "application/gzip"),
            (ArchiveDoc = "application/octet-stream")
        ),
        description = "The archive; any content type is read the same way"
    ),
    responses(
        (status = 201, description = "Imported: something was added", body = Imported),
        (status = 200, description = "The registry already held everything", body = Imported),
        (status = 400, description = "The body could not be read", body = ErrorEnvelope),
        (status = 409, description = "A tag in the registry points elsewhere, or a pack would change type", body = ErrorEnvelope),
        (status = 413, description = "An entry, the archive, or its decompression exceeds a limit", body = ErrorEnvelope),
        (status = 422, description = "Not a usable OCI image layout archive: a corrupted or missing blob, an unparsable manifest, an unsafe entry, a truncated archive", body = ErrorEnvelope),
    )
)]
pub(super) async fn import(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    // Who may write anything at all is known before the archive is read; what it
    // writes, only once it is staged.
    require(&state, &req, &caller.0, &Needs::default())?;
    let _uploading = state.metrics.upload_in_progress();
    let stall = state.config.server.body_stall_timeout_secs;
    let body = body::stream(
        payload,
        (stall > 0).then(|| std::time::Duration::from_secs(stall)),
    );
    let staged = state.registry.stage_bundle(body).await?;
    let needs = staged
        .repositories()
        .into_iter()
        .fold(Needs::default(), |n, repo| n.and(repo, Action::Push));
    if let Err(refusal) = require(&state, &req, &caller.0, &needs) {
        state.registry.discard_bundle(staged).await;
        return Err(refusal.into());
    }
    let report = state.registry.import_staged(staged).await?;
    for repo in &report.repositories {
        crate::http::auth::audit(&caller, "import bundle", repo, "", "");
    }
    let imported = Imported::from(report);
    let mut builder = if imported.nothing_new {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(builder.json(imported))
}
