//! Strict unpadded base64url (RFC 7515 §2, RFC 4648 §5): only `[A-Za-z0-9_-]`,
//! a length not 1 mod 4 and zero unused trailing bits, so each byte string has
//! one accepted encoding (jwt.md items 4–5, Wycheproof tc360–374). The shape
//! check allocates nothing; `URL_SAFE_NO_PAD` then decodes, enforcing the
//! same rules again.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Branch-free, so the loop below vectorizes.
#[inline(always)]
fn is_alphabet(c: u8) -> bool {
    (c.wrapping_sub(b'A') < 26)
        | (c.wrapping_sub(b'a') < 26)
        | (c.wrapping_sub(b'0') < 10)
        | (c == b'-')
        | (c == b'_')
}

/// Alphabet and length (trailing bits are checked when decoding); no early
/// exit, so the compiler can use SIMD.
#[inline]
pub(crate) fn is_shape_ok(seg: &[u8]) -> bool {
    seg.len() % 4 != 1 && seg.iter().fold(true, |ok, &c| ok & is_alphabet(c))
}

/// Decoded size of `encoded_len` characters (`encoded_len % 4 != 1`).
#[inline]
pub(crate) fn decoded_len(encoded_len: usize) -> usize {
    encoded_len / 4 * 3 + (encoded_len % 4).saturating_sub(1)
}

pub(crate) fn decode(seg: &[u8]) -> Option<Vec<u8>> {
    if !is_shape_ok(seg) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(seg).ok()
}

/// Returns the length; fails if `out` is too small.
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
