//! The `/v2` wire format of the OCI distribution spec. Only this module knows OCI
//! headers, status codes and the error envelope. Routes are declared once in
//! [`routes`]; typed extractors ([`Repo`], [`Ref`], [`PathDigest`], [`UploadId`],
//! [`Pagination`]) reject bad input with the right [`OciError`] before a handler runs;
//! each handler makes one call on the domain and writes the answer.
//!
//! Must not touch storage or metadata directly: everything goes through `registry`.

mod blobs;
pub mod error;
mod manifests;
pub mod params;

use std::future::{Ready, ready};

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};

use super::State;
use crate::digest::Digest;
use crate::names::{NameError, Reference, RepoName};
use crate::registry::Error;
pub use error::{OciError, OciErrorCode};

/// A repository name may contain `/` and even segments such as `blobs` or
/// `manifests`: one regex segment that the most specific suffix after it decides.
const NAME: &str = "{name:.+}";

/// Registers the `/v2` routes. Upload routes come before `/blobs/{digest}`, so a
/// name whose segments are `blobs/uploads` still routes by its last segments.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let resource = |path: String, label: &'static str, allow: &'static str| {
        web::resource(path)
            .name(label)
            .wrap(actix_web::middleware::from_fn(authorize))
            .default_service(web::to(move || unsupported(allow)))
    };
    cfg.service(
        web::scope("/v2")
            .wrap(DefaultHeaders::new().add(("Docker-Distribution-API-Version", "registry/2.0")))
            .wrap(actix_web::middleware::from_fn(recover))
            .service(
                web::resource(["", "/"])
                    .name("v2_base")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .route(web::get().to(base))
                    .route(web::head().to(base))
                    .default_service(web::to(|| unsupported("GET, HEAD"))),
            )
            .service(resource("/_catalog".into(), "v2_catalog", "GET").get(manifests::catalog))
            .service(
                resource(format!("/{NAME}/tags/list"), "v2_tags_list", "GET").get(manifests::tags),
            )
            .service(
                resource(
                    format!("/{NAME}/manifests/{{reference}}"),
                    "v2_manifest",
                    "GET, HEAD, PUT, DELETE",
                )
                .route(web::get().to(manifests::get))
                .route(web::head().to(manifests::head))
                .route(web::put().to(manifests::put))
                .route(web::delete().to(manifests::delete)),
            )
            .service(
                resource(
                    format!("/{NAME}/referrers/{{digest}}"),
                    "v2_referrers",
                    "GET",
                )
                .get(manifests::referrers),
            )
            .service(
                web::resource([
                    format!("/{NAME}/blobs/uploads/"),
                    format!("/{NAME}/blobs/uploads"),
                ])
                .name("v2_upload_start")
                .wrap(actix_web::middleware::from_fn(authorize))
                .post(blobs::start)
                .default_service(web::to(|| unsupported("POST"))),
            )
            .service(
                resource(
                    format!("/{NAME}/blobs/uploads/{{id}}"),
                    "v2_upload",
                    "GET, PATCH, PUT, DELETE",
                )
                .route(web::get().to(blobs::status))
                .route(web::patch().to(blobs::patch))
                .route(web::put().to(blobs::finish))
                .route(web::delete().to(blobs::cancel)),
            )
            .service(
                resource(
                    format!("/{NAME}/blobs/{{digest}}"),
                    "v2_blob",
                    "GET, HEAD, DELETE",
                )
                .route(web::get().to(blobs::get))
                .route(web::head().to(blobs::head))
                .route(web::delete().to(blobs::delete)),
            )
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(OciError::new(
                    actix_web::http::StatusCode::NOT_FOUND,
                    OciErrorCode::NameUnknown,
                    "unknown API endpoint",
                ))
            })),
    );
}

/// `GET /v2/`: the API version check.
async fn base() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}

/// A 405 that names the methods the resource does serve (RFC 9110).
async fn unsupported(allow: &'static str) -> HttpResponse {
    let mut response = OciError::unsupported_method().error_response();
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    response
}

/// Every route's guard: what the route needs, asked of the authorizer before its
/// handler runs (see [`crate::http::auth`]); a refusal in the OCI envelope.
async fn authorize(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    super::auth::guard(
        req,
        next,
        |req| {
            let max = req
                .app_data::<State>()
                .map_or(255, |s| s.config.limits.max_name_length);
            super::auth::oci_guard(req, max)
        },
        |refusal| OciError::refused(refusal).error_response(),
    )
    .await
}

