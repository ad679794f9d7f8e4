//! The channel between the host library and a task's supervisor: one unix stream socket,
//! the supervisor's fd 1, carrying the messages of [`crate::proto`] as lines. A read on
//! the supervisor's side never takes more than one line ([`read_line`]): a standby may
//! read the spec and its supervisor the next message.
//!
//! Writes use `MSG_NOSIGNAL`: a peer that went away is an `EPIPE` error, never a SIGPIPE
//! (the host's disposition is not ours to rely on; the supervisor would read it from its
//! signalfd and forward it to the task).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A connected `AF_UNIX` stream socket pair, both ends close-on-exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair_of(libc::SOCK_STREAM)
}

/// A unix socket pair of `kind` (`SOCK_STREAM`, `SOCK_SEQPACKET`), close-on-exec.
pub fn socketpair_of(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `buf`, without SIGPIPE.
pub fn send_all(fd: &OwnedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Shuts the write side: the peer reads EOF after what was sent.
#[cfg(test)]
pub fn shutdown_write(fd: &OwnedFd) {
    // SAFETY: shutdown on a socket we own.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}

/// Reads one line from the host: the spec, or the go line after it. Until the first
/// newline (the spec has none inside; it is not returned), or EOF; at most `limit` bytes.
/// Nothing after the newline is consumed: the next line may have arrived with it, and may
/// be for another reader (a standby reads the spec, its supervisor the go line). Empty
/// when the host closed the channel first.
pub fn read_line(fd: &OwnedFd, limit: usize) -> io::Result<Vec<u8>> {
    // Received straight into the vector's spare capacity, never zeroed: only the pages
    // the bytes land in are touched (a fresh supervisor pays a page fault for each).
    let mut out: Vec<u8> = Vec::with_capacity(16384);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity());
        }
        let room = out.spare_capacity_mut();
        // Peek first, then take what belongs to this line.
        // SAFETY: recv(2) into `room`, writable memory of `room.len()` bytes that we own.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                room.as_mut_ptr().cast(),
                room.len(),
                libc::MSG_PEEK,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        // SAFETY: the kernel initialized the n bytes of `room` it peeked into.
        let peeked = unsafe { std::slice::from_raw_parts(room.as_ptr().cast::<u8>(), n as usize) };
        let end = peeked.iter().position(|&b| b == b'\n');
        let take = end.map_or(n as usize, |i| i + 1);
        // The same bytes again, now consumed (nothing else reads this socket meanwhile).
        // SAFETY: as above, `take` <= `room.len()`.
        let got = unsafe { libc::recv(fd.as_raw_fd(), room.as_mut_ptr().cast(), take, 0) };
        if got != take as isize {
            return Err(io::Error::other("the channel changed under a peeked read"));
        }
        // SAFETY: the kernel initialized the `take` bytes after the current length.
        unsafe { out.set_len(out.len() + take) };
        if out.len() > limit {
            return Err(io::Error::other("launch spec too large"));
        }
        if end.is_some() {
            out.pop();
            return Ok(out);
        }
    }
}

/// One `recv`; `None` when non-blocking and nothing is there (or interrupted).
fn recv(fd: &OwnedFd, buf: &mut [u8], nonblocking: bool) -> io::Result<Option<usize>> {
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// The host's end: the socket plus bytes received but not yet consumed as a line.
pub struct HostEnd {
    pub fd: std::sync::Arc<OwnedFd>,
    buf: Vec<u8>,
    eof: bool,
}

/// What [`HostEnd::next`] found.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Message(crate::proto::ToHost),
    /// Nothing complete yet (non-blocking only).
    Pending,
    /// The supervisor closed its end without a (further) message.
    Eof,
}

impl HostEnd {
    pub fn new(fd: OwnedFd) -> HostEnd {
        HostEnd {
            fd: std::sync::Arc::new(fd),
            buf: vec![],
            eof: false,
        }
    }

    /// The socket alone, if nothing else holds it and no byte is left unread.
    pub fn into_fd(self) -> Option<OwnedFd> {
        if !self.buf.is_empty() || self.eof {
            return None;
        }
        std::sync::Arc::try_unwrap(self.fd).ok()
    }

