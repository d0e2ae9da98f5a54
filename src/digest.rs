//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher whose
//! state can be serialized, so that an upload can resume on any replica.
//!
//! This module knows nothing of HTTP, storage or SQL.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
use sha2::digest::common::hazmat::SerializableState;

/// A digest algorithm the registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default and what every client uses.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded hash.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Box::default()),
            Algorithm::Sha512 => Hasher::Sha512(Box::default()),
        }
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        }
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:hex`.
    #[error("digest {0:?} is not of the form algorithm:hex")]
    Malformed(String),
    /// An algorithm other than sha256 or sha512.
    #[error("digest algorithm {0:?} is not supported (sha256, sha512)")]
    UnsupportedAlgorithm(String),
    /// Hex part of the wrong length or with characters outside `[0-9a-f]`.
    #[error("digest {0:?} has an invalid encoded part")]
    BadEncoding(String),
}

/// A validated content digest. The hex part is always lowercase.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses and validates `algorithm:hex`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        let algorithm: Algorithm = algo.parse()?;
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadEncoding(s.to_owned()));
        }
        Ok(Digest {
            text: s.to_owned(),
            algorithm,
        })
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let mut h = algorithm.hasher();
        h.update(bytes);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        self.text
            .split_once(':')
            .map(|(_, hex)| hex)
            .unwrap_or_default()
    }

    /// The whole digest string.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// A running hash whose state can be saved between requests and restored anywhere.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Box<sha2::Sha256>),
    /// SHA-512 state.
    Sha512(Box<sha2::Sha512>),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The algorithm being computed.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed so far (the hasher itself is left untouched).
    pub fn finish(&self) -> Digest {
        let hex = match self {
            Hasher::Sha256(h) => hex::encode((**h).clone().finalize()),
            Hasher::Sha512(h) => hex::encode((**h).clone().finalize()),
        };
        let algorithm = self.algorithm();
        Digest {
            text: format!("{}:{hex}", algorithm.as_str()),
            algorithm,
        }
    }

    /// Serializes the internal state: the algorithm name, a colon, then the raw state.
    pub fn to_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + 220);
        out.extend_from_slice(self.algorithm().as_str().as_bytes());
        out.push(b':');
        match self {
            Hasher::Sha256(h) => out.extend_from_slice(&h.serialize()),
            Hasher::Sha512(h) => out.extend_from_slice(&h.serialize()),
        }
        out
    }

    /// Restores a hasher saved by [`Hasher::to_state`].
    pub fn from_state(state: &[u8]) -> Option<Self> {
        let colon = state.iter().position(|&b| b == b':')?;
        let algo: Algorithm = std::str::from_utf8(&state[..colon]).ok()?.parse().ok()?;
        let raw = &state[colon + 1..];
        Some(match algo {
            Algorithm::Sha256 => Hasher::Sha256(Box::new(
                sha2::Sha256::deserialize(raw.try_into().ok()?).ok()?,
            )),
            Algorithm::Sha512 => Hasher::Sha512(Box::new(
                sha2::Sha512::deserialize(raw.try_into().ok()?).ok()?,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(Algorithm::Sha256, b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert!(matches!(
            Digest::parse("sha256"),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Digest::parse("md5:abcd"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("sha256:ABCDEF"),
            Err(DigestError::BadEncoding(_))
        ));
        let upper = d.as_str().to_uppercase().replace("SHA256", "sha256");
        assert!(Digest::parse(&upper).is_err());
    }

    #[test]
    fn state_round_trips_mid_stream() {
        for algo in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = algo.hasher();
            h.update(&[7u8; 1000]);
            let saved = h.to_state();
            let mut resumed = Hasher::from_state(&saved).expect("restores");
            resumed.update(b"tail");
            let mut whole = Vec::from([7u8; 1000]);
            whole.extend_from_slice(b"tail");
            assert_eq!(resumed.finish(), Digest::of(algo, &whole));
        }
        assert!(Hasher::from_state(b"sha256:short").is_none());
        assert!(Hasher::from_state(b"nonsense").is_none());
    }
}
