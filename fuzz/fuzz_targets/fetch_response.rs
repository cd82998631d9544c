//! The JWKS fetcher's HTTP/1.1 response handling (`fetch::exchange`: hyper's
//! client connection plus our status, size and JSON checks) on arbitrary
//! bytes sent by a "server" over an in-memory duplex stream, which then
//! closes its side. Must never panic or hang; an answer that is accepted
//! must be JSON and within the body limit.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slimgate::auth::fetch;
use slimgate::net::url::HttpUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Small, so that inputs of a few KiB reach the size limit.
const MAX_BODY_BYTES: usize = 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    let url = HttpUrl::parse("http://idp.test:8080/realms/x/certs").expect("url");
    let response = data.to_vec();
    let result = runtime().block_on(async move {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            // The answer, then end of stream; keep reading until the
            // client hangs up (a write error means it already did).
            let _ = server.write_all(&response).await;
            let _ = server.shutdown().await;
            let mut sink = Vec::new();
            let _ = server.read_to_end(&mut sink).await;
        });
        let result = fetch::exchange(client, &url, MAX_BODY_BYTES).await;
        let _ = server.await;
        result
    });
    if let Ok(body) = result {
        assert!(body.len() <= MAX_BODY_BYTES);
        assert!(fetch::is_json(&body));
    }
});
