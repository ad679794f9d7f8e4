package execdriver_test

// Logs as an io.Reader, Wait on the wait fd, events and stats fields.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"execdriver"
)

// printer prints 300 numbered lines (about 3 KB) on stdout and one line on stderr.
const printer = "i=1; while [ $i -le 300 ]; do echo line $i; i=$((i+1)); done; echo oops >&2"

func printed() string {
	var b strings.Builder
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

// startShell starts a raw_exec task running script; the test's cleanup destroys it.
func startShell(t *testing.T, name, script string, noWaitFD bool) (*execdriver.Started, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := drv.Start(context.Background(), execdriver.TaskConfig{
		Name: name, Driver: "raw_exec", AllocDir: dir, KillSignal: "SIGKILL", NoWaitFD: noWaitFD,
		Config: execdriver.CommandConfig{Command: "/bin/sh", Args: []string{"-c", script}},
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	destroyAtCleanup(t, s.TaskID)
	return s, dir
}

func readAll(t *testing.T, r io.ReadCloser) string {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading the logs: %v (after %q)", err, b)
	}
	return string(b)
}

func TestLogsReadTailAndStderr(t *testing.T) {
	bg := context.Background()
	s, _ := startShell(t, "logs", printer, false)
	if _, err := drv.WaitFor(bg, s.TaskID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	want := printed()
	if got := readAll(t, drv.Logs(bg, s.TaskID, execdriver.LogOptions{})); got != want {
		t.Errorf("stdout: %d bytes, want %d", len(got), len(want))
	}
	// In calls of 100 bytes: the same.
	if got := readAll(t, drv.Logs(bg, s.TaskID, execdriver.LogOptions{Limit: 100})); got != want {
		t.Errorf("stdout in 100-byte calls: %d bytes, want %d", len(got), len(want))
	}
	tail := readAll(t, drv.Logs(bg, s.TaskID, execdriver.LogOptions{Origin: "end", Offset: 20}))
	if tail != want[len(want)-20:] {
		t.Errorf("the last 20 bytes: %q", tail)
	}
	// Follow on an ended task: everything, then io.EOF.
	if got := readAll(t, drv.Logs(bg, s.TaskID, execdriver.LogOptions{Follow: true, Offset: 10})); got != want[10:] {
		t.Errorf("follow from 10: %d bytes, want %d", len(got), len(want)-10)
	}
	if got := readAll(t, drv.Logs(bg, s.TaskID, execdriver.LogOptions{Stream: "stderr"})); got != "oops\n" {
		t.Errorf("stderr: %q", got)
	}
	_, err := io.ReadAll(drv.Logs(bg, "no-such-task", execdriver.LogOptions{}))
	if !errors.Is(err, execdriver.ErrNotFound) {
		t.Errorf("logs of an unknown task: %v", err)
	}
}

// A following reader yields the output as it is written and ends at io.EOF once the
// task has ended.
func TestLogsFollowToEOF(t *testing.T) {
	bg := context.Background()
	t0 := time.Now()
	s, _ := startShell(t, "follow", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done; "+printer, false)
	r := drv.Logs(bg, s.TaskID, execdriver.LogOptions{Follow: true})
	defer r.Close()
	var got bytes.Buffer
	buf := make([]byte, 256)
	reads := 0
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if n > 0 {
			reads++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	want := "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n" + printed()
	if got.String() != want {
		t.Errorf("followed %d bytes, want %d: %q", got.Len(), len(want), got.String())
	}
	if reads < 5 {
		t.Errorf("%d reads: it did not read while the task wrote", reads)
	}
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("following took %v", took)
	}
	if _, err := r.Read(buf); err != io.EOF {
		t.Errorf("a read after io.EOF: %v", err)
	}
}

// Cancelling the context (or closing the reader) ends a following read of a task that
// writes nothing, promptly and without a goroutine left.
func TestLogsFollowCancelAndClose(t *testing.T) {
	s := startSleeper(t, "logscancel")
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	r := drv.Logs(ctx, s.TaskID, execdriver.LogOptions{Follow: true})
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	goroutineIn(t, "execdriver.(*logReader).fetch", "execdriver._Cfunc_ed_call") // following
	t0 := time.Now()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled follow: %v", err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("the read ended %v after the cancel", took)
	}
	goroutinesBackTo(t, base)

	r = drv.Logs(context.Background(), s.TaskID, execdriver.LogOptions{Follow: true})
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	goroutineIn(t, "execdriver.(*logReader).fetch", "execdriver._Cfunc_ed_call")
	r.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("closed follow: %v", err)
	}
}

// openPipes is the number of fds of this process per pipe ("pipe:[inode]").
func openPipes(t *testing.T) map[string]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "pipe:") {
			out[l]++
		}
	}
	return out
}

// newPipes are the pipes of now that were not open before.
func newPipes(before, now map[string]int) map[string]int {
	out := map[string]int{}
	for p, n := range now {
		if before[p] == 0 {
			out[p] = n
		}
	}
	return out
}