/// A handler that panicked answers 500 in the OCI envelope (and is logged).
async fn recover(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    super::recover_panics(req, next, || OciError::internal().into()).await
}

fn path_param<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or_default()
}

/// The repository name of the path, validated (grammar and configured length).
#[derive(Debug, Clone)]
pub struct Repo(pub RepoName);

impl FromRequest for Repo {
    type Error = OciError;
    type Future = Ready<Result<Self, OciError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let max = req
            .app_data::<State>()
            .map_or(255, |s| s.config.limits.max_name_length);
        ready(
            RepoName::parse_with_limit(path_param(req, "name"), max)
                .map(Repo)
                .map_err(|e| Error::NameInvalid(e).into()),
        )
    }
}

/// The `<reference>` of a manifest path: a tag or a digest, as text; parsed by the
/// handler, since what an invalid one answers depends on the method.
#[derive(Debug, Clone)]
pub struct Ref(pub String);

impl Ref {
    /// Parses the reference of a push or delete: a malformed one is a client error.
    pub fn parse(&self) -> Result<Reference, OciError> {
        Reference::parse(&self.0).map_err(|e| match e {
            NameError::Digest(d) => Error::from(d).into(),
            other => Error::ReferenceInvalid(other).into(),
        })
    }

    /// Parses the reference of a read: text that is neither a tag nor digest-shaped
    /// names no manifest (404 `MANIFEST_UNKNOWN`, as the v1.1.1 conformance suite
    /// expects of `.INVALID_MANIFEST_NAME`); a malformed digest is still
    /// `DIGEST_INVALID`.
    pub fn lookup(&self) -> Result<Reference, OciError> {
        Reference::parse(&self.0).map_err(|e| match e {
            NameError::Digest(d) => Error::from(d).into(),
            _ => Error::ManifestUnknown.into(),
        })
    }
}

impl FromRequest for Ref {
    type Error = OciError;
    type Future = Ready<Result<Self, OciError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Ref(path_param(req, "reference").to_owned())))
    }
}

/// The `<digest>` of a blob or referrers path, parsed.
#[derive(Debug, Clone)]
pub struct PathDigest(pub Digest);

impl FromRequest for PathDigest {
    type Error = OciError;
    type Future = Ready<Result<Self, OciError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            Digest::parse(path_param(req, "digest"))
                .map(PathDigest)
                .map_err(|e| Error::from(e).into()),
        )
    }
}

/// The upload session id of the path; an id that is not a UUID names no upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadId(pub uuid::Uuid);

impl FromRequest for UploadId {
    type Error = OciError;
    type Future = Ready<Result<Self, OciError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            uuid::Uuid::parse_str(path_param(req, "id"))
                .map(UploadId)
                .map_err(|_| Error::BlobUploadUnknown.into()),
        )
    }
}

/// `?n=&last=` of the tag list and the catalog.
#[derive(Debug, Clone, Default)]
pub struct Pagination {
    /// The page size asked for.
    pub n: Option<u32>,
    /// The last item of the previous page.
    pub last: Option<String>,
}

impl FromRequest for Pagination {
    type Error = OciError;
    type Future = Ready<Result<Self, OciError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let q = super::QueryPairs::of(req);
        let n = match q.get("n") {
            None | Some("") => Ok(None),
            Some(n) => n.parse::<u32>().map(Some).map_err(|_| {
                OciError::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    OciErrorCode::Unsupported,
                    format!("n must be a non-negative integer, got {n:?}"),
                )
            }),
        };
        ready(n.map(|n| Pagination {
            n,
            last: q.get("last").map(str::to_owned),
        }))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};

    use super::*;

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_in_the_envelope() {
        async fn boom() -> HttpResponse {
            panic!("a bug reached by a request")
        }
        let app = test::init_service(
            App::new().service(
                web::scope("/v2")
                    .wrap(actix_web::middleware::from_fn(recover))
                    .route("/boom", web::get().to(boom))
                    .route("/fine", web::get().to(base)),
            ),
        )
        .await;
        let err =
            test::try_call_service(&app, test::TestRequest::get().uri("/v2/boom").to_request())
                .await
                .expect_err("the panic becomes an error answer");
        let response = err.error_response();
        assert_eq!(response.status(), 500);
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"errors": [{"code": "UNKNOWN", "message": "internal server error"}]})
        );
        // The worker goes on serving.
        let ok =
            test::call_service(&app, test::TestRequest::get().uri("/v2/fine").to_request()).await;
        assert_eq!(ok.status(), 200);
    }
}
