//! Upstream's field limits that several handlers share, written once, with
//! upstream's exact INVALID_ARGUMENT messages (clients and tests match on
//! them). Limits that belong to one request stay beside its handler.

use std::collections::BTreeMap;

use crate::grpc::Status;

/// Longest object name (sandbox, provider), in bytes: a Kubernetes DNS
/// subdomain.
pub const MAX_NAME_BYTES: usize = 253;
/// Longest key of any `map<string,string>` field, in bytes.
pub const MAX_MAP_KEY_BYTES: usize = 256;
/// Longest value of any `map<string,string>` field, in bytes.
pub const MAX_MAP_VALUE_BYTES: usize = 8192;
/// Longest log level, in bytes: upstream's limit on `spec.log_level`, and
/// what a pushed log line's `level` is cut to.
pub const MAX_LOG_LEVEL_BYTES: usize = 32;

/// Where to cut `s` to at most `max` bytes, at a character boundary.
pub fn char_floor(s: &str, max: usize) -> usize {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// A `map<string,string>` field: at most `max_entries` entries, keys and
/// values within the shared limits.
pub fn string_map(
    map: &BTreeMap<String, String>,
    max_entries: usize,
    field: &str,
) -> Result<(), Status> {
    if map.len() > max_entries {
        return Err(Status::invalid_argument(format!(
            "{field} exceeds maximum entries ({} > {max_entries})",
            map.len()
        )));
    }
    for (key, value) in map {
        if key.len() > MAX_MAP_KEY_BYTES {
            return Err(Status::invalid_argument(format!(
                "{field} key exceeds maximum length ({} > {MAX_MAP_KEY_BYTES})",
                key.len()
            )));
        }
        if value.len() > MAX_MAP_VALUE_BYTES {
            return Err(Status::invalid_argument(format!(
                "{field} value exceeds maximum length ({} > {MAX_MAP_VALUE_BYTES})",
                value.len()
            )));
        }
    }
    Ok(())
}
