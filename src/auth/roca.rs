//! ROCA fingerprint test (CVE-2017-15361, Nemec et al., CCS 2017). RSALib's
//! primes are `k·M + (65537^a mod M)`, so its moduli are, modulo each small
//! prime of `M`, powers of 65537; a random modulus passes for all 38 primes
//! with negligible probability. The `roca-detect` prime list, run once per
//! RSA key at load (jwt.md item 23, Wycheproof JWK tc7); membership is
//! computed, not copied as masks, so only the primes need auditing.

/// The small primes of the ROCA detector (all primes from 3 to 167).
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

const ROCA_GENERATOR: u32 = 65537;

fn mod_small(n: &[u8], p: u32) -> u32 {
    n.iter().fold(0u32, |r, &b| ((r << 8) | u32::from(b)) % p)
}

fn in_generated_subgroup(r: u32, p: u32) -> bool {
    let g = ROCA_GENERATOR % p;
    let mut x = 1u32;
    // The subgroup has at most p - 1 elements; walk it once.
    for _ in 0..p {
        if x == r {
            return true;
        }
        x = x * g % p;
        if x == 1 {
            break;
        }
    }
    false
}

pub(crate) fn has_roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| in_generated_subgroup(mod_small(n, p), p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The membership masks of the published detector for the first primes
    /// (bit r set when r is in the subgroup).
    #[test]
    fn masks_match_the_published_detector() {
        let published: [(u32, u128); 8] = [
            (3, 6),
            (5, 30),
            (7, 126),
            (11, 1026),
            (13, 5658),
            (17, 107286),
            (19, 199410),
            (23, 8388606),
        ];
        for (p, mask) in published {
            let ours: u128 =
                (0..p).filter(|&r| in_generated_subgroup(r, p)).map(|r| 1u128 << r).sum();
            assert_eq!(ours, mask, "p = {p}");
        }
    }

    #[test]
    fn mod_small_matches_arithmetic() {
        let n = 0x0123_4567_89ab_cdefu64;
        for p in ROCA_PRIMES {
            assert_eq!(u64::from(mod_small(&n.to_be_bytes(), p)), n % u64::from(p));
        }
    }

    #[test]
    fn ordinary_values_are_not_fingerprinted() {
        assert!(!has_roca_fingerprint(&[0xff; 256]));
        assert!(!has_roca_fingerprint(&[0x00]));
    }

    #[test]
    fn powers_of_the_generator_are_fingerprinted() {
        // 65537 itself is 65537^1 modulo every prime.
        assert!(has_roca_fingerprint(&65537u32.to_be_bytes()));
        assert!(has_roca_fingerprint(&[1]));
    }
}
