//! `grpc-timeout` parsing on arbitrary bytes. Properties: never panics;
//! only 1–8 digits and a unit are accepted; a parsed duration formats to a
//! value that parses back to at least the same duration (rounded up).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::grpc::timeout::{MAX_TIMEOUT, format, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = parse(data) {
        assert!((2..=9).contains(&data.len()));
        assert!(data[..data.len() - 1].iter().all(u8::is_ascii_digit));
        assert!(d <= MAX_TIMEOUT);
        let text = format(d);
        let back = parse(text.as_bytes()).expect("formatted timeouts parse");
        assert!(back >= d || back == MAX_TIMEOUT, "{text}");
    }
});
