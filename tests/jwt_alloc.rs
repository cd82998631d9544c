//! jwt.md item 3: a 1 MiB string of dots is refused in O(1) extra memory
//! (CVE-2025-30204: splitting into a Vec of segments first). Measured with
//! `allocation-counter`, which counts this thread's heap allocations; the
//! verifier, key set and token are built before measuring.

mod common;

use common::*;
use slimgate::auth::{AuthError, Malformed, jwt};

const MIB: usize = 1024 * 1024;

#[test]
fn item_03_mebibyte_of_dots_rejected_without_allocating() {
    let keys = keyset();
    let dots = ".".repeat(MIB);
    let letters_then_dots = format!("{}{}", "A".repeat(MIB / 2), ".".repeat(MIB / 2));
    let no_dots = "A".repeat(MIB);
    let bad_alphabet = format!("{}.{}.{}", "A".repeat(MIB / 2), "=".repeat(8), "A".repeat(8));

    // Default limit: refused by size, no allocation.
    let default = verifier();
    let info = allocation_counter::measure(|| {
        assert_eq!(default.verify(&dots, &keys, NOW), Err(AuthError::TooLarge));
        assert_eq!(default.verify_cached(&dots, &keys, NOW).map(|_| ()), Err(AuthError::TooLarge));
    });
    assert_eq!(info.count_total, 0, "{info:?}");

    // Limit raised above 1 MiB, so the grammar check itself must refuse
    // these without allocating.
    let big = verifier_with(|c| {
        c.max_token_bytes = 2 * MIB;
        c.cache_entries = 0;
    });
    let info = allocation_counter::measure(|| {
        let seg = Err(AuthError::Malformed(Malformed::Segments));
        assert_eq!(big.verify(&dots, &keys, NOW).map(|_| ()), seg);
        assert_eq!(big.verify(&letters_then_dots, &keys, NOW).map(|_| ()), seg);
        assert_eq!(big.verify(&no_dots, &keys, NOW).map(|_| ()), seg);
        assert_eq!(
            big.verify(&bad_alphabet, &keys, NOW).map(|_| ()),
            Err(AuthError::Malformed(Malformed::Base64))
        );
        assert!(jwt::split(&dots, 2 * MIB).is_err());
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(info.bytes_max, 0, "{info:?}");
}

#[test]
fn valid_token_does_allocate_so_the_counter_works() {
    let keys = keyset();
    let v = verifier();
    let token = rs256_token(&claims());
    let info = allocation_counter::measure(|| {
        assert!(v.verify(&token, &keys, NOW).is_ok());
    });
    assert!(info.count_total > 0);
}
