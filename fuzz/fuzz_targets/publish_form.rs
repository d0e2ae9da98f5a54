//! `POST /packs` as clients send it: any bytes as the `multipart/form-data` body
//! (boundary `X`) through the whole application, on a registry of its own (SQLite and
//! a data folder in a temporary directory). The answer is never a 5xx and never a
//! panic; a form the registry accepts is then served back, byte for byte.
#![no_main]

use std::cell::RefCell;

use actix_web::body::to_bytes;
use actix_web::dev::Service as _;
use actix_web::test;
use libfuzzer_sys::fuzz_target;
use sha2::Digest as _;
use packs_registry::config::Config;
use packs_registry::http::AppState;

thread_local! {
    // One runtime for the whole run: the database pool lives on it.
    static SYSTEM: actix_web::rt::SystemRunner = actix_web::rt::System::new();
    static STATE: RefCell<Option<(AppState, tempfile::TempDir)>> = const { RefCell::new(None) };
}

async fn state() -> AppState {
    if let Some(state) = STATE.with(|s| s.borrow().as_ref().map(|(state, _)| state.clone())) {
        return state;
    }
    let dir = tempfile::tempdir().expect("temporary data folder");
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.validate().expect("configuration");
    let state = packs_registry::server::build_state(config)
        .await
        .expect("app state");
    STATE.with(|s| *s.borrow_mut() = Some((state.clone(), dir)));
    state
}

fuzz_target!(|data: &[u8]| {
    SYSTEM.with(|system| {
        system.block_on(async {
            let service = test::init_service(packs_registry::http::app(state().await)).await;
            let request = test::TestRequest::post()
                .uri("/packs")
                .insert_header(("content-type", "multipart/form-data; boundary=X"))
                .set_payload(data.to_vec())
                .to_request();
            let response = service.call(request).await.expect("a response");
            let status = response.status();
            assert!(
                !status.is_server_error(),
                "POST /packs answered {status}"
            );
            if status.is_success() {
                let body = to_bytes(response.into_body()).await.ok().expect("the answer's body");
                let published: serde_json::Value =
                    serde_json::from_slice(&body).expect("the answer is JSON");
                let uri = format!(
                    "/packs/{}/{}",
                    published["packId"].as_str().expect("packId"),
                    published["version"].as_str().expect("version").replace('+', "%2B")
                );
                let got = service
                    .call(test::TestRequest::get().uri(&uri).to_request())
                    .await
                    .expect("a response");
                assert!(got.status().is_success(), "GET {uri} answered {}", got.status());
                let content = to_bytes(got.into_body()).await.ok().expect("the content");
                let digest: String = sha2::Sha256::digest(&content)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(
                    published["digest"].as_str(),
                    Some(format!("sha256:{digest}").as_str()),
                    "GET {uri} served other bytes than were published"
                );
            }
        })
    });
});
