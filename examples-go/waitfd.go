package execdriver

/*
#include <fcntl.h>
#include <poll.h>

static int ed_readable(int fd) { struct pollfd p = {fd, POLLIN, 0}; return poll(&p, 1, 0) > 0; }
static int ed_dup(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 0); }
*/
import "C"

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// The wait fds a Driver holds: the read end of a pipe (non-blocking) that Start asked
// for, readable exactly when the task's exit is known. Each Wait polls a duplicate of
// its own, so that its read deadline (how a cancelled context wakes it) touches no
// other waiter, and so that Destroy may close the Driver's fd while Waits still run.

// adoptWaitFD makes fd the Driver's wait fd of task id, closing any earlier one (a task
// destroyed through Call and its id started again).
func (d *Driver) adoptWaitFD(id string, fd int) {
	d.mu.Lock()
	old, had := d.fds[id]
	d.fds[id] = fd
	d.mu.Unlock()
	if had {
		syscall.Close(old)
	}
}

// dropWaitFD closes the wait fd of task id, if the Driver holds one.
func (d *Driver) dropWaitFD(id string) {
	d.mu.Lock()
	fd, had := d.fds[id]
	delete(d.fds, id)
	d.mu.Unlock()
	if had {
		syscall.Close(fd)
	}
}

// dupWaitFD returns a duplicate of the wait fd of task id, as an *os.File in the
// runtime poller, or nil when the Driver holds none (or the duplicate fails: the
// caller then waits without it).
func (d *Driver) dupWaitFD(id string) *os.File {
	d.mu.Lock()
	fd, had := d.fds[id]
	dup := -1
	if had {
		dup = int(C.ed_dup(C.int(fd)))
	}
	d.mu.Unlock()
	if dup < 0 {
		return nil
	}
	// The pipe is already non-blocking (a shared file status flag), so os.NewFile puts
	// it in the poller; setting it again costs nothing and makes sure of it.
	syscall.SetNonblock(dup, true)
	return os.NewFile(uintptr(dup), "execdriver-wait-fd")
}

// errNoPoller: the fd cannot be waited on in the runtime poller; the caller falls back
// to driver_wait in slices.
var errNoPoller = errors.New("execdriver: wait fd not pollable")

// awaitReadable blocks until f is readable (then nil), ctx is done (ctx.Err()) or
// deadline passes (os.ErrDeadlineExceeded); a zero deadline is none. It closes f. The
// goroutine that turns ctx's cancellation into a read deadline has ended when it
// returns.
func awaitReadable(ctx context.Context, f *os.File, deadline time.Time) error {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return errNoPoller
	}
	if !deadline.IsZero() {
		if err := f.SetReadDeadline(deadline); err != nil {
			return errNoPoller // not in the poller (os.ErrNoDeadline)
		}
	}
	if done := ctx.Done(); done != nil {
		stop, exited := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(exited)
			select {
			case <-done:
				f.SetReadDeadline(time.Unix(1, 0)) // in the past: wakes the Read now
			case <-stop:
			}
		}()
		defer func() { close(stop); <-exited }()
	}
	// Poll, do not read: the readiness check works for a pipe (EOF) and a pidfd alike.
	// Read calls the function again each time the poller reports the fd readable.
	err = rc.Read(func(fd uintptr) bool { return C.ed_readable(C.int(fd)) != 0 })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return err
	default:
		return errNoPoller
	}
}
