//! The channel between the host library and a task's supervisor: one unix stream socket,
//! the supervisor's fd 1, carrying the messages of [`crate::proto`] as lines. Each end has
//! one reader, a [`Channel`]: it keeps what it received past a line for the next one
//! (the host may send the go right behind the spec).
//!
//! Writes use `MSG_NOSIGNAL`: a peer that went away is an `EPIPE` error, never a SIGPIPE
//! (the host's disposition is not ours to rely on; the supervisor would read it from its
//! signalfd and forward it to the task).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub use crate::sys::socket::{recv_with_fd, send_all, send_with_fd, socketpair, socketpair_of};

/// One end of a channel: the socket, and bytes received but not yet taken as a line.
pub struct Channel {
    pub fd: std::sync::Arc<OwnedFd>,
    buf: Vec<u8>,
    /// Where the search for a newline in `buf` resumes.
    scanned: usize,
    eof: bool,
    /// Fds that came with the bytes received (the host's wait pipe, with its go).
    fds: Vec<OwnedFd>,
}

/// What [`Channel::line`] found.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A line, without its newline.
    Complete(Vec<u8>),
    /// Nothing complete yet (non-blocking only).
    Pending,
    /// The peer closed its end (a last line without a newline is dropped).
    Eof,
}

/// What [`Channel::next`] found (host side).
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Message(crate::proto::ToHost),
    /// Nothing complete yet (non-blocking only).
    Pending,
    /// The supervisor closed its end without a (further) message.
    Eof,
}

impl Channel {
    pub fn new(fd: OwnedFd) -> Channel {
        Channel {
            fd: std::sync::Arc::new(fd),
            buf: vec![],
            scanned: 0,
            eof: false,
            fds: vec![],
        }
    }

    /// The socket alone, if nothing else holds it and no byte is left unread.
    pub fn into_fd(self) -> Option<OwnedFd> {
        if !self.buf.is_empty() || self.eof {
            return None;
        }
        std::sync::Arc::try_unwrap(self.fd).ok()
    }

