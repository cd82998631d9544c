//! The fuzz seed corpora (fuzz/seeds/, written by fuzz/make_seeds.py) stay
//! meaningful: the seeds named `valid*` pass under the fuzz targets'
//! configuration and clock, every other seed is refused. If a rule changes
//! and a seed stops reaching deep into the verifier, this test says so.

mod common;

use std::fs;

use common::*;
use slimgate::auth::KeySet;
use slimgate::auth::claims::check_claims;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = manifest_path(&format!("fuzz/seeds/{target}"));
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out
}

#[test]
fn jwt_token_seeds() {
    // fuzz_targets/jwt_token.rs: default config plus scopes from "scope".
    let v = verifier();
    let keys = keyset();
    for (name, data) in seeds("jwt_token") {
        let token = String::from_utf8(data).unwrap();
        let result = v.verify(&token, &keys, NOW);
        assert_eq!(result.is_ok(), name.starts_with("valid"), "{name}: {result:?}");
    }
}

#[test]
fn jwt_claims_seeds() {
    let accepted = ["aud_array", "azp_only", "float_dates", "roles_deep", "scope_array", "valid"];
    for (name, data) in seeds("jwt_claims") {
        let result = check_claims(&data, &config(), NOW);
        assert_eq!(result.is_ok(), accepted.contains(&name.as_str()), "{name}: {result:?}");
    }
}

#[test]
fn jwks_parse_seeds() {
    for (name, data) in seeds("jwks_parse") {
        let parsed = KeySet::parse(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let clean = ["empty", "no_kid", "test_set"].contains(&name.as_str());
        assert_eq!(parsed.rejected.is_empty(), clean, "{name}: {:?}", parsed.rejected);
    }
}

#[test]
fn ssh_seeds() {
    // fuzz/make_ssh_seeds.py: `valid*` parse, the others are refused.
    use slimgate::ssh::packet::Decoder;
    use slimgate::ssh::wire::{parse_channel_msg, parse_kexinit};
    for (name, data) in seeds("ssh_kexinit") {
        assert_eq!(parse_kexinit(&data).is_ok(), name.starts_with("valid"), "{name}");
    }
    for (name, data) in seeds("ssh_channel") {
        let parsed = parse_channel_msg(&data);
        assert_eq!(matches!(parsed, Ok(Some(_))), name.starts_with("valid"), "{name}: {parsed:?}");
    }
    for (name, data) in seeds("ssh_packet") {
        let mut d = Decoder::new();
        d.push(&data[1..]);
        let mut ok = true;
        let mut packets = 0;
        loop {
            match d.next_packet() {
                Ok(Some(_)) => packets += 1,
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        assert_eq!(ok && packets > 0 && d.buffer().is_empty(), name.starts_with("valid"), "{name}");
    }
}
