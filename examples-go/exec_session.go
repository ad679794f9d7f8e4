package execdriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// ExecSessionRequest is a command for ExecSession to start inside a task: the
// interactive form of driver_exec (docs/api.md, "Interactive form").
type ExecSessionRequest struct {
	// Command is the command to run: used as given when it contains a slash, else
	// looked up as Exec looks it up.
	Command string
	// Args are the command's arguments.
	Args []string
	// TTY gives the command a new pseudo-terminal as its stdin, stdout, stderr and
	// controlling terminal; the session's TTY is its master side. Without TTY the
	// command's stdout and stderr are pipes (the session's Stdout and Stderr).
	TTY bool
	// Stdin, without TTY, gives the command a pipe as its stdin (the session's
	// Stdin); otherwise its stdin is /dev/null. Ignored with TTY (the terminal is the
	// command's stdin).
	Stdin bool
	// Rows and Cols are the terminal's initial size, with TTY only: both or neither (0
	// and 0: the library's 0×0, until Resize).
	Rows, Cols uint16
	// Term is the command's TERM, with TTY only (e.g. os.Getenv("TERM")); "": the
	// task's own TERM, else "xterm".
	Term string
	// Timeout after which the command's process group is SIGKILLed (Wait then says
	// exit 137, signal 9); 0: none, the command runs until it exits.
	Timeout time.Duration
}

// ExecExit is how the command of an exec session ended: driver_exec_wait's response.
type ExecExit struct {
	ExecID   string `json:"exec_id"`
	ExitCode int    `json:"exit_code"` // 128+N after signal N; -1 when unknown
	Signal   int    `json:"signal"`    // the signal that killed the command, else 0
}

// ExecSession is a command started by ExecSession inside a running task, with its
// input and output as files of this process. The session owns those files: read the
// output (Stdout and Stderr, or TTY) as the command writes it, since a full pipe or
// terminal stalls the command; Wait for its exit; Close the files once done with them.
//
// Each file is an *os.File in Go's runtime poller, so reads and writes block only the
// calling goroutine and honour SetReadDeadline and SetWriteDeadline (Stdin, Stdout and
// Stderr may be type-asserted to *os.File for that). Calling Fd on one puts it in
// blocking mode.
//
// The methods are safe for concurrent use; each file, as any *os.File, may be read
// from one goroutine while another writes to it or closes it.
type ExecSession struct {
	// ID is the session's exec_id, for ExecWait and ExecResize.
	ID string
	// Pid is the command's process id in the host's pid namespace; for information
	// only (signal the command through its terminal or by closing its input).
	Pid int
	// TTY is the terminal's master side, with ExecSessionRequest.TTY (else nil): read
	// it for the command's output, write it for its input. Once the command and
	// whatever it left holding the terminal are gone, a read returns an error that
	// matches syscall.EIO: a terminal's end of output. Closing it hangs the terminal
	// up (the command gets SIGHUP).
	TTY *os.File
	// Stdin is the command's stdin, with ExecSessionRequest.Stdin and without TTY
	// (else nil); close it to send end-of-file.
	Stdin io.WriteCloser
	// Stdout is the command's stdout, without TTY (else nil); io.EOF once the command
	// and any process it left holding the pipe are gone.
	Stdout io.ReadCloser
	// Stderr is the command's stderr, without TTY (else nil), as Stdout is.
	Stderr io.ReadCloser

	d     *Driver
	files []*os.File // every file above, for Close
	mu    sync.Mutex
	exit  *ExecExit // what a Wait got: the library forgets the session once it said it
	// One Wait at a time asks the library (the exit is handed out once): held while
	// one does, taken with ctx.
	waiting chan struct{}
}

