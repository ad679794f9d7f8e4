package execdriver_test

// ExecSession: the interactive form of driver_exec (pipes, a terminal), Wait, Resize,
// Close; each in an exec task (when the host can run one) and a raw_exec task.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"execdriver"
)

// forDrivers runs f as a subtest per driver: raw_exec always, exec unless the host
// cannot run exec tasks (not root, no cgroups: the fingerprint says why), which skips;
// under CI (which runs as root) that fails instead.
func forDrivers(t *testing.T, f func(t *testing.T, driver string)) {
	for _, driver := range []string{"exec", "raw_exec"} {
		driver := driver
		t.Run(driver, func(t *testing.T) {
			if driver == "exec" {
				fp, err := drv.Fingerprint(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if fp.Attributes["driver.exec"] != "1" {
					unavailable(t, "exec tasks are unavailable here: "+fp.HealthDescription)
				}
			}
			f(t, driver)
		})
	}
}

// startIdle starts a task of driver that runs until destroyed (the test's cleanup
// does).
func startIdle(t *testing.T, driver string) string {
	t.Helper()
	s, err := drv.Start(context.Background(), execdriver.TaskConfig{
		Name: "session", Driver: driver, AllocDir: t.TempDir(), KillSignal: "SIGKILL",
		Config: execdriver.CommandConfig{Command: "/bin/sleep", Args: []string{"600"}},
	})
	if err != nil {
		t.Fatalf("start a %s task: %v", driver, err)
	}
	destroyAtCleanup(t, s.TaskID)
	return s.TaskID
}

// session starts req in the task; the test's cleanup closes it.
func session(t *testing.T, taskID string, req execdriver.ExecSessionRequest) *execdriver.ExecSession {
	t.Helper()
	s, err := drv.ExecSession(context.Background(), taskID, req)
	if err != nil {
		t.Fatalf("ExecSession %+v: %v", req, err)
	}
	t.Cleanup(func() { s.Close() })
	if s.ID == "" || s.Pid <= 0 {
		t.Fatalf("session without an id or pid: %+v", s)
	}
	return s
}

// wait is s.Wait with a 20 s limit.
func wait(t *testing.T, s *execdriver.ExecSession) *execdriver.ExecExit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	x, err := s.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait for %s: %v", s.ID, err)
	}
	if x.ExecID != s.ID {
		t.Errorf("Wait for %s says exec_id %q", s.ID, x.ExecID)
	}
	return x
}

// stillRunning checks that Wait, given 50 ms, finds the command running: it returns
// context.DeadlineExceeded.
func stillRunning(t *testing.T, s *execdriver.ExecSession, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if x, err := s.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait while %s: want context.DeadlineExceeded, got %+v, %v", why, x, err)
	}
}

// readBoth reads a session's stdout and stderr to their ends at once (either may fill
// its pipe while the other is read).
func readBoth(t *testing.T, s *execdriver.ExecSession) (stdout, stderr string) {
	t.Helper()
	errc := make(chan error, 1)
	var eb []byte
	go func() {
		var err error
		eb, err = io.ReadAll(s.Stderr)
		errc <- err
	}()
	ob, err := io.ReadAll(s.Stdout)
	if err != nil {
		t.Errorf("reading stdout: %v", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("reading stderr: %v", err)
	}
	return string(ob), string(eb)
}

// readUntil reads the terminal until what it has read contains want (20 s at most:
// a read deadline, which only a file in the runtime poller takes) and returns it all.
func readUntil(t *testing.T, tty *os.File, want string) string {
	t.Helper()
	if err := tty.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatalf("the terminal is not in the runtime poller: %v", err)
	}
	defer tty.SetReadDeadline(time.Time{})
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := tty.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading the terminal for %q: %v; read %q", want, err, got)
		}
	}
	return string(got)
}

// readToEnd reads the terminal until the command is gone: EIO, the end of a terminal.
func readToEnd(t *testing.T, tty *os.File) string {
	t.Helper()
	tty.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := tty.Read(buf)
		got = append(got, buf[:n]...)
		switch {
		case errors.Is(err, syscall.EIO) || err == io.EOF:
			return string(got)
		case err != nil:
			t.Fatalf("reading the terminal to its end: %v; read %q", err, got)
		}
	}
}

// fileID is an open fd and what it is open on.
type fileID struct {
	fd       int
	dev, ino uint64
}