    /// The next line, of at most `limit` bytes (a longer one is an error).
    pub fn line(&mut self, blocking: bool, limit: usize) -> io::Result<Line> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let rest = self.buf.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                self.scanned = 0;
                return Ok(Line::Complete(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > limit {
                return Err(io::Error::other("message too large"));
            }
            if self.eof {
                return Ok(Line::Eof);
            }
            // Received straight into the buffer's unused capacity: a large spec touches only
            // the pages it lands in (a fresh supervisor pays a page fault for each).
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(self.buf.capacity().max(16384));
            }
            let max = limit + 1 - self.buf.len();
            match crate::sys::socket::recv_append(
                &self.fd,
                &mut self.buf,
                max,
                !blocking,
                &mut self.fds,
            )? {
                Some(0) => self.eof = true,
                Some(_) => {}
                None if blocking => continue,
                None => return Ok(Line::Pending),
            }
        }
    }

    /// The first fd received and not taken yet.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }

    /// Whether a line (or EOF) is there within `ms` (-1: no limit), without taking it.
    pub fn readable_within(&self, ms: i64) -> bool {
        self.buffered() || crate::sys::poll_readable(self.fd.as_raw_fd(), ms).unwrap_or(false)
    }

    /// Whether a line is waiting in the buffer (a poll of the socket would not show it).
    pub fn buffered(&self) -> bool {
        self.eof || self.buf.contains(&b'\n')
    }

    /// The next report (host side); blocking waits for one (or EOF). A line that is not
    /// a report is an error.
    pub fn next(&mut self, blocking: bool) -> io::Result<Incoming> {
        match self.line(blocking, crate::proto::MAX_LINE)? {
            Line::Complete(l) => crate::proto::parse(&l)
                .map(Incoming::Message)
                .map_err(io::Error::other),
            Line::Pending => Ok(Incoming::Pending),
            Line::Eof => Ok(Incoming::Eof),
        }
    }

    /// Waits up to `ms` for the next report; `None` on timeout, EOF or error.
    pub fn next_within(&mut self, ms: i64) -> Option<crate::proto::ToHost> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        loop {
            match self.next(false) {
                Ok(Incoming::Message(m)) => return Some(m),
                Ok(Incoming::Pending) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() || !self.readable_within(left.as_millis() as i64) {
                        return None;
                    }
                }
                Ok(Incoming::Eof) | Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::socket::{recv, shutdown_write};

    fn line(c: &mut Channel, limit: usize) -> io::Result<Line> {
        c.line(true, limit)
    }

    #[test]
    fn messages_split_across_and_within_reads() {
        use crate::proto::ToHost;
        let (a, b) = socketpair().unwrap();
        let mut h = Channel::new(a);
        assert_eq!(h.next(false).unwrap(), Incoming::Pending);
        send_all(&b, b"\"idle\"\n\"id").unwrap();
        assert_eq!(h.next(true).unwrap(), Incoming::Message(ToHost::Idle));
        assert_eq!(h.next(false).unwrap(), Incoming::Pending);
        send_all(&b, b"le\"\n{\"not\":1}\n").unwrap();
        drop(b);
        assert_eq!(h.next(false).unwrap(), Incoming::Message(ToHost::Idle));
        assert!(h.next(false).is_err(), "a line that is not a message");
        assert_eq!(h.next(true).unwrap(), Incoming::Eof);
    }

    #[test]
    fn lines_end_at_a_newline_then_eof_ends_the_channel() {
        let (a, b) = socketpair().unwrap();
        let mut c = Channel::new(b);
        send_all(&a, b"{\"first\":1}\n").unwrap();
        assert_eq!(
            line(&mut c, 100).unwrap(),
            Line::Complete(b"{\"first\":1}".to_vec())
        );
        // The same socket carries the next one (a supervisor that runs another task).
        send_all(&a, b"{\"second\":2}\n").unwrap();
        assert_eq!(
            line(&mut c, 100).unwrap(),
            Line::Complete(b"{\"second\":2}".to_vec())
        );
        drop(a);
        assert_eq!(line(&mut c, 100).unwrap(), Line::Eof);
    }

    #[test]
    fn lines_that_came_together_are_kept_for_the_next_read() {
        // The spec and the go line sent at once: each read takes one line, and what
        // follows stays buffered (a poll of the socket would not show it).
        let (a, b) = socketpair().unwrap();
        let mut c = Channel::new(b);
        send_all(&a, b"{\"spec\":1}\n{\"go\":2}\nkeep\n").unwrap();
        assert_eq!(
            line(&mut c, 100).unwrap(),
            Line::Complete(b"{\"spec\":1}".to_vec())
        );
        assert!(c.buffered() && c.readable_within(0));
        assert_eq!(
            line(&mut c, 100).unwrap(),
            Line::Complete(b"{\"go\":2}".to_vec())
        );
        assert_eq!(line(&mut c, 100).unwrap(), Line::Complete(b"keep".to_vec()));
        assert!(!c.buffered() && !c.readable_within(0));
        assert_eq!(c.line(false, 100).unwrap(), Line::Pending);
    }

    #[test]
    fn unterminated_line_at_shutdown_is_eof_and_no_sigpipe() {
        let (a, b) = socketpair().unwrap();
        let mut c = Channel::new(b);
        send_all(&a, b"spec").unwrap();
        shutdown_write(&a);
        assert_eq!(line(&mut c, 100).unwrap(), Line::Eof);
        drop(c);
        // The peer is gone: an error, not a SIGPIPE that would kill the test process.
        assert!(send_all(&a, b"x").is_err());
    }

    #[test]
    fn fd_passes_with_a_message() {
        let (a, b) = socketpair_of(libc::SOCK_SEQPACKET).unwrap();
        let (x, y) = socketpair().unwrap();
        send_with_fd(&a, b"hello", &y).unwrap();
        drop(y);
        let mut buf = [0u8; 64];
        let (n, fd) = recv_with_fd(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let fd = fd.expect("an fd");
        // The passed end works: what goes into x comes out of it.
        send_all(&x, b"through").unwrap();
        let mut got = [0u8; 16];
        let k = recv(&fd, &mut got, false).unwrap().unwrap();
        assert_eq!(&got[..k], b"through");
        drop(a);
        assert_eq!(recv_with_fd(&b, &mut buf).unwrap().0, 0, "EOF");
    }

    #[test]
    fn large_line_read_whole_and_limit_enforced() {
        // No newline inside, as in compact JSON; one at the end, and the writer stays.
        let data: Vec<u8> = (0..300_000u32).map(|i| b' ' + (i % 94) as u8).collect();
        for (limit, whole) in [(1 << 20, true), (300_000, true), (100_000, false)] {
            let (a, b) = socketpair().unwrap();
            let mut sent = data.clone();
            sent.push(b'\n');
            let t = std::thread::spawn(move || {
                let _ = send_all(&a, &sent);
                a
            });
            let mut c = Channel::new(b);
            let got = line(&mut c, limit);
            drop(c);
            t.join().unwrap();
            match got {
                Ok(Line::Complete(v)) => assert!(whole && v == data, "{} bytes", v.len()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => assert!(!whole && e.to_string().contains("too large"), "{e}"),
            }
        }
    }
}
