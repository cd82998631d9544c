//! Custom metadata rules (PROTOCOL-HTTP2.md, "Custom-Metadata"): keys ending
//! in `-bin` carry base64 values. We accept padded and unpadded input, split
//! comma-joined values before decoding, and emit unpadded base64.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;

const BIN_DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const BIN_ENCODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

/// A `-bin` value that is not base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedBinary;

impl std::fmt::Display for MalformedBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed binary metadata")
    }
}

impl std::error::Error for MalformedBinary {}

/// Decode one `-bin` header value: comma-separated base64 parts (each padded
/// or not), returned as the list of decoded values.
pub fn decode_bin(value: &[u8]) -> Result<Vec<Vec<u8>>, MalformedBinary> {
    value
        .split(|&b| b == b',')
        .map(|part| {
            let part = part.trim_ascii();
            BIN_DECODER.decode(part).map_err(|_| MalformedBinary)
        })
        .collect()
}

/// Encode a binary metadata value (unpadded base64).
pub fn encode_bin(value: &[u8]) -> String {
    BIN_ENCODER.encode(value)
}

/// Check every `-bin` header of a request decodes (grpc-go answers a
/// malformed one with HTTP 400 / INTERNAL).
pub fn validate_bin_headers(headers: &HeaderMap) -> Result<(), MalformedBinary> {
    for (name, value) in headers {
        if name.as_str().ends_with("-bin") {
            decode_bin(value.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_unpadded_and_joined() {
        assert_eq!(decode_bin(b"q6ur").unwrap(), vec![vec![0xab, 0xab, 0xab]]);
        assert_eq!(decode_bin(b"AQ==").unwrap(), vec![vec![1]]);
        assert_eq!(decode_bin(b"AQ").unwrap(), vec![vec![1]]);
        assert_eq!(decode_bin(b"AQ,Ag==").unwrap(), vec![vec![1], vec![2]]);
        assert_eq!(decode_bin(b"").unwrap(), vec![Vec::<u8>::new()]);
        assert_eq!(decode_bin(b"*"), Err(MalformedBinary));
        assert_eq!(encode_bin(&[1]), "AQ");
    }
}
