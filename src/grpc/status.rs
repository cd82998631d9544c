//! gRPC status codes, `grpc-message` percent-encoding, and the status that
//! handlers return.
//!
//! Encoding follows PROTOCOL-HTTP2.md ("Status-Message"): the message is
//! UTF-8, then bytes 0x20–0x7E except `%` go out raw and everything else
//! becomes `%XX` with uppercase hex. Decoding never fails: a `%` that is not
//! followed by two hex digits is passed through as it is, and the result is
//! made valid UTF-8 lossily.

use std::fmt;

use bytes::Bytes;

/// A gRPC status code (statuscodes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, indexed by its number.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a `grpc-status` value; anything unparseable or out of
    /// range is `Unknown`, as the spec asks of clients.
    pub fn from_header(value: &[u8]) -> Code {
        let parsed = std::str::from_utf8(value).ok().and_then(|s| s.parse::<usize>().ok());
        match parsed {
            Some(n) if n < Code::ALL.len() => Code::ALL[n],
            _ => Code::Unknown,
        }
    }

    /// The decimal `grpc-status` value (no leading zeros).
    pub fn as_header(self) -> &'static str {
        const TEXT: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        TEXT[self as usize]
    }

    /// The canonical upper-case name (`NOT_FOUND`), used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of a call that did not succeed (or, with `Code::Ok`, did).
///
/// `details` is an encoded `google.rpc.Status`, sent as
/// `grpc-status-details-bin` when present.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    details: Option<Bytes>,
}

impl Status {
    /// A status with a code and a message for the client.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), details: None }
    }

    /// Attach an encoded `google.rpc.Status` (sent as `grpc-status-details-bin`).
    pub fn with_details(mut self, details: Bytes) -> Status {
        self.details = Some(details);
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (not yet percent-encoded).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The encoded `google.rpc.Status`, if any.
    pub fn details(&self) -> Option<&Bytes> {
        self.details.as_ref()
    }

    /// `INVALID_ARGUMENT`
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    /// `NOT_FOUND`
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }
    /// `ALREADY_EXISTS`
    pub fn already_exists(message: impl Into<String>) -> Status {
        Status::new(Code::AlreadyExists, message)
    }
    /// `PERMISSION_DENIED`
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(Code::PermissionDenied, message)
    }
    /// `FAILED_PRECONDITION`
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, message)
    }
    /// `UNIMPLEMENTED`
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
    /// `INTERNAL`
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    /// `UNAVAILABLE`
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    /// `UNAUTHENTICATED`
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::Unauthenticated, message)
    }
    /// `RESOURCE_EXHAUSTED`
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }
    /// `DEADLINE_EXCEEDED`
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status").field("code", &self.code).field("message", &self.message).finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encode a status message for `grpc-message`.
pub fn encode_message(message: &str) -> String {
    let bytes = message.as_bytes();
    if bytes.iter().all(|&b| is_unreserved(b)) {
        return message.to_string();
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for &b in bytes {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[usize::from(b >> 4)] as char);
            out.push(HEX_UPPER[usize::from(b & 0x0F)] as char);
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    (0x20..=0x7E).contains(&b) && b != b'%'
}

/// Decode a `grpc-message` value. Never fails: malformed escapes pass
/// through unchanged, and invalid UTF-8 is replaced lossily.
pub fn decode_message(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'%'
            && i + 2 < value.len()
            && let (Some(hi), Some(lo)) = (hex_val(value[i + 1]), hex_val(value[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_message_round_trips() {
        let m = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let enc = encode_message(m);
        assert!(enc.bytes().all(|b| (0x20..=0x7E).contains(&b)));
        assert_eq!(decode_message(enc.as_bytes()), m);
    }

    #[test]
    fn percent_is_escaped_and_bad_escapes_pass_through() {
        assert_eq!(encode_message("100%"), "100%25");
        assert_eq!(decode_message(b"100%"), "100%");
        assert_eq!(decode_message(b"%zz%4"), "%zz%4");
        assert_eq!(decode_message(b"%41%e2%98%ba"), "A☺");
    }

    #[test]
    fn codes_parse_strictly() {
        assert_eq!(Code::from_header(b"5"), Code::NotFound);
        assert_eq!(Code::from_header(b"17"), Code::Unknown);
        assert_eq!(Code::from_header(b"x"), Code::Unknown);
        for c in Code::ALL {
            assert_eq!(Code::from_header(c.as_header().as_bytes()), c);
        }
    }
}
