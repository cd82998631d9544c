//! `--db-url` and `--store-key-file`. An error names only a URL's scheme,
//! never the URL: it may carry a password (`postgres://user:secret@…`).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::crypto::STORE_KEY_BYTES;

/// `--db-url` when none is given: a file under the working directory.
pub const DEFAULT_DB_URL: &str = "redb:./slimgate.redb";

const USE_INSTEAD: &str =
    "slimgate keeps its state in an embedded redb file; use --db-url redb:/path/to/state.redb";

/// Bytes of a key file read at most: enough to tell a bad file, without
/// reading `/dev/zero` forever.
const MAX_KEY_FILE_READ_BYTES: u64 = 256;

/// The store file a `--db-url` names: `redb:PATH` or `redb://PATH` (so
/// `redb:///var/x.redb` is absolute), `PATH` literal and non-empty, scheme
/// case-insensitive. Upstream's `sqlite:`/`postgres:` and anything else are
/// refused, saying what to use instead.
pub fn parse_db_url(url: &str) -> Result<PathBuf, String> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!("--db-url needs a scheme; {USE_INSTEAD}"));
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "redb" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("--db-url has no file path; {USE_INSTEAD}"));
            }
            Ok(PathBuf::from(path))
        }
        // Upstream's `sqlite:` and `postgres:` land here too.
        _ => {
            Err(format!("--db-url scheme '{}' is not supported: {USE_INSTEAD}", printable(&scheme)))
        }
    }
}

/// The scheme as shown: at most 32 characters, no control characters.
fn printable(scheme: &str) -> String {
    scheme.chars().take(32).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Reads a `--store-key-file`: 32 raw bytes (`head -c 32 /dev/urandom`) or
/// 64 hex characters and an optional newline (`openssl rand -hex 32`); an
/// all-zero placeholder is refused. Errors never show key bytes.
pub fn load_key_file(path: &Path) -> Result<[u8; STORE_KEY_BYTES], String> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open store key file {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_READ_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read store key file {shown}: {e}"))?;
    let key = parse_key(&bytes).ok_or_else(|| {
        format!(
            "store key file {shown} must hold exactly {STORE_KEY_BYTES} raw bytes or {} hex characters \
             (and an optional newline); it holds {}{} bytes",
            STORE_KEY_BYTES * 2,
            bytes.len(),
            if bytes.len() as u64 >= MAX_KEY_FILE_READ_BYTES { " or more" } else { "" },
        )
    })?;
    if key.iter().all(|&b| b == 0) {
        return Err(format!("store key file {shown} holds an all-zero key"));
    }
    Ok(key)
}

fn parse_key(bytes: &[u8]) -> Option<[u8; STORE_KEY_BYTES]> {
    if bytes.len() == STORE_KEY_BYTES {
        return bytes.try_into().ok();
    }
    let hex = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let hex = hex.strip_suffix(b"\r").unwrap_or(hex);
    if hex.len() != STORE_KEY_BYTES * 2 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    let mut key = [0u8; STORE_KEY_BYTES];
    for (out, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *out = u8::try_from((digit(pair[0])? << 4) | digit(pair[1])?).ok()?;
    }
    Some(key)
}
