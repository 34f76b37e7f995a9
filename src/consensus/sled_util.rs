//! Small helpers shared by everything that keeps consensus data in sled.
//!
//! # Value format
//!
//! Every value pgkeel stores in sled starts with a 2-byte big-endian format
//! version, then the serde_json encoding of the value:
//!
//! ```text
//! +----------------+---------------------------+
//! | u16 BE version | serde_json bytes          |
//! +----------------+---------------------------+
//! ```
//!
//! [`encode`] always writes [`FORMAT_VERSION`]. [`decode`] accepts any
//! version from 1 up to and including [`FORMAT_VERSION`]. A newer version is
//! reported as [`CodecError::UnsupportedVersion`] (the data was written by a
//! newer pgkeel; it is not corrupt), while anything that cannot be decoded is
//! reported as corruption. Neither case panics.
//!
//! # Keys
//!
//! Numeric keys (such as log indexes) are stored as 8-byte big-endian `u64`,
//! so that sled's byte order is the numeric order and range scans work.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::FORMAT_VERSION;

/// Length of the format-version prefix of every stored value.
pub const VERSION_PREFIX_LEN: usize = 2;

/// Why a stored value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value is too short to even hold the version prefix.
    #[error(
        "stored value is {len} byte(s) long, too short to hold a format version (corrupted data)"
    )]
    Truncated { len: usize },

    /// The value was written by a newer pgkeel than this one.
    #[error(
        "stored value has format version {found}, but this pgkeel release only understands \
         versions up to {supported}; it was written by a newer pgkeel (upgrade this node)"
    )]
    UnsupportedVersion { found: u16, supported: u16 },

    /// Version 0 is never written: the prefix itself is damaged.
    #[error("stored value has format version 0, which is never written (corrupted data)")]
    InvalidVersion,

    /// The version is fine but the payload does not decode.
    #[error(
        "stored value with format version {version} does not decode (corrupted data): {source}"
    )]
    Corrupted {
        version: u16,
        #[source]
        source: serde_json::Error,
    },

    /// Serialising a value failed (should not happen for pgkeel's types).
    #[error("failed to encode value: {0}")]
    Encode(#[source] serde_json::Error),

    /// A key did not have the expected shape.
    #[error("stored key is {len} byte(s) long, expected {expected} (corrupted data)")]
    BadKey { len: usize, expected: usize },
}

impl CodecError {
    /// True when the data is intact but written by a newer release.
    pub fn is_unsupported_version(&self) -> bool {
        matches!(self, CodecError::UnsupportedVersion { .. })
    }
}

/// Encodes `value` as `FORMAT_VERSION (u16 BE) ++ serde_json(value)`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_with_version(FORMAT_VERSION, value)
}

/// Encodes with an explicit version. Only meant for tests (e.g. to fabricate
/// data "written by a future release"); production code uses [`encode`].
pub fn encode_with_version<T: Serialize + ?Sized>(
    version: u16,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&version.to_be_bytes());
    serde_json::to_writer(&mut out, value).map_err(CodecError::Encode)?;
    Ok(out)
}

/// Returns the format version of a stored value without decoding it.
pub fn peek_version(bytes: &[u8]) -> Result<u16, CodecError> {
    match bytes {
        [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(CodecError::Truncated { len: bytes.len() }),
    }
}

/// Decodes a value written by [`encode`] (by this or an older release).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let version = peek_version(bytes)?;
    if version == 0 {
        return Err(CodecError::InvalidVersion);
    }
    if version > FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    // Version 1 is the only one so far; when a version 2 changes a shape,
    // dispatch on `version` here and upgrade the old shape.
    serde_json::from_slice(&bytes[VERSION_PREFIX_LEN..])
        .map_err(|source| CodecError::Corrupted { version, source })
}

/// The sled key of a `u64` (big-endian, so byte order == numeric order).
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Parses a key written by [`u64_key`].
pub fn key_u64(key: &[u8]) -> Result<u64, CodecError> {
    let arr: [u8; 8] = key.try_into().map_err(|_| CodecError::BadKey {
        len: key.len(),
        expected: 8,
    })?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let v = vec![1u64, 2, 3];
        let bytes = encode(&v).expect("encode");
        assert_eq!(&bytes[..2], &FORMAT_VERSION.to_be_bytes());
        assert_eq!(peek_version(&bytes).expect("version"), FORMAT_VERSION);
        let back: Vec<u64> = decode(&bytes).expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn future_version_is_an_error_naming_the_version() {
        let bytes = encode_with_version(FORMAT_VERSION + 7, &"x").expect("encode");
        let err = decode::<String>(&bytes).expect_err("must not decode");
        assert!(err.is_unsupported_version());
        let msg = err.to_string();
        assert!(msg.contains(&(FORMAT_VERSION + 7).to_string()), "{msg}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            decode::<u64>(&[]),
            Err(CodecError::Truncated { len: 0 })
        ));
        assert!(matches!(
            decode::<u64>(&[0]),
            Err(CodecError::Truncated { len: 1 })
        ));
        assert!(matches!(
            decode::<u64>(&[0, 0, b'1']),
            Err(CodecError::InvalidVersion)
        ));
        let mut bad = FORMAT_VERSION.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{not json");
        assert!(matches!(
            decode::<u64>(&bad),
            Err(CodecError::Corrupted { .. })
        ));
        // Right version, wrong shape.
        let wrong = encode(&"a string").expect("encode");
        assert!(matches!(
            decode::<u64>(&wrong),
            Err(CodecError::Corrupted { .. })
        ));
    }

    #[test]
    fn keys() {
        assert_eq!(key_u64(&u64_key(42)).expect("key"), 42);
        assert!(u64_key(1) < u64_key(256));
        assert!(key_u64(&[1, 2, 3]).is_err());
    }
}
