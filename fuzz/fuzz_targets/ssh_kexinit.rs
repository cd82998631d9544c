//! KEXINIT parsing (slimgate::ssh::wire::parse_kexinit, RFC 4253 §7.1) on
//! arbitrary bytes. Properties: never panics; a parsed message's name-lists
//! are printable ASCII and fit in the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::ssh::wire::parse_kexinit;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = parse_kexinit(data) {
        let lists =
            [k.kex, k.host_key, k.cipher_cs, k.cipher_sc, k.mac_cs, k.mac_sc, k.comp_cs, k.comp_sc];
        let total: usize = lists.iter().map(|l| l.len()).sum();
        assert!(total + 17 + 40 + 5 <= data.len());
        assert!(lists.iter().all(|l| l.bytes().all(|b| b.is_ascii_graphic())));
    }
});
