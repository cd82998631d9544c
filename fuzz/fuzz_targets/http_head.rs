//! The HTTP/1.1 request-head parser (`net::head`) on arbitrary bytes.
//! Invariants: no panic; a parsed head never claims more bytes than it was
//! given or more than MAX_HEAD_BYTES, and holds at most MAX_HEADERS fields;
//! parsing is a function of the head's bytes alone (trailing bytes do not
//! change it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::net::head::{self, MAX_HEAD_BYTES, MAX_HEADERS};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((h, used))) = head::parse(data) {
        assert!(used <= data.len() && used <= MAX_HEAD_BYTES);
        assert!(h.headers.len() <= MAX_HEADERS);
        assert!(h.headers.iter().all(|(n, _)| !n.bytes().any(|b| b.is_ascii_uppercase())));
        let again = head::parse(&data[..used]).expect("same head").expect("complete");
        assert_eq!(again, (h, used));
    }
});
