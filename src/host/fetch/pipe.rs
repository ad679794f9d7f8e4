//! A read-ahead pipe: one thread pulls the download (through the cache tee and the
//! hasher) while the caller decompresses and unpacks, so the network, the hash and the
//! unpacking overlap as they do in `curl | tar xz`. Every byte still passes the hasher
//! exactly once and in order; the source comes back from [`pump`] when it is done.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender};

const CHUNK: usize = 256 * 1024;

pub enum Chunk {
    Data(Vec<u8>),
    Err(io::ErrorKind, String),
    Eof,
}

/// Reads `src` into the channel until its end, an error, or the receiver going away;
/// returns `src` (with its hash state) either way.
pub fn pump<R: Read>(mut src: R, tx: SyncSender<Chunk>) -> R {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match src.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Chunk::Eof);
                return src;
            }
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Chunk::Data(buf)).is_err() {
                    return src;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Chunk::Err(e.kind(), e.to_string()));
                return src;
            }
        }
    }
}

/// The reading end of [`pump`].
pub struct Prefetched {
    rx: Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Prefetched {
    pub fn new(rx: Receiver<Chunk>) -> Prefetched {
        Prefetched {
            rx,
            buf: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    /// Reads to the end, so every byte of the source went through the hasher.
    pub fn finish(&mut self) -> io::Result<()> {
        while !self.eof {
            self.pos = self.buf.len();
            self.fill()?;
        }
        Ok(())
    }

    fn fill(&mut self) -> io::Result<()> {
        match self.rx.recv() {
            Ok(Chunk::Data(v)) => {
                self.buf = v;
                self.pos = 0;
                Ok(())
            }
            Ok(Chunk::Eof) => {
                self.eof = true;
                Ok(())
            }
            Ok(Chunk::Err(kind, msg)) => Err(io::Error::new(kind, msg)),
            // The pump ended without saying so (it cannot, short of a panic).
            Err(_) => Err(io::Error::other("the download reader stopped")),
        }
    }
}

impl Read for Prefetched {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.eof || out.is_empty() {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_errors_and_returns_the_source() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let src = io::Cursor::new(data.clone());
        let h = std::thread::spawn(move || pump(src, tx));
        let mut p = Prefetched::new(rx);
        let mut got = Vec::new();
        p.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        p.finish().unwrap();
        assert_eq!(h.join().unwrap().position(), data.len() as u64);

        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let h = std::thread::spawn(move || pump(Failing, tx));
        let e = Prefetched::new(rx).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        h.join().unwrap();
    }
}