// Start gives the Driver the task's wait fd; Wait polls a duplicate of it (two fds on
// the pipe meanwhile), returns ctx.Err() at once on a cancel with no goroutine left, and
// the exit code once the task ends, after which the fd is closed.
func TestWaitOnTheWaitFD(t *testing.T) {
	bg := context.Background()
	before := openPipes(t)
	s, dir := startShell(t, "waitfd", "while [ ! -e $NOMAD_TASK_DIR/go ]; do sleep 0.01; done; exit 5", false)
	mine := newPipes(before, openPipes(t))
	if len(mine) != 1 {
		t.Fatalf("want the one wait fd after Start, got %v", mine)
	}
	var pipe string
	for p := range mine {
		pipe = p
	}
	base := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() {
		_, err := drv.Wait(ctx, s.TaskID)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for openPipes(t)[pipe] != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("Wait does not poll a duplicate of the wait fd: %v", openPipes(t))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait: %v", err)
	}
	if took := time.Since(t0); took > time.Second {
		t.Errorf("the cancelled Wait returned after %v", took)
	}
	goroutinesBackTo(t, base)
	if n := openPipes(t)[pipe]; n != 1 {
		t.Errorf("after the cancelled Wait: %d fds on the wait pipe, want 1", n)
	}

	// A deadline, as WaitFor's limit.
	if _, err := drv.WaitFor(bg, s.TaskID, 200*time.Millisecond); !errors.Is(err, execdriver.ErrTimeout) {
		t.Fatalf("WaitFor on a running task: %v", err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(filepath.Join(dir, "waitfd", "local", "go"), nil, 0o644)
	}()
	wctx, wcancel := context.WithTimeout(bg, 20*time.Second)
	defer wcancel()
	res, err := drv.Wait(wctx, s.TaskID)
	if err != nil || res.ExitCode != 5 || res.TaskID != s.TaskID {
		t.Fatalf("Wait: %+v, %v", res, err)
	}
	if n := openPipes(t)[pipe]; n != 0 {
		t.Errorf("the wait fd is still open after Wait returned the exit (%d)", n)
	}
	// Later waits have the same result without it.
	if again, err := drv.Wait(bg, s.TaskID); err != nil || again.ExitCode != 5 {
		t.Errorf("second Wait: %+v, %v", again, err)
	}
	goroutinesBackTo(t, base)
}

// Destroy closes the wait fd of a task no Wait ran on; NoWaitFD asks for none.
func TestDestroyClosesTheWaitFD(t *testing.T) {
	bg := context.Background()
	before := openPipes(t)
	s, _ := startShell(t, "waitfd-destroy", "exec sleep 600", false)
	if n := len(newPipes(before, openPipes(t))); n != 1 {
		t.Fatalf("%d new pipes after Start, want 1", n)
	}
	if err := drv.Destroy(bg, s.TaskID, execdriver.DestroyOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if left := newPipes(before, openPipes(t)); len(left) != 0 {
		t.Errorf("pipes left after Destroy: %v", left)
	}
	s, _ = startShell(t, "waitfd-none", "exit 3", true)
	if left := newPipes(before, openPipes(t)); len(left) != 0 {
		t.Errorf("NoWaitFD: pipes %v", left)
	}
	wctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	if res, err := drv.Wait(wctx, s.TaskID); err != nil || res.ExitCode != 3 {
		t.Errorf("Wait without a wait fd: %+v, %v", res, err)
	}
}

// Inspect's events after a Stop; Stats' measured lists and CPU rates.
func TestEventsAndStats(t *testing.T) {
	bg := context.Background()
	s, _ := startShell(t, "busy", "while :; do :; done", false)
	time.Sleep(300 * time.Millisecond)
	if _, err := drv.Stats(bg, s.TaskID); err != nil { // the rates are since the previous call
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	raw, err := drv.Stats(bg, s.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		CPU struct {
			Percent     *float64 `json:"percent"`
			UserPercent *float64 `json:"user_percent"`
			TotalTicks  *float64 `json:"total_ticks"`
			Measured    []string `json:"measured"`
		} `json:"cpu"`
		Memory struct {
			Measured []string `json:"measured"`
		} `json:"memory"`
		Pids struct {
			Measured []string `json:"measured"`
		} `json:"pids"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if !hasString(st.CPU.Measured, "total_ns") || !hasString(st.CPU.Measured, "percent") || !hasString(st.Pids.Measured, "current") {
		t.Errorf("measured: %s", raw)
	}
	if st.CPU.Percent == nil || *st.CPU.Percent < 10 || st.CPU.UserPercent == nil || st.CPU.TotalTicks == nil {
		t.Errorf("a busy loop's cpu: %s", raw)
	}
	if st.Memory.Measured == nil {
		t.Errorf("memory.measured missing: %s", raw)
	}
	if _, err := drv.Stop(bg, s.TaskID, nil); err != nil {
		t.Fatal(err)
	}
	raw, err = drv.Inspect(bg, s.TaskID)
	var in struct {
		Events []struct {
			Time    time.Time `json:"time"`
			Type    string    `json:"type"`
			Message string    `json:"message"`
		} `json:"events"`
	}
	if err != nil || json.Unmarshal(raw, &in) != nil {
		t.Fatalf("inspect: %s, %v", raw, err)
	}
	var types []string
	for _, e := range in.Events {
		types = append(types, e.Type)
		if e.Time.IsZero() {
			t.Errorf("event without a time: %s", raw)
		}
	}
	if got := strings.Join(types, ","); got != "received,started,killing,exited" {
		t.Errorf("events: %s", got)
	}
	if n := len(in.Events); n > 0 && !strings.Contains(in.Events[n-1].Message, "signal 9") {
		t.Errorf("the exited event: %q", in.Events[n-1].Message)
	}
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
