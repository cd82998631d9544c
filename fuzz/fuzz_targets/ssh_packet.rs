//! The SSH packet decoder (slimgate::ssh::packet, after decryption: the
//! framing of RFC 4253 §6) on arbitrary bytes split at arbitrary points.
//! Properties: never panics; every payload is non-empty and within the
//! packet cap; the split does not change the result; the buffer never holds
//! more than one packet plus what was pushed; payloads re-encode and decode
//! to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::ssh::packet::{Decoder, Encoder, MAX_PACKET_LEN};

fn decode(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        assert!(d.buffer().len() <= MAX_PACKET_LEN + 4 + c.len(), "buffered {}", d.buffer().len());
        loop {
            match d.next_packet() {
                Ok(Some(p)) => {
                    assert!(!p.is_empty() && p.len() <= MAX_PACKET_LEN);
                    out.push(p);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let chunks: Vec<&[u8]> = rest.chunks(usize::from(split) + 1).collect();
    let (packets, failed) = decode(&chunks);
    let whole = decode(&[rest]);
    assert_eq!(packets, whole.0, "the split changed the packets");
    assert_eq!(failed, whole.1);
    let mut enc = Encoder::new();
    let wire: Vec<u8> = packets.iter().flat_map(|p| enc.encode(p)).collect();
    let (again, err) = decode(&[&wire]);
    assert!(!err);
    assert_eq!(again, packets);
});
