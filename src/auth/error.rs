//! Why a token was refused: one enum, one stable short code per variant.
//!
//! The code is what a client sees ("invalid token: <code>", auth.md, request
//! pipeline step 6) and what the audit log records. A refusal never carries
//! the token, key material or a claim value: the only data in a variant is a
//! `&'static str` naming a registered claim or a static detail, so neither
//! `Display` nor `Debug` can leak anything the caller sent (jwt.md item 50).
//! This file is the single list of codes; README and clients rely on them.

use std::fmt;

/// A refusal of a bearer token. `code()` is the stable reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// `missing_authorization`: no `authorization` header (pipeline step 5).
    MissingAuthorization,
    /// `bad_authorization`: several `authorization` headers, a scheme other
    /// than `Bearer`, not exactly one space, an empty token, or a token also
    /// sent as an `access_token` query parameter or cookie (jwt.md item 49).
    BadAuthorization,
    /// `too_large`: the token is longer than `max_token_bytes`; refused
    /// before any decoding (jwt.md item 1).
    TooLarge,
    /// `malformed`: not a compact JWS with strict base64url segments, or a
    /// header/payload that is not a strict JSON object (jwt.md items 2–11).
    Malformed(Malformed),
    /// `alg_not_allowed`: `alg` missing, not a string, or not byte-equal to
    /// one of the configured algorithms (jwt.md items 12–13).
    AlgNotAllowed,
    /// `unsupported_header`: `crit`, `b64`, `jku`, `x5u`, `jwk`, `x5c`, `enc`
    /// or `zip` present, or `cty` is `JWT` (jwt.md items 14–16).
    UnsupportedHeader,
    /// `bad_typ`: `typ` present but not in the allowlist (jwt.md item 17).
    BadTyp,
    /// `bad_kid`: `kid` not a string, longer than 256 bytes, empty, or with
    /// control characters (jwt.md item 18).
    BadKid,
    /// `unknown_kid`: no usable key has this `kid` (or, for a token without
    /// `kid`, no key of the token's type exists). The JWKS fetcher may refresh.
    UnknownKid,
    /// `key_mismatch`: a key with this `kid` exists but cannot verify this
    /// token (other key type, or its JWK `alg` differs) (jwt.md item 20).
    KeyMismatch,
    /// `ambiguous_key`: the `kid` is duplicated in the key set, or a token
    /// without `kid` has more than one eligible key (jwt.md items 21–22).
    AmbiguousKey,
    /// `bad_signature`: the signature does not verify, or has the wrong
    /// length for the key (jwt.md items 27–29).
    BadSignature,
    /// `missing_claim`: a required claim (`iss`, `sub`, `exp`, `aud`) is
    /// absent. Carries the claim's name.
    MissingClaim(&'static str),
    /// `invalid_claim`: a claim has the wrong JSON type or an impossible
    /// value (negative or non-finite date, empty `aud` array, empty `sub`,
    /// roles not an array of strings…). Never treated as absent (jwt.md items
    /// 31, 36–38). Carries the claim's name (`roles`/`scopes` for the
    /// configured role and scope claims).
    InvalidClaim(&'static str),
    /// `bad_issuer`: `iss` is not byte-equal to the configured issuer
    /// (jwt.md items 19, 35).
    BadIssuer,
    /// `bad_audience`: no `aud` entry is a configured audience, and `azp`
    /// does not rescue it (jwt.md item 36).
    BadAudience,
    /// `expired`: `exp <= now - leeway` (jwt.md item 33).
    Expired,
    /// `not_yet_valid`: `nbf > now + leeway` (jwt.md item 33).
    NotYetValid,
    /// `issued_in_future`: `iat > now + leeway` (jwt.md item 33).
    IssuedInFuture,
    /// `lifetime_too_long`: `exp - iat` or `exp - now` exceeds the configured
    /// maximum lifetime (jwt.md item 34).
    LifetimeTooLong,
}

/// What exactly was malformed (for logs and tests; the client sees only
/// `malformed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Segments,
    /// A segment is not strict unpadded base64url (alphabet, length mod 4,
    /// non-canonical trailing bits), or the signature is impossibly long.
    Base64,
    /// The JSON is not well-formed (including invalid UTF-8 and lone
    /// surrogate escapes, or trailing bytes).
    Json,
    NotAnObject,
    DuplicateMember,
    TooDeep,
    /// An object has more members than allowed (64 in the header, 256 in
    /// the payload).
    TooManyMembers,
}