// idOf says which fd f is and what it is open on.
func idOf(t *testing.T, f *os.File) fileID {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var id fileID
	var st syscall.Stat_t
	if err := rc.Control(func(fd uintptr) {
		id.fd = int(fd)
		err = syscall.Fstat(int(fd), &st)
	}); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	id.dev, id.ino = uint64(st.Dev), st.Ino
	return id
}

// owned checks that f, a file of a session, is close-on-exec and in the runtime poller
// (it takes deadlines), and says which it is.
func owned(t *testing.T, name string, f *os.File) fileID {
	t.Helper()
	id := idOf(t, f)
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(id.fd), syscall.F_GETFD, 0)
	if errno != 0 || flags&syscall.FD_CLOEXEC == 0 {
		t.Errorf("%s (fd %d) is not close-on-exec: flags %#x, %v", name, id.fd, flags, errno)
	}
	if err := f.SetDeadline(time.Time{}); err != nil {
		t.Errorf("%s is not in the runtime poller: %v", name, err)
	}
	return id
}

// isClosed says whether the fd of id is closed: not open, or open on another file (its
// number taken again).
func (id fileID) isClosed() bool {
	var st syscall.Stat_t
	err := syscall.Fstat(id.fd, &st)
	return err == syscall.EBADF || err == nil && (uint64(st.Dev) != id.dev || st.Ino != id.ino)
}

// Stdin as a pipe: what is written reaches the command, closing it is its end of
// file, stdout and stderr come apart, Wait says the exit code; the session's fds are
// the caller's, close-on-exec, and none is left open after Close.
func TestExecSessionStdin(t *testing.T) {
	forDrivers(t, func(t *testing.T, driver string) {
		id := startIdle(t, driver)
		s := session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", Stdin: true,
			Args: []string{"-c", "read l; echo out:$l; n=0; while read m; do n=$((n+1)); done; echo lines:$n; echo err:$l >&2; exit 7"}})
		if s.TTY != nil || s.Stdin == nil || s.Stdout == nil || s.Stderr == nil {
			t.Fatalf("a stdin session has TTY %v, Stdin %v, Stdout %v, Stderr %v", s.TTY, s.Stdin, s.Stdout, s.Stderr)
		}
		var ids []fileID
		for name, f := range map[string]interface{}{"stdin": s.Stdin, "stdout": s.Stdout, "stderr": s.Stderr} {
			file, ok := f.(*os.File)
			if !ok {
				t.Fatalf("%s is a %T, not an *os.File", name, f)
			}
			ids = append(ids, owned(t, name, file))
		}
		stillRunning(t, s, "the command reads its stdin")

		// More than a pipe holds (64 KiB): the write blocks until the command reads.
		in := "hi\n" + strings.Repeat("a line of input\n", 10000)
		if _, err := io.WriteString(s.Stdin, in); err != nil {
			t.Fatalf("writing stdin: %v", err)
		}
		stillRunning(t, s, "stdin is open")
		if err := s.Stdin.Close(); err != nil {
			t.Fatal(err)
		}
		out, errOut := readBoth(t, s)
		if out != "out:hi\nlines:10000\n" || errOut != "err:hi\n" {
			t.Errorf("stdout %q, stderr %q", out, errOut)
		}
		if x := wait(t, s); x.ExitCode != 7 || x.Signal != 0 {
			t.Errorf("exit %+v, want code 7", x)
		}
		// The session keeps its exit; the library has forgotten it.
		if x := wait(t, s); x.ExitCode != 7 {
			t.Errorf("a second Wait: %+v", x)
		}
		if _, err := drv.ExecWait(context.Background(), s.ID); !errors.Is(err, execdriver.ErrNotFound) {
			t.Errorf("ExecWait after the exit was taken: want ErrNotFound, got %v", err)
		}
		// Close skips Stdin, closed already.
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, id := range ids {
			if !id.isClosed() {
				t.Errorf("fd %d is still open after Close", id.fd)
			}
		}
	})
}

