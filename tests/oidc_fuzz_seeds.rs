//! The seed corpora of the key-fetching fuzz targets (fuzz/seeds/, written
//! by fuzz/make_fetch_seeds.py) stay meaningful: under each target's
//! settings, the seeds named `valid*` are accepted and every other one is
//! refused, so the fuzzer starts from inputs on both sides of each rule.

use std::fs;

use slimgate::auth::discovery;
use slimgate::auth::fetch;
use slimgate::net::url::HttpUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The settings of fuzz_targets/fetch_response.rs and oidc_discovery.rs.
const MAX_BODY_BYTES: usize = 1024;
const ISSUER: &str = "http://keycloak.keycloak.svc.cluster.local/realms/openshell";

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5);
    out
}

#[tokio::test]
async fn fetch_response_seeds() {
    let url = HttpUrl::parse("http://idp.test:8080/realms/x/certs").unwrap();
    for (name, data) in seeds("fetch_response") {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            let _ = server.write_all(&data).await;
            let _ = server.shutdown().await;
            let mut sink = Vec::new();
            let _ = server.read_to_end(&mut sink).await;
        });
        let result = fetch::exchange(client, &url, MAX_BODY_BYTES).await;
        srv.await.unwrap();
        assert_eq!(result.is_ok(), name.starts_with("valid"), "{name}: {result:?}");
    }
}

#[test]
fn oidc_discovery_seeds() {
    for (name, data) in seeds("oidc_discovery") {
        if let Some(kind) = name.strip_prefix("url_") {
            let text = std::str::from_utf8(&data).unwrap();
            assert_eq!(HttpUrl::parse(text).is_ok(), kind != "bad", "{name}");
            continue;
        }
        let result = discovery::jwks_uri(&data, ISSUER);
        // A `tls` build fetches https:// key sets too.
        let valid = name.starts_with("valid") || (cfg!(feature = "tls") && name == "https_jwks");
        assert_eq!(result.is_ok(), valid, "{name}: {result:?}");
    }
}
