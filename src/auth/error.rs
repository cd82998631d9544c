//! Why a token was refused: one stable code per variant (README and clients
//! rely on them), which the client sees ("invalid token: <code>", auth.md
//! pipeline step 6) and the audit log keeps. A variant holds only static text,
//! so neither `Display` nor `Debug` can leak what the caller sent (jwt.md item 50).

use std::fmt;

/// Declares a reason enum with `code()` and `ALL_CODES` from one list, so the
/// codes cannot drift from the variants.
macro_rules! reason_codes {
    ($(#[$meta:meta])* pub enum $ty:ident {
        $($(#[$vmeta:meta])* $variant:ident $(($field:ty))? => $code:literal,)*
    }) => {
        $(#[$meta])*
        pub enum $ty {
            $($(#[$vmeta])* $variant $(($field))?,)*
        }

        impl $ty {
            /// The stable short reason code.
            pub fn code(&self) -> &'static str {
                match self {
                    $($ty::$variant { .. } => $code,)*
                }
            }

            /// Every code, in declaration order (for documentation and tests).
            pub const ALL_CODES: [&'static str; [$($code),*].len()] = [$($code),*];
        }
    };
}
pub(crate) use reason_codes;

reason_codes! {
/// A refusal of a bearer token, with its jwt.md items (the last four: the
/// time rules, items 33–34).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization` header (pipeline step 5).
    MissingAuthorization => "missing_authorization",
    /// Item 49: several headers, not `Bearer <token>`, or a token also in the
    /// query or a cookie.
    BadAuthorization => "bad_authorization",
    /// Longer than `max_token_bytes`, refused before decoding (item 1).
    TooLarge => "too_large",
    /// Items 2–11.
    Malformed(Malformed) => "malformed",
    /// Items 12–13.
    AlgNotAllowed => "alg_not_allowed",
    /// `crit`, `b64`, a key URL header, `enc`, `zip`, or `cty` JWT (items 14–16).
    UnsupportedHeader => "unsupported_header",
    /// Item 17.
    BadTyp => "bad_typ",
    /// Item 18.
    BadKid => "bad_kid",
    /// No usable key has this `kid` (or none of its type, without `kid`);
    /// the key source may refresh.
    UnknownKid => "unknown_kid",
    /// The `kid`'s key is of another type or JWK `alg` (item 20).
    KeyMismatch => "key_mismatch",
    /// Duplicated `kid`, or several keys for a token without one (items 21–22).
    AmbiguousKey => "ambiguous_key",
    /// Items 27–29.
    BadSignature => "bad_signature",
    /// `iss`, `sub`, `exp` or `aud` absent.
    MissingClaim(&'static str) => "missing_claim",
    /// Wrong JSON type or impossible value, never read as absent (items 31,
    /// 36–38); `roles`/`scopes` name the configured claims.
    InvalidClaim(&'static str) => "invalid_claim",
    /// Items 19, 35.
    BadIssuer => "bad_issuer",
    /// No configured audience in `aud`, and `azp` does not rescue it (item 36).
    BadAudience => "bad_audience",
    Expired => "expired",
    NotYetValid => "not_yet_valid",
    IssuedInFuture => "issued_in_future",
    LifetimeTooLong => "lifetime_too_long",
}
}

/// What exactly was malformed (logs and tests; the client sees `malformed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Segments,
    /// Not strict unpadded base64url, or an impossibly long signature.
    Base64,
    /// Including invalid UTF-8, lone surrogate escapes and trailing bytes.
    Json,
    NotAnObject,
    DuplicateMember,
    TooDeep,
    TooManyMembers,
}

impl Malformed {
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