// Without stdin (it is /dev/null) stdout and stderr come apart, uncapped; a death by
// signal and the timeout show in the exit.
func TestExecSessionStream(t *testing.T) {
	forDrivers(t, func(t *testing.T, driver string) {
		id := startIdle(t, driver)
		s := session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh",
			Args: []string{"-c", "cat; echo to-out; echo to-err >&2; head -c 2000000 /dev/zero; cat /proc/self/cgroup >&2; exit 5"}})
		if s.Stdin != nil || s.TTY != nil {
			t.Fatalf("a session without stdin has Stdin %v, TTY %v", s.Stdin, s.TTY)
		}
		out, errOut := readBoth(t, s)
		if want := "to-out\n" + strings.Repeat("\x00", 2000000); out != want {
			t.Errorf("stdout: %d bytes, want %d (to-out and 2000000 NULs)", len(out), len(want))
		}
		if !strings.HasPrefix(errOut, "to-err\n") {
			t.Errorf("stderr %q", errOut)
		}
		if driver == "exec" && !strings.Contains(errOut, id) {
			t.Errorf("the command is not in the task's cgroup: %q", errOut)
		}
		if x := wait(t, s); x.ExitCode != 5 || x.Signal != 0 {
			t.Errorf("exit %+v, want code 5", x)
		}

		s = session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", Args: []string{"-c", "kill -TERM $$"}})
		readBoth(t, s)
		if x := wait(t, s); x.ExitCode != 128+15 || x.Signal != 15 {
			t.Errorf("exit %+v, want SIGTERM (143, 15)", x)
		}

		s = session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sleep", Args: []string{"600"}, Timeout: 200 * time.Millisecond})
		if x := wait(t, s); x.ExitCode != 137 || x.Signal != 9 {
			t.Errorf("exit after the timeout %+v, want SIGKILL (137, 9)", x)
		}
	})
}

// A terminal: a shell reads what is written to it and writes to it, exits with the
// code it is told; the initial size and Resize reach `stty size`.
func TestExecSessionTTY(t *testing.T) {
	forDrivers(t, func(t *testing.T, driver string) {
		bg := context.Background()
		id := startIdle(t, driver)
		s := session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", TTY: true, Term: "vt100"})
		if s.TTY == nil || s.Stdin != nil || s.Stdout != nil || s.Stderr != nil {
			t.Fatalf("a tty session has TTY %v, Stdin %v, Stdout %v, Stderr %v", s.TTY, s.Stdin, s.Stdout, s.Stderr)
		}
		tty := owned(t, "the terminal", s.TTY)
		if _, err := s.TTY.WriteString("echo $((6*7)) $TERM\nexit 3\n"); err != nil {
			t.Fatal(err)
		}
		readUntil(t, s.TTY, "42 vt100") // the terminal echoes the input, which says 6*7
		readToEnd(t, s.TTY)
		if x := wait(t, s); x.ExitCode != 3 || x.Signal != 0 {
			t.Errorf("exit %+v, want code 3", x)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if !tty.isClosed() {
			t.Errorf("the terminal (fd %d) is still open after Close", tty.fd)
		}
		if _, err := s.TTY.WriteString("echo\n"); !errors.Is(err, os.ErrClosed) {
			t.Errorf("a write to the terminal after Close: want os.ErrClosed, got %v", err)
		}

		s = session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", TTY: true, Rows: 24, Cols: 80})
		// `m""k1` is typed (and echoed), `mk1` printed after the size.
		s.TTY.WriteString("tty; stty size; echo m\"\"k1\n")
		got := readUntil(t, s.TTY, "mk1")
		if !strings.Contains(got, "/dev/pts/") || !strings.Contains(got, "24 80") {
			t.Errorf("the terminal and its initial size: %q", got)
		}
		if err := s.Resize(bg, 33, 77); err != nil {
			t.Fatalf("Resize: %v", err)
		}
		s.TTY.WriteString("stty size; echo m\"\"k2\n")
		got = readUntil(t, s.TTY, "mk2")
		if !strings.Contains(got, "33 77") {
			t.Errorf("stty size after Resize(33, 77): %q", got)
		}
		s.TTY.WriteString("exit 4\n")
		readToEnd(t, s.TTY)
		if x := wait(t, s); x.ExitCode != 4 {
			t.Errorf("exit %+v, want code 4", x)
		}
		if err := s.Resize(bg, 10, 10); !errors.Is(err, execdriver.ErrNotFound) {
			t.Errorf("Resize after the exit: want ErrNotFound, got %v", err)
		}

		// Close hangs the terminal up: the shell gets SIGHUP.
		s = session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", TTY: true})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if x := wait(t, s); x.Signal != int(syscall.SIGHUP) {
			t.Errorf("exit after Close %+v, want SIGHUP", x)
		}
	})
}

