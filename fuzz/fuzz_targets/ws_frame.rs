//! The WebSocket frame decoder (`net::ws`) on arbitrary bytes fed in
//! arbitrary pieces. Invariants: no panic; the decoder never holds more
//! than a control frame's 125 bytes of its own (data payload is handed
//! out as it arrives); the data it yields is the same however the input is
//! split.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slimgate::net::ws::{Decoder, Event};

fn run(data: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let (mut out, mut events) = (Vec::new(), 0);
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match d.next(&mut buf) {
                Ok(Some(Event::Data(b))) => out.extend_from_slice(&b),
                Ok(Some(Event::Ping(p) | Event::Close(p))) => {
                    assert!(p.len() <= 125);
                    events += 1;
                }
                Ok(None) => break,
                Err(_) => return (out, events, true),
            }
        }
        // What stays buffered is at most one incomplete frame header.
        assert!(buf.len() < 14 + piece.max(1), "decoder kept {} bytes", buf.len());
    }
    (out, events, false)
}

fuzz_target!(|input: (u8, &[u8])| {
    let (piece, data) = input;
    let whole = run(data, data.len());
    let split = run(data, usize::from(piece % 17) + 1);
    assert_eq!(whole, split, "decoding depends on how the input is split");
});