    /// Waits up to `ms` for the next message; `None` on timeout, EOF or error.
    pub fn next_within(&mut self, ms: i64) -> Option<crate::proto::ToHost> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        loop {
            match self.next(false) {
                Ok(Incoming::Message(m)) => return Some(m),
                Ok(Incoming::Pending) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero()
                        || !crate::sys::poll_readable(self.fd.as_raw_fd(), left.as_millis() as i64)
                            .unwrap_or(false)
                    {
                        return None;
                    }
                }
                Ok(Incoming::Eof) | Err(_) => return None,
            }
        }
    }

    /// The next message; blocking waits for one (or EOF). A line that is not a message
    /// is an error.
    pub fn next(&mut self, blocking: bool) -> io::Result<Incoming> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return crate::proto::parse(&line)
                    .map(Incoming::Message)
                    .map_err(io::Error::other);
            }
            if self.eof {
                return Ok(Incoming::Eof);
            }
            let mut chunk = [0u8; 4096];
            match recv(&self.fd, &mut chunk, !blocking)? {
                Some(0) => self.eof = true,
                Some(n) => self.buf.extend_from_slice(&chunk[..n]),
                None if blocking => continue,
                None => return Ok(Incoming::Pending),
            }
        }
    }
}

/// Sends `data` with one fd attached (`SCM_RIGHTS`), as one message.
pub fn send_with_fd(sock: &OwnedFd, data: &[u8], fd: &OwnedFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at a buffer of msg_controllen bytes, room for one header
    // carrying one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd.as_raw_fd());
    }
    // SAFETY: a valid msghdr; MSG_NOSIGNAL: a gone peer is an error, not a SIGPIPE.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// Receives one message into `buf`, and the fd attached to it if any (made
/// close-on-exec). `Ok((0, None))` at EOF.
pub fn recv_with_fd(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    loop {
        // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: a valid msghdr over our buffers.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut fd = None;
        // SAFETY: the kernel filled msg_control; the macros walk it within
        // msg_controllen, and an SCM_RIGHTS payload holds ints that are new fds of ours.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("control data truncated"));
        }
        return Ok((n as usize, fd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_and_within_reads() {
        use crate::proto::ToHost;
        let (a, b) = socketpair().unwrap();
        let mut h = HostEnd::new(a);
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
    fn specs_end_at_a_newline_then_eof_ends_the_channel() {
        let (a, b) = socketpair().unwrap();
        send_all(&a, b"{\"first\":1}\n").unwrap();
        assert_eq!(read_line(&b, 100).unwrap(), b"{\"first\":1}");
        // The same socket carries the next one (a supervisor that runs another task).
        send_all(&a, b"{\"second\":2}\n").unwrap();
        assert_eq!(read_line(&b, 100).unwrap(), b"{\"second\":2}");
        drop(a);
        assert!(read_line(&b, 100).unwrap().is_empty(), "EOF: no spec");
    }

    #[test]
    fn a_line_read_leaves_the_next_one_on_the_channel() {
        // The spec and the go line sent at once: each read takes one line, and what
        // follows stays for the next reader (here, a process that shares the socket).
        let (a, b) = socketpair().unwrap();
        send_all(&a, b"{\"spec\":1}\n{\"go\":2}\nkeep\n").unwrap();
        assert_eq!(read_line(&b, 100).unwrap(), b"{\"spec\":1}");
        let b2 = b.try_clone().unwrap();
        assert_eq!(read_line(&b2, 100).unwrap(), b"{\"go\":2}");
        assert_eq!(read_line(&b, 100).unwrap(), b"keep");
    }

    #[test]
    fn spec_read_until_shutdown_and_no_sigpipe() {
        let (a, b) = socketpair().unwrap();
        send_all(&a, b"spec").unwrap();
        shutdown_write(&a);
        assert_eq!(read_line(&b, 100).unwrap(), b"spec");
        drop(b);
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
    fn large_spec_read_whole_and_limit_enforced() {
        // No newline inside, as in compact JSON; one at the end, and the writer stays.
        let data: Vec<u8> = (0..300_000u32).map(|i| b' ' + (i % 94) as u8).collect();
        for (limit, whole) in [(1 << 20, true), (100_000, false)] {
            let (a, b) = socketpair().unwrap();
            let mut sent = data.clone();
            sent.push(b'\n');
            let t = std::thread::spawn(move || {
                let _ = send_all(&a, &sent);
                a
            });
            let got = read_line(&b, limit);
            drop(b);
            t.join().unwrap();
            match got {
                Ok(v) => assert!(whole && v == data, "{} bytes", v.len()),
                Err(e) => assert!(!whole && e.to_string().contains("too large"), "{e}"),
            }
        }
    }
}