// execReq is driver_exec's request in its interactive form.
type execReq struct {
	TaskID    string   `json:"task_id"`
	Command   string   `json:"command"`
	Args      []string `json:"args,omitempty"`
	TimeoutMS *int64   `json:"timeout_ms,omitempty"`
	TTY       bool     `json:"tty,omitempty"`
	Stdin     bool     `json:"stdin,omitempty"`
	Stream    bool     `json:"stream,omitempty"`
	Rows      *uint16  `json:"rows,omitempty"`
	Cols      *uint16  `json:"cols,omitempty"`
	Term      string   `json:"term,omitempty"`
}

// execStarted is driver_exec's response in its interactive form.
type execStarted struct {
	ExecID   string `json:"exec_id"`
	Pid      int    `json:"pid"`
	TTYFD    *int   `json:"tty_fd"`
	StdinFD  *int   `json:"stdin_fd"`
	StdoutFD *int   `json:"stdout_fd"`
	StderrFD *int   `json:"stderr_fd"`
}

// execSessionReq names a session, with what driver_exec_wait and driver_exec_resize add.
type execSessionReq struct {
	ExecID    string `json:"exec_id"`
	TimeoutMS *int64 `json:"timeout_ms,omitempty"`
	Rows      uint16 `json:"rows,omitempty"`
	Cols      uint16 `json:"cols,omitempty"`
}

// ExecSession starts a command inside the running task's isolation, as Exec runs one,
// and returns at once with the command's terminal (req.TTY) or pipes, which the
// returned session owns. ctx is checked before the call; the command's life is not tied
// to ctx (see ExecSessionRequest.Timeout). Failures are those of Exec: ErrNotFound (no
// such task, or not running), ErrCommandNotFound, ErrSpawn, ErrIsolation,
// ErrInvalidRequest (e.g. Rows and Cols without TTY).
func (d *Driver) ExecSession(ctx context.Context, taskID string, req ExecSessionRequest) (*ExecSession, error) {
	r := execReq{TaskID: taskID, Command: req.Command, Args: req.Args, TTY: req.TTY, Term: req.Term}
	if req.Rows != 0 || req.Cols != 0 {
		// Sent as they are, so that the library says what is wrong with them.
		r.Rows, r.Cols = &req.Rows, &req.Cols
	}
	if !req.TTY {
		// Stream: stdout and stderr as pipes, not captured; and so the interactive
		// form even without stdin.
		r.Stdin, r.Stream = req.Stdin, true
	}
	if req.Timeout > 0 {
		r.TimeoutMS = ms(req.Timeout)
	}
	var st execStarted
	raw, err := d.call(ctx, "exec", r, &st)
	if err != nil {
		if raw != nil {
			// The call succeeded but its response is unreadable: whatever fds it
			// names are ours, and of no use.
			closeFDs(st.TTYFD, st.StdinFD, st.StdoutFD, st.StderrFD)
		}
		return nil, err
	}
	s := &ExecSession{ID: st.ExecID, Pid: st.Pid, d: d, waiting: make(chan struct{}, 1)}
	missing := func(what string) error {
		closeFDs(st.TTYFD, st.StdinFD, st.StdoutFD, st.StderrFD)
		return fmt.Errorf("execdriver: driver_exec: no %s in the response %s", what, raw)
	}
	switch {
	case st.ExecID == "":
		return nil, missing("exec_id")
	case req.TTY && st.TTYFD == nil:
		return nil, missing("tty_fd")
	case !req.TTY && (st.StdoutFD == nil || st.StderrFD == nil):
		return nil, missing("stdout_fd or stderr_fd")
	case !req.TTY && req.Stdin && st.StdinFD == nil:
		return nil, missing("stdin_fd")
	}
	if st.TTYFD != nil {
		s.TTY = s.adopt(*st.TTYFD, "execdriver-exec-tty")
	}
	if st.StdinFD != nil {
		s.Stdin = s.adopt(*st.StdinFD, "execdriver-exec-stdin")
	}
	if st.StdoutFD != nil {
		s.Stdout = s.adopt(*st.StdoutFD, "execdriver-exec-stdout")
	}
	if st.StderrFD != nil {
		s.Stderr = s.adopt(*st.StderrFD, "execdriver-exec-stderr")
	}
	return s, nil
}

