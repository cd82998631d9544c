//! The benchmark's tokens: RS256 JWTs signed with ring by the checked-in
//! test key `tests/keys/rsa2048` (kid `rsa2048`, in `tests/keys/jwks.json`),
//! for an `http://` issuer that no one needs to serve (both gateways read
//! the JWKS file).
//!
//! The fresh-token runs need one distinct valid token per call, so a pool
//! is minted once (all cores, about 0.3 ms per RSA-2048 signature) and kept
//! in `target/gateway-bench/`; a later run reuses it while its tokens stay
//! valid for at least another hour.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

/// The issuer both gateways are configured with.
pub const ISSUER: &str = "http://idp.bench.test/realms/openshell";
/// The audience both gateways accept (slimgate's default).
pub const AUDIENCE: &str = "openshell-cli";
/// The signing key's id in `tests/keys/jwks.json`.
const KID: &str = "rsa2048";
/// Lifetime of every minted token (slimgate's maximum is 24 h).
const LIFETIME_SECS: u64 = 4 * 3600;
/// A cached pool is reused only while its tokens have this long to live.
const REUSE_MARGIN_SECS: u64 = 3600;
/// First line of a pool file; the expiry follows.
const POOL_MAGIC: &str = "# slimgate gateway bench tokens v1 exp=";

/// Unix time, seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Signs tokens with the test key.
pub struct Signer {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    /// Loads `tests/keys/rsa2048.pk8.der` under `root`.
    pub fn load(root: &Path) -> Signer {
        let der = std::fs::read(root.join("tests/keys/rsa2048.pk8.der")).expect("test key");
        Signer {
            key: RsaKeyPair::from_pkcs8(&der).expect("test RSA key"),
            rng: SystemRandom::new(),
        }
    }

    /// A token for `sub` with `roles`, unique by `jti`, valid from `iat`
    /// for [`LIFETIME_SECS`].
    pub fn token(&self, sub: &str, roles: &[&str], jti: &str, iat: u64) -> String {
        let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{KID}"}}"#);
        let roles = roles.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(",");
        let claims = format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","azp":"{AUDIENCE}","sub":"{sub}","iat":{iat},"exp":{},"jti":"{jti}","realm_access":{{"roles":[{roles}]}}}}"#,
            iat + LIFETIME_SECS
        );
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key.sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A pool of distinct tokens on disk.
pub struct Pool {
    /// One token per line after the header line.
    pub file: PathBuf,
    /// How many tokens it holds.
    pub len: usize,
    /// Minting time, when this run minted it.
    pub minted_in: Option<Duration>,
}

/// At least `n` distinct user tokens in `dir`, reused when still valid.
pub fn pool(root: &Path, dir: &Path, n: usize) -> Pool {
    let file = dir.join(format!("tokens-{n}.txt"));
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Some(exp) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(POOL_MAGIC))
            .and_then(|v| v.parse::<u64>().ok())
        && exp > now() + REUSE_MARGIN_SECS
        && text.lines().skip(1).filter(|l| !l.is_empty()).count() >= n
    {
        return Pool { file, len: n, minted_in: None };
    }
    let started = Instant::now();
    let iat = now().saturating_sub(5);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads);
    let parts: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let signer = Signer::load(root);
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| {
                            signer.token("bench-user", &["openshell-user"], &format!("f{i}"), iat)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("minting thread")).collect()
    });
    std::fs::create_dir_all(dir).expect("token dir");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("token file"));
    writeln!(out, "{POOL_MAGIC}{}", iat + LIFETIME_SECS).expect("write tokens");
    for t in parts.iter().flatten() {
        writeln!(out, "{t}").expect("write tokens");
    }
    out.flush().expect("write tokens");
    Pool { file, len: n, minted_in: Some(started.elapsed()) }
}

/// The tokens of a pool file (header line skipped).
pub fn read_pool(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .expect("token file")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}
