//! Unix sockets: pairs, whole sends without SIGPIPE, receives into a buffer's unused
//! room, fds passed with a message.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
pub fn shutdown_write(fd: &OwnedFd) {
    // SAFETY: shutdown on a socket we own.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}

/// One `recv`; `None` when non-blocking and nothing is there (or interrupted).
#[cfg(test)]
pub fn recv(fd: &OwnedFd, buf: &mut [u8], nonblocking: bool) -> io::Result<Option<usize>> {
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

/// One `recvmsg` appended to `buf` (at most `max` bytes, into its unused capacity, never
/// zeroed: only the pages the bytes land in are touched), and the fds that came with
/// them (`SCM_RIGHTS`, close-on-exec) pushed onto `fds`; `None` when non-blocking and
/// nothing is there (or interrupted).
pub fn recv_append(
    fd: &OwnedFd,
    buf: &mut Vec<u8>,
    max: usize,
    nonblocking: bool,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<usize>> {
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let room = buf.spare_capacity_mut();
    let take = room.len().min(max);
    let mut iov = libc::iovec {
        iov_base: room.as_mut_ptr().cast(),
        iov_len: take,
    };
    // Room for a few fds: one message carries at most one.
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(4 * std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = [0u64; 8];
    debug_assert!(space <= std::mem::size_of_val(&cbuf));
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: recvmsg(2) into `room` (writable, at least `take` bytes, ours) and `cbuf`.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the kernel filled msg_control; the macros walk it within msg_controllen,
    // and an SCM_RIGHTS payload holds ints that are new fds of ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // SAFETY: the kernel initialized the n bytes after the current length.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(Some(n as usize))
}

/// Sends `data` with one fd attached (`SCM_RIGHTS`), as one message.
pub fn send_with_fd(sock: &OwnedFd, data: &[u8], fd: &OwnedFd) -> io::Result<()> {
    send_with_fds(sock, data, &[fd.as_fd()])
}

/// The most fds one message carries here (a pty or three pipes, an ack socket).
pub const MAX_FDS: usize = 4;

/// Sends `data` with `fds` attached (`SCM_RIGHTS`, at most [`MAX_FDS`]), as one message.
pub fn send_with_fds(sock: &OwnedFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many fds for one message"));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at a buffer of msg_controllen bytes, room for one
        // header carrying fds.len() ints.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), fd.as_raw_fd());
            }
        }
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
    let (n, fds) = recv_with_fds(sock, buf, false)?.unwrap_or((0, Vec::new()));
    Ok((n, fds.into_iter().next()))
}

/// Receives one message into `buf` and the fds attached to it (at most [`MAX_FDS`], made
/// close-on-exec), in the order sent. `Ok(Some((0, [])))` at EOF; `Ok(None)` when
/// `nonblocking` and no message is there.
pub fn recv_with_fds(
    sock: &OwnedFd,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let payload = (MAX_FDS * std::mem::size_of::<libc::c_int>()) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: a valid msghdr over our buffers.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if nonblocking => return Ok(None),
                _ => return Err(e),
            }
        }
        let mut fds = Vec::new();
        // SAFETY: the kernel filled msg_control; the macros walk it within
        // msg_controllen, and an SCM_RIGHTS payload holds ints that are new fds of ours.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    for i in 0..len / std::mem::size_of::<libc::c_int>() {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("control data truncated"));
        }
        return Ok(Some((n as usize, fds)));
    }
}