// adopt makes fd, which the library handed over, a file of the session, in the runtime
// poller: os.NewFile puts an fd there only when it is already non-blocking.
func (s *ExecSession) adopt(fd int, name string) *os.File {
	syscall.SetNonblock(fd, true) // a failure leaves a blocking file, still usable
	f := os.NewFile(uintptr(fd), name)
	s.files = append(s.files, f)
	return f
}

func closeFDs(fds ...*int) {
	for _, fd := range fds {
		if fd != nil {
			syscall.Close(*fd)
		}
	}
}

// ExecWait waits for the command of the exec session execID to exit and returns how it
// ended. Once it has returned the exit, the library forgets the session: a later
// ExecWait (or ExecResize) fails with ErrNotFound, as it does for an unknown id. When
// ctx is done first it returns ctx.Err() within about 100 ms (it calls
// driver_exec_wait in slices of at most that), leaving the command running. A command
// whose exec-shim was killed from outside fails with ErrSpawn.
//
// Prefer ExecSession.Wait, which keeps the exit for every later call.
func (d *Driver) ExecWait(ctx context.Context, execID string) (*ExecExit, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dl, _ := ctx.Deadline()
		slice, last := nextSlice(dl)
		var x ExecExit
		_, err := d.call(ctx, "exec_wait", execSessionReq{ExecID: execID, TimeoutMS: ms(slice)}, &x)
		switch {
		case err == nil:
			return &x, nil
		case !errors.Is(err, ErrTimeout):
			return nil, err
		case last:
			// ctx's deadline has passed (the slice was rounded up to it); its timer is
			// about to close Done.
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
}

// ExecResize sets the window size of the terminal of the exec session execID (one
// started with TTY); the command's foreground process group gets SIGWINCH. It returns
// once the command would read the new size (the library bounds that to about 5 s); ctx
// is checked before. Errors: ErrNotFound (no such session, or its command has ended),
// ErrInvalidRequest (a session without a terminal, or a zero size).
func (d *Driver) ExecResize(ctx context.Context, execID string, rows, cols uint16) error {
	_, err := d.call(ctx, "exec_resize", execSessionReq{ExecID: execID, Rows: rows, Cols: cols}, nil)
	return err
}

// Wait waits for the session's command to exit and returns how it ended; every Wait,
// before or after, concurrent or not, gets the same exit. When ctx is done first it
// returns ctx.Err() within about 100 ms and leaves the command running: Wait may be
// called again. Wait does not close the session's files, and does not read them: a
// command whose output nobody reads may never exit.
func (s *ExecSession) Wait(ctx context.Context) (*ExecExit, error) {
	if x := s.exited(); x != nil {
		return x, nil
	}
	select {
	case s.waiting <- struct{}{}:
		defer func() { <-s.waiting }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The Wait before this one may have got it.
	if x := s.exited(); x != nil {
		return x, nil
	}
	x, err := s.d.ExecWait(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exit = x
	return x, nil
}

func (s *ExecSession) exited() *ExecExit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// Resize sets the window size of the session's terminal (a session started with TTY):
// see Driver.ExecResize.
func (s *ExecSession) Resize(ctx context.Context, rows, cols uint16) error {
	return s.d.ExecResize(ctx, s.ID, rows, cols)
}

// Close closes every file of the session that is still open (those the caller closed
// already are skipped) and returns the first error. Closing the terminal hangs it up:
// a command still running gets SIGHUP; closed pipes give it end-of-file on its stdin and
// SIGPIPE (EPIPE) when it writes. Close does not end the session in the library: a
// Wait, before or after Close, does (or Destroy of the task, which kills the command).
func (s *ExecSession) Close() error {
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) && first == nil {
			first = err
		}
	}
	return first
}
