//! Checksums (`md5|sha1|sha256|sha512:<hex>`), parsed up front and computed while the
//! bytes stream through [`HashingReader`].

use crate::error::{Code, Error, Result};
use sha2::Digest;
use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// sha256 and sha512; md5 and sha1 have practical collisions.
    pub fn collision_resistant(self) -> bool {
        matches!(self, Algo::Sha256 | Algo::Sha512)
    }

    fn digest_len(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }
}

/// An expected checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algo: Algo,
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses `type:hex`; errors are `invalid_config` naming `field`.
    pub fn parse(s: &str, field: &str) -> Result<Checksum> {
        let bad = |m: String| Error::field(Code::InvalidConfig, field, m);
        let (t, h) = s.trim().split_once(':').ok_or_else(|| {
            bad(format!(
                "{field} must be \"type:hex\" with type md5, sha1, sha256 or sha512, e.g. \"sha256:<64 hex digits>\""
            ))
        })?;
        let algo = match t.trim().to_ascii_lowercase().as_str() {
            "md5" => Algo::Md5,
            "sha1" => Algo::Sha1,
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            other => {
                return Err(bad(format!(
                    "{field}: unsupported checksum type \"{other}\"; use md5, sha1, sha256 or sha512"
                )));
            }
        };
        let h = h.trim();
        if h.len() != algo.digest_len() * 2 {
            return Err(bad(format!(
                "{field}: a {} checksum has {} hex digits, got {}",
                algo.name(),
                algo.digest_len() * 2,
                h.len()
            )));
        }
        let digest = hex::decode(h).map_err(|_| {
            bad(format!(
                "{field}: checksum value must be hexadecimal digits"
            ))
        })?;
        Ok(Checksum { algo, digest })
    }

    /// `type-hex`, a file name for the cache.
    pub fn cache_key(&self) -> String {
        format!("{}-{}", self.algo.name(), hex::encode(&self.digest))
    }

    pub fn display(&self) -> String {
        format!("{}:{}", self.algo.name(), hex::encode(&self.digest))
    }
}

/// A running hash of one of the supported types.
#[derive(Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Md5 => Hasher::Md5(md5::Md5::new()),
            Algo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algo: Option<Algo>) -> Self {
        HashingReader {
            inner,
            hasher: algo.map(Hasher::new),
        }
    }

    /// Reads the rest of the stream (so the hash covers every byte).
    pub fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        while self.read(&mut buf)? != 0 {}
        Ok(())
    }

    /// Drains and compares against `expected`; `what` names the source in the message.
    pub fn verify(&mut self, expected: Option<&Checksum>, what: &str) -> Result<(), VerifyError> {
        self.drain().map_err(VerifyError::Io)?;
        let (Some(expected), Some(h)) = (expected, self.hasher.take()) else {
            return Ok(());
        };
        let got = h.finish();
        if got != expected.digest {
            return Err(VerifyError::Mismatch(Error::new(
                Code::ArtifactChecksum,
                format!(
                    "checksum mismatch for {what}: expected {}, got {}:{}",
                    expected.display(),
                    expected.algo.name(),
                    hex::encode(got)
                ),
            )));
        }
        Ok(())
    }

    /// The digest of what was read so far (consumes the running hash).
    #[cfg(feature = "testing")]
    pub fn hex_digest(&mut self) -> Option<String> {
        self.hasher.take().map(|h| hex::encode(h.finish()))
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

pub enum VerifyError {
    Io(io::Error),
    Mismatch(Error),
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_type_and_length() {
        let f = "artifacts[0].options.checksum";
        let ok = Checksum::parse(&format!("sha256:{}", "ab".repeat(32)), f).unwrap();
        assert_eq!(ok.algo, Algo::Sha256);
        for bad in [
            "sha256",
            "sha256:abc",
            "crc32:00000000",
            &format!("md5:{}", "zz".repeat(16)),
        ] {
            let e = Checksum::parse(bad, f).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{bad}");
            assert_eq!(e.field.as_deref(), Some(f));
        }
        assert!(Checksum::parse(&format!("MD5:{}", "AB".repeat(16)), f).is_ok());
    }

    #[test]
    fn known_digests() {
        let cases = [
            (Algo::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (Algo::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                Algo::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ];
        for (a, hexd) in cases {
            let mut r = HashingReader::new(&b"abc"[..], Some(a));
            let c = Checksum {
                algo: a,
                digest: hex::decode(hexd).unwrap(),
            };
            assert!(r.verify(Some(&c), "x").is_ok());
        }
    }
}
