//! The gRPC length-prefixed message decoder on arbitrary bytes, split into
//! DATA frames at arbitrary points. Properties: never panics; never returns
//! a message above the limit; the messages decoded re-encode to exactly the
//! bytes consumed, and decoding that re-encoding gives the same messages
//! whatever the split; the memory it holds stays within a small multiple of
//! the bytes it buffers (it never reserves from a declared length).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use slimgate::grpc::frame::{Decoder, FrameError, encode_raw};

const LIMIT: usize = 4096;

fn decode(chunks: &[&[u8]]) -> (Vec<Bytes>, Option<FrameError>) {
    let mut d = Decoder::new(LIMIT);
    let mut out = Vec::new();
    for c in chunks {
        d.push(Bytes::copy_from_slice(c));
        assert!(
            d.held() <= 4 * (d.buffered() + c.len()) + 256,
            "holds {} bytes for {} buffered",
            d.held(),
            d.buffered()
        );
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(m.len() <= LIMIT);
                    out.push(m);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, d.finish().err())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    // Split the rest into frames of 1..=split+1 bytes.
    let step = usize::from(split) + 1;
    let chunks: Vec<&[u8]> = rest.chunks(step).collect();
    let (messages, error) = decode(&chunks);
    let whole = decode(&[rest]);
    assert_eq!(messages, whole.0, "the split changed the messages");
    assert_eq!(error.is_some(), whole.1.is_some());
    // Round trip.
    let mut wire = Vec::new();
    for m in &messages {
        wire.extend_from_slice(&encode_raw(m));
    }
    if error.is_none() {
        assert_eq!(wire, rest, "re-encoding differs from the input");
    }
    let (again, err) = decode(&[&wire]);
    assert!(err.is_none());
    assert_eq!(again, messages);
});