/// Writes `code()` and `ALL_CODES` from one list, so the two cannot drift.
macro_rules! reason_codes {
    ($ty:ident { $($variant:pat => $code:literal,)* }) => {
        impl $ty {
            /// The stable short reason code (see the variant docs).
            pub fn code(&self) -> &'static str {
                match self {
                    $($variant => $code,)*
                }
            }

            /// Every code, in declaration order (for documentation and tests).
            pub const ALL_CODES: [&'static str; [$($code),*].len()] = [$($code),*];
        }
    };
}
pub(crate) use reason_codes;

reason_codes!(AuthError {
    AuthError::MissingAuthorization => "missing_authorization",
    AuthError::BadAuthorization => "bad_authorization",
    AuthError::TooLarge => "too_large",
    AuthError::Malformed(_) => "malformed",
    AuthError::AlgNotAllowed => "alg_not_allowed",
    AuthError::UnsupportedHeader => "unsupported_header",
    AuthError::BadTyp => "bad_typ",
    AuthError::BadKid => "bad_kid",
    AuthError::UnknownKid => "unknown_kid",
    AuthError::KeyMismatch => "key_mismatch",
    AuthError::AmbiguousKey => "ambiguous_key",
    AuthError::BadSignature => "bad_signature",
    AuthError::MissingClaim(_) => "missing_claim",
    AuthError::InvalidClaim(_) => "invalid_claim",
    AuthError::BadIssuer => "bad_issuer",
    AuthError::BadAudience => "bad_audience",
    AuthError::Expired => "expired",
    AuthError::NotYetValid => "not_yet_valid",
    AuthError::IssuedInFuture => "issued_in_future",
    AuthError::LifetimeTooLong => "lifetime_too_long",
});

impl Malformed {
    /// A static description of the defect (no input data).
    pub fn detail(&self) -> &'static str {
        match self {
            Malformed::Segments => "not three non-empty dot-separated segments",
            Malformed::Base64 => "segment is not strict unpadded base64url",
            Malformed::Json => "invalid JSON",
            Malformed::NotAnObject => "JSON is not an object",
            Malformed::DuplicateMember => "duplicate JSON member name",
            Malformed::TooDeep => "JSON nested too deeply",
            Malformed::TooManyMembers => "too many JSON members",
        }
    }
}

impl fmt::Display for AuthError {
    /// The code, then a static description: never a value from the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())?;
        match self {
            AuthError::Malformed(m) => write!(f, " ({})", m.detail()),
            AuthError::MissingClaim(c) | AuthError::InvalidClaim(c) => write!(f, " ({c})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_listed() {
        let samples = [
            AuthError::MissingAuthorization,
            AuthError::BadAuthorization,
            AuthError::TooLarge,
            AuthError::Malformed(Malformed::Json),
            AuthError::AlgNotAllowed,
            AuthError::UnsupportedHeader,
            AuthError::BadTyp,
            AuthError::BadKid,
            AuthError::UnknownKid,
            AuthError::KeyMismatch,
            AuthError::AmbiguousKey,
            AuthError::BadSignature,
            AuthError::MissingClaim("exp"),
            AuthError::InvalidClaim("exp"),
            AuthError::BadIssuer,
            AuthError::BadAudience,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::IssuedInFuture,
            AuthError::LifetimeTooLong,
        ];
        let codes: Vec<&str> = samples.iter().map(AuthError::code).collect();
        assert_eq!(codes, AuthError::ALL_CODES);
        for c in codes {
            assert!(c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