// Failures are *execdriver.Error values matching the sentinels.
func TestExecSessionErrors(t *testing.T) {
	bg := context.Background()
	_, err := drv.ExecWait(bg, "exec-no-such-session")
	var e *execdriver.Error
	if !errors.Is(err, execdriver.ErrNotFound) || !errors.As(err, &e) || e.Op != "exec_wait" || e.Code != "task_not_found" {
		t.Errorf("ExecWait on an unknown id: want ErrNotFound from exec_wait, got %v", err)
	}
	if err := drv.ExecResize(bg, "exec-no-such-session", 10, 10); !errors.Is(err, execdriver.ErrNotFound) {
		t.Errorf("ExecResize on an unknown id: want ErrNotFound, got %v", err)
	}
	if _, err := drv.ExecSession(bg, "no-such-task", execdriver.ExecSessionRequest{Command: "true", TTY: true}); !errors.Is(err, execdriver.ErrNotFound) {
		t.Errorf("ExecSession in an unknown task: want ErrNotFound, got %v", err)
	}

	id := startIdle(t, "raw_exec")
	_, err = drv.ExecSession(bg, id, execdriver.ExecSessionRequest{Command: "/no/such/command", TTY: true})
	if !errors.Is(err, execdriver.ErrCommandNotFound) || !errors.Is(err, execdriver.ErrStart) {
		t.Errorf("ExecSession of a missing command: want ErrCommandNotFound, got %v", err)
	}
	_, err = drv.ExecSession(bg, id, execdriver.ExecSessionRequest{Command: "true", Rows: 10, Cols: 10})
	if !errors.Is(err, execdriver.ErrInvalidRequest) || !errors.As(err, &e) || e.Field != "rows" {
		t.Errorf("ExecSession with a size but no TTY: want ErrInvalidRequest on rows, got %v", err)
	}
	s := session(t, id, execdriver.ExecSessionRequest{Command: "true"})
	if err := s.Resize(bg, 10, 10); !errors.Is(err, execdriver.ErrInvalidRequest) {
		t.Errorf("Resize of a session without a terminal: want ErrInvalidRequest, got %v", err)
	}
	readBoth(t, s)
	if x := wait(t, s); x.ExitCode != 0 {
		t.Errorf("true: %+v", x)
	}
}

// watchedCtx is a context that reports on saw each time its Err is called: Wait looks
// at it before each driver_exec_wait slice.
type watchedCtx struct {
	context.Context
	calls atomic.Int32
	saw   chan int32
}

func (c *watchedCtx) Err() error {
	n := c.calls.Add(1)
	select {
	case c.saw <- n:
	default:
	}
	return c.Context.Err()
}

// Cancelling a Wait returns context.Canceled promptly, leaves no goroutine behind, and
// leaves the command running: a later Wait gets its exit.
func TestExecSessionWaitCancelled(t *testing.T) {
	forDrivers(t, func(t *testing.T, driver string) {
		id := startIdle(t, driver)
		s := session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", TTY: true})
		base := runtime.NumGoroutine()
		inner, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctx := &watchedCtx{Context: inner, saw: make(chan int32, 1)}
		done := make(chan error, 1)
		go func() {
			_, err := s.Wait(ctx)
			done <- err
		}()
		// Its third look at ctx (one per slice, one per library call): Wait has been
		// through one driver_exec_wait slice and is about to enter the next.
		limit := time.After(20 * time.Second)
		for n := int32(0); n < 3; {
			select {
			case n = <-ctx.saw:
			case <-limit:
				t.Fatal("Wait has not looked at its context again in 20 s")
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Wait returned while the shell runs: %v", err)
		default:
		}
		t0 := time.Now()
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("Wait has not returned 20 s after its context was cancelled")
		}
		// One slice is 100 ms; the margin is for a loaded CI machine.
		if took := time.Since(t0); took > 2*time.Second {
			t.Errorf("Wait returned %v after the cancel", took)
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Wait: want context.Canceled, got %v", err)
		}
		goroutinesBackTo(t, base)

		stillRunning(t, s, "the shell waits for input")
		s.TTY.WriteString("exit 9\n")
		if x := wait(t, s); x.ExitCode != 9 {
			t.Errorf("exit after the cancelled Wait %+v, want code 9", x)
		}
	})
}

// Waits at once on one session all get its exit: the library hands it out once.
func TestExecSessionConcurrentWaits(t *testing.T) {
	id := startIdle(t, "raw_exec")
	for i := 0; i < 20; i++ {
		s := session(t, id, execdriver.ExecSessionRequest{Command: "/bin/sh", Args: []string{"-c", "exit 6"}})
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for j := 0; j < 8; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				x, err := s.Wait(ctx)
				if err == nil && x.ExitCode != 6 {
					err = fmt.Errorf("exit %+v, want 6", x)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("session %d: a concurrent Wait: %v", i, err)
			}
		}
	}
}
