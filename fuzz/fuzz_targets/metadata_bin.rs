//! `-bin` metadata decoding (padded or unpadded base64, comma-joined
//! values). Properties: never panics; every decoded value re-encodes
//! (unpadded) to text that decodes back to the same single value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::grpc::metadata::{decode_bin, encode_bin};

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = decode_bin(data) {
        for v in values {
            let enc = encode_bin(&v);
            assert!(!enc.contains('='), "emitted base64 is unpadded");
            assert_eq!(decode_bin(enc.as_bytes()).expect("own encoding decodes"), vec![v]);
        }
    }
});
