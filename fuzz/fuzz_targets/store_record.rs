//! Decoding a stored record envelope from arbitrary bytes (what the store
//! reads back from disk). Properties: never panics; an accepted record
//! satisfies the store's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::store::{
    MAX_ID_BYTES, MAX_LABELS, MAX_PAYLOAD_BYTES, MAX_RECORD_NAME_BYTES, decode_record,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_record(data) {
        assert!(!r.name.is_empty() && r.name.len() <= MAX_RECORD_NAME_BYTES);
        assert!(r.id.len() <= MAX_ID_BYTES);
        assert!(r.labels.len() <= MAX_LABELS);
        assert!(r.payload.len() <= MAX_PAYLOAD_BYTES);
    }
});
