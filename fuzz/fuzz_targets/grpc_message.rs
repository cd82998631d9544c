//! `grpc-message` percent-encoding. Properties: decoding arbitrary bytes
//! never panics; for any text, the encoding is printable ASCII with every
//! `%` followed by two uppercase hex digits, and decodes back to the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::grpc::status::{decode_message, encode_message};

fuzz_target!(|data: &[u8]| {
    let _ = decode_message(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let enc = encode_message(text);
        let b = enc.as_bytes();
        assert!(b.iter().all(|c| (0x20..=0x7e).contains(c)));
        for (i, &c) in b.iter().enumerate() {
            if c == b'%' {
                assert!(
                    b.get(i + 1).is_some_and(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h))
                );
                assert!(
                    b.get(i + 2).is_some_and(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h))
                );
            }
        }
        assert_eq!(decode_message(b), text);
    }
});
