//! JWT verifier benchmark: a program that prints figures (run with
//! `cargo bench --bench jwt`). For each operation it times batches of calls
//! with `std::time::Instant` and reports the median per-call time over many
//! batches. Goals (issue 4): full verification within 1.2× of ring's bare
//! signature check of the same token; refusing a malformed or oversized
//! token, and a cache hit, under 1 µs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use slimgate::auth::{KeySet, Verifier};

/// Median per-call time of `f`, over `batches` batches of `per_batch` calls.
fn median(batches: usize, per_batch: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..per_batch {
        f(); // warm up
    }
    let mut samples: Vec<Duration> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed() / per_batch as u32
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn show(label: &str, d: Duration) {
    println!("{label:<44} {:>10.3} µs", d.as_secs_f64() * 1e6);
}

fn split_sig(token: &str) -> (&[u8], Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input.as_bytes(), unb64(sig))
}

fn main() {
    let keys: KeySet = keyset();
    let verifier: Verifier = verifier();
    let rs = rs256_token(&claims());
    let es = es256_token(&claims());
    println!(
        "slimgate JWT verifier benchmark (median per call; RS256 token {} B, ES256 token {} B)",
        rs.len(),
        es.len()
    );

    // Full verification, no cache.
    let rs_full = median(101, 50, || {
        black_box(verifier.verify(black_box(&rs), &keys, NOW).unwrap());
    });
    let es_full = median(101, 50, || {
        black_box(verifier.verify(black_box(&es), &keys, NOW).unwrap());
    });

    // ring alone on the same bytes.
    let jwk = jwk("rsa2048");
    let rsa = RsaPublicKeyComponents {
        n: unb64(jwk["n"].as_str().unwrap()),
        e: unb64(jwk["e"].as_str().unwrap()),
    };
    let (rs_input, rs_sig) = split_sig(&rs);
    let rs_ring = median(101, 50, || {
        rsa.verify(&RSA_PKCS1_2048_8192_SHA256, black_box(rs_input), black_box(&rs_sig)).unwrap();
    });
    let ec_point = Signer::load("ec_p256").ec_point();
    let ec = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &ec_point);
    let (es_input, es_sig) = split_sig(&es);
    let es_ring = median(101, 50, || {
        ec.verify(black_box(es_input), black_box(&es_sig)).unwrap();
    });

    show("RS256-2048 full verify (no cache)", rs_full);
    show("RS256-2048 ring verify alone", rs_ring);
    println!(
        "{:<44} {:>10.3}x (goal <= 1.2)",
        "  ratio",
        rs_full.as_secs_f64() / rs_ring.as_secs_f64()
    );
    show("ES256 full verify (no cache)", es_full);
    show("ES256 ring verify alone", es_ring);
    println!(
        "{:<44} {:>10.3}x (goal <= 1.2)",
        "  ratio",
        es_full.as_secs_f64() / es_ring.as_secs_f64()
    );

    // Where the non-ring time goes (RS256 token).
    let config = verifier.config().clone();
    let parse = median(101, 10_000, || {
        black_box(slimgate::auth::jwt::parse(black_box(&rs), &config).unwrap());
    });
    let jws = slimgate::auth::jwt::parse(&rs, &config).unwrap();
    let payload_json = median(101, 10_000, || {
        let p = jws.decode_payload().unwrap();
        black_box(slimgate::auth::claims::parse_claims(black_box(&p)).unwrap());
    });
    let claims_map = slimgate::auth::claims::parse_claims(&jws.decode_payload().unwrap()).unwrap();
    let evaluate = median(101, 10_000, || {
        black_box(slimgate::auth::claims::evaluate(black_box(&claims_map), &config, NOW).unwrap());
    });
    show("  of which: split + header policy + sig decode", parse);
    show("  of which: payload decode + strict JSON", payload_json);
    show("  of which: claim rules + identity", evaluate);

    // Refusals.
    let one_dot = format!("{}{}", &rs[..rs.rfind('.').unwrap()], &rs[rs.rfind('.').unwrap() + 1..]);
    let bad_char_at_end = format!("{rs}=");
    let four_dots = format!("{rs}.x.y");
    let oversized = "A".repeat(9000);
    let alg_none =
        format!("{}.{}.AAAA", b64(br#"{"alg":"none"}"#), b64(claims().to_string().as_bytes()));
    for (label, token) in [
        ("reject malformed: one dot", &one_dot),
        ("reject malformed: 4 dots", &four_dots),
        ("reject malformed: '=' at the end (full scan)", &bad_char_at_end),
        ("reject oversized (9000 B)", &oversized),
        ("reject alg none (header decoded)", &alg_none),
    ] {
        let d = median(101, 10_000, || {
            black_box(verifier.verify(black_box(token), &keys, NOW).unwrap_err());
        });
        show(label, d);
    }

    // Cache hits.
    verifier.verify_cached(&rs, &keys, NOW).unwrap();
    verifier.verify_cached(&es, &keys, NOW).unwrap();
    let rs_hit = median(101, 10_000, || {
        black_box(verifier.verify_cached(black_box(&rs), &keys, NOW).unwrap());
    });
    let es_hit = median(101, 10_000, || {
        black_box(verifier.verify_cached(black_box(&es), &keys, NOW).unwrap());
    });
    show("cache hit, RS256 token", rs_hit);
    show("cache hit, ES256 token", es_hit);
    println!(
        "{:<44} {:>10.0}x faster than full RS256 verify",
        "  hit speed-up",
        rs_full.as_secs_f64() / rs_hit.as_secs_f64()
    );
}
