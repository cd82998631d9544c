//! Strict unpadded base64url (RFC 7515 §2, RFC 4648 §5), used for JWS
//! segments and JWK members.
//!
//! Strict means: only `[A-Za-z0-9_-]` (no `=`, `+`, `/`, whitespace), a length
//! that is not 1 mod 4, and canonical trailing bits (the unused low bits of
//! the last character are zero), so every byte string has exactly one
//! accepted encoding (jwt.md items 4–5, Wycheproof tc360–374). The shape check
//! runs over the bytes without allocating, so a malformed token is refused
//! before any buffer exists; the `base64` crate's `URL_SAFE_NO_PAD` engine
//! (padding forbidden, trailing bits checked) then does the decoding and
//! enforces the same rules a second time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// True if `c` is in the base64url alphabet. Branch-free, so the loop below
/// vectorizes.
#[inline(always)]
fn is_alphabet(c: u8) -> bool {
    (c.wrapping_sub(b'A') < 26)
        | (c.wrapping_sub(b'a') < 26)
        | (c.wrapping_sub(b'0') < 10)
        | (c == b'-')
        | (c == b'_')
}

/// True if `seg` has the alphabet and length of canonical unpadded
/// base64url (the trailing-bit rule is checked when decoding). Allocates
/// nothing; scans the whole segment without early exit (≤ the token size
/// limit) so the compiler can use SIMD.
#[inline]
pub(crate) fn is_shape_ok(seg: &[u8]) -> bool {
    seg.len() % 4 != 1 && seg.iter().fold(true, |ok, &c| ok & is_alphabet(c))
}

/// The exact number of bytes `encoded_len` characters of unpadded base64url
/// decode to (assuming `encoded_len % 4 != 1`).
#[inline]
pub(crate) fn decoded_len(encoded_len: usize) -> usize {
    encoded_len / 4 * 3 + (encoded_len % 4).saturating_sub(1)
}

/// Decodes strict unpadded base64url into a new vector.
pub(crate) fn decode(seg: &[u8]) -> Option<Vec<u8>> {
    if !is_shape_ok(seg) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(seg).ok()
}

/// Decodes strict unpadded base64url into `out`, returning the length.
/// Fails if `out` is too small.
pub(crate) fn decode_into(seg: &[u8], out: &mut [u8]) -> Option<usize> {
    if !is_shape_ok(seg) || decoded_len(seg.len()) > out.len() {
        return None;
    }
    URL_SAFE_NO_PAD.decode_slice(seg, out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical() {
        assert_eq!(decode(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decode(b"Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode(b"Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode(b"").as_deref(), Some(&b""[..]));
        assert_eq!(decode(b"-_-_").as_deref(), Some(&[0xfb, 0xff, 0xbf][..]));
    }

    #[test]
    fn rejects_padding_and_foreign_alphabet() {
        for bad in [
            &b"Zg=="[..],
            b"Zm8=",
            b"+/+/",
            b"Zm9 v",
            b"Zm9\nv",
            b"Zm9\rv",
            b"Zm9\tv",
            b"Zm9?",
            b" Zm9v",
            b"Zm9v ",
            b"Zm\x009v",
            "Zm9é".as_bytes(),
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_length_one_mod_four() {
        assert_eq!(decode(b"Z"), None);
        assert_eq!(decode(b"Zm9vZ"), None);
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "Zh" and "Zg" both start with 'f' in lax decoders; only "Zg" is canonical.
        assert_eq!(decode(b"Zh"), None);
        assert_eq!(decode(b"Zm9"), None); // "Zm8" is the canonical "fo"
        assert!(decode(b"Zm8").is_some());
    }

    #[test]
    fn decoded_len_is_exact() {
        for n in 0..64usize {
            let data = vec![0xa5u8; n];
            let enc = URL_SAFE_NO_PAD.encode(&data);
            assert_eq!(decoded_len(enc.len()), n);
        }
    }

    #[test]
    fn decode_into_checks_room() {
        let mut buf = [0u8; 3];
        assert_eq!(decode_into(b"Zm9v", &mut buf), Some(3));
        assert_eq!(&buf, b"foo");
        let mut small = [0u8; 2];
        assert_eq!(decode_into(b"Zm9v", &mut small), None);
    }
}
