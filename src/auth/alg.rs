//! The two JWS algorithms slimgate accepts: `none`, HS*, PS*, ES384+ and EdDSA
//! cannot even be named (auth.md "JWT verification"; jwt.md item 12).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), 2048–8192-bit keys.
    RS256,
    /// ECDSA on P-256 with SHA-256, 64-byte `r || s` signature (RFC 7518 §3.4).
    ES256,
}

impl Algorithm {
    /// The default allowed set.
    pub const ALL: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

    /// Byte-exact, case-sensitive (jwt.md item 13).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::RS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }

    /// Index into per-key-type tables (RSA = 0, EC = 1).
    pub(crate) fn index(self) -> usize {
        match self {
            Algorithm::RS256 => 0,
            Algorithm::ES256 => 1,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact() {
        assert_eq!(Algorithm::from_name("RS256"), Some(Algorithm::RS256));
        assert_eq!(Algorithm::from_name("ES256"), Some(Algorithm::ES256));
        for bad in ["rs256", "Rs256", "RS256 ", " RS256", "RS256\0", "none", "HS256", "PS256"] {
            assert_eq!(Algorithm::from_name(bad), None, "{bad:?}");
        }
    }
}
