package execdriver_test

// The package's API in this process: contexts, typed errors, each operation, many
// goroutines at once.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"execdriver"
)

// startSleeper starts a raw_exec task that runs until stopped; the test's cleanup
// destroys it.
func startSleeper(t *testing.T, name string) *execdriver.Started {
	t.Helper()
	s, err := drv.Start(context.Background(), execdriver.TaskConfig{
		Name:       name,
		Driver:     "raw_exec",
		AllocDir:   t.TempDir(),
		KillSignal: "SIGTERM",
		Config:     execdriver.CommandConfig{Command: "/bin/sh", Args: []string{"-c", "exec sleep 600"}},
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	destroyAtCleanup(t, s.TaskID)
	return s
}

// destroyAtCleanup has the test's cleanup destroy the task (forced).
func destroyAtCleanup(t *testing.T, id string) {
	t.Cleanup(func() {
		err := drv.Destroy(context.Background(), id, execdriver.DestroyOptions{Force: true})
		if err != nil && !errors.Is(err, execdriver.ErrNotFound) {
			t.Errorf("destroy %s: %v", id, err)
		}
	})
}

// goroutinesBackTo waits until no more than base goroutines run: a goroutine that has
// sent its last value may not have exited yet, and nothing signals that it has.
func goroutinesBackTo(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before the Wait:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unavailable skips the test for want of what CI has (root, cgroups); under CI (env CI
// set and not empty, as .ci/run sets it) it fails instead.
func unavailable(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("required in CI: %s", reason)
	}
	t.Skip(reason)
}

// goroutineIn waits until one goroutine's stack holds every one of fns (function names
// as runtime.Stack prints them): the call under test is in progress there.
func goroutineIn(t *testing.T, fns ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			all := true
			for _, f := range fns {
				all = all && strings.Contains(g, f)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %v:\n%s", fns, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Cancelling a Wait on a running task returns context.Canceled at once, leaves no
// goroutine behind and no C call blocked (Wait calls the library on the calling
// goroutine, so its return means the call returned), and the task can still be waited
// on and stopped.
func TestWaitCancelled(t *testing.T) {
	bg := context.Background()
	task := startSleeper(t, "cancelled")
	base := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := drv.Wait(ctx, task.TaskID)
		done <- err
	}()
	// A second waiter on the same task meanwhile: 300 ms during which the first one
	// is inside its wait loop.
	if _, err := drv.WaitFor(bg, task.TaskID, 300*time.Millisecond); !errors.Is(err, execdriver.ErrTimeout) {
		t.Fatalf("WaitFor on a running task: want ErrTimeout, got %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned before its context was cancelled: %v", err)
	default:
	}
	t0 := time.Now()
	cancel()
	err := <-done
	// The task has a wait fd, so Wait sits in the poller; the margin is for a loaded
	// CI machine.
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("Wait returned %v after the cancel", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait: want context.Canceled, got %v", err)
	}
	goroutinesBackTo(t, base)

	// Still running, still ours.
	if _, err := drv.WaitFor(bg, task.TaskID, 0); !errors.Is(err, execdriver.ErrTimeout) {
		t.Fatalf("poll after the cancelled Wait: want ErrTimeout, got %v", err)
	}
	res, err := drv.Stop(bg, task.TaskID, &execdriver.StopOptions{Signal: "SIGKILL"})
	if err != nil || res.Signal != 9 || res.ExitCode != 137 || res.TaskID != task.TaskID {
		t.Fatalf("stop after the cancelled Wait: %+v, %v", res, err)
	}
	wctx, wcancel := context.WithTimeout(bg, 10*time.Second)
	defer wcancel()
	again, err := drv.Wait(wctx, task.TaskID)
	if err != nil || again.ExitCode != res.ExitCode || again.Signal != res.Signal || !again.FinishedAt.Equal(res.FinishedAt) {
		t.Fatalf("Wait after Stop: %+v, %v; Stop gave %+v", again, err, res)
	}
}

// Without a wait fd (NoWaitFD; as for a recovered task) Wait calls driver_wait in 100 ms
// slices: cancelled while one of them blocks in the library, it returns ctx.Err() when
// that slice ends, with no goroutine left, and (the call being on its goroutine) no C
// call either. The task runs on.
func TestWaitCancelledWithoutWaitFD(t *testing.T) {
	s, _ := startShell(t, "cancelled-nofd", "exec sleep 600", true)
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := drv.Wait(ctx, s.TaskID)
		done <- err
	}()
	// In a slice: inside driver_wait, called from the sliced loop.
	goroutineIn(t, "execdriver.(*Driver).waitSliced", "execdriver._Cfunc_ed_call")
	t0 := time.Now()
	cancel()
	err := <-done
	took := time.Since(t0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait: want context.Canceled, got %v", err)
	}
	// One slice is 100 ms; the rest is the margin of a loaded machine.
	if took > 300*time.Millisecond {
		t.Errorf("Wait returned %v after the cancel", took)
	}
	goroutinesBackTo(t, base)
	if _, err := drv.WaitFor(context.Background(), s.TaskID, 0); !errors.Is(err, execdriver.ErrTimeout) {
		t.Fatalf("the task after the cancelled Wait: want it running, got %v", err)
	}
}

// A context deadline ends Wait with context.DeadlineExceeded, close to the deadline;
// WaitFor's own limit, when it comes first, with ErrTimeout.
func TestWaitDeadline(t *testing.T) {
	bg := context.Background()
	task := startSleeper(t, "deadline")
	base := runtime.NumGoroutine()
	for _, c := range []struct {
		name         string
		ctx, waitFor time.Duration // waitFor 0: Wait
		want         error
	}{
		{"Wait", 250 * time.Millisecond, 0, context.DeadlineExceeded},
		{"WaitFor, ctx first", 250 * time.Millisecond, time.Minute, context.DeadlineExceeded},
		{"WaitFor, limit first", time.Minute, 250 * time.Millisecond, execdriver.ErrTimeout},
	} {
		ctx, cancel := context.WithTimeout(bg, c.ctx)
		t0 := time.Now()
		var err error
		if c.waitFor == 0 {
			_, err = drv.Wait(ctx, task.TaskID)
		} else {
			_, err = drv.WaitFor(ctx, task.TaskID, c.waitFor)
		}
		took := time.Since(t0)
		cancel()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: want %v, got %v", c.name, c.want, err)
		}
		if took < 250*time.Millisecond || took > 2*time.Second {
			t.Errorf("%s: returned after %v; the limit was 250ms", c.name, took)
		}
	}
	goroutinesBackTo(t, base)
	if _, err := drv.WaitFor(bg, task.TaskID, 0); !errors.Is(err, execdriver.ErrTimeout) {
		t.Fatalf("the task after the waits: want it running, got %v", err)
	}
}

// Each failure matches its status's and its code's sentinel, and no other; errors.As
// gives the library's code and field.
func TestErrorsIs(t *testing.T) {
	bg := context.Background()
	check := func(what string, err error, want []error, code, field string) {
		t.Helper()
		for _, w := range want {
			if !errors.Is(err, w) {
				t.Errorf("%s: %v is not %v", what, err, w)
			}
		}
		for _, other := range []error{execdriver.ErrNotFound, execdriver.ErrInvalid, execdriver.ErrTimeout,
			execdriver.ErrConflict, execdriver.ErrInvalidConfig, execdriver.ErrTaskExists} {
			if errors.Is(err, other) && !contains(want, other) {
				t.Errorf("%s: %v is also %v", what, err, other)
			}
		}
		var de *execdriver.Error
		if !errors.As(err, &de) || de.Code != code || (field != "" && de.Field != field) {
			t.Errorf("%s: want code %q field %q, got %#v", what, code, field, err)
		}
	}

	_, err := drv.Wait(bg, "no-such-task")
	check("Wait on an unknown task", err, []error{execdriver.ErrNotFound}, "task_not_found", "task_id")
	_, err = drv.Inspect(bg, "no-such-task")
	check("Inspect an unknown task", err, []error{execdriver.ErrNotFound}, "task_not_found", "")

	_, err = drv.Start(bg, execdriver.TaskConfig{Name: "bad", Driver: "raw_exec"})
	check("Start without config.command", err, []error{execdriver.ErrInvalid, execdriver.ErrInvalidConfig}, "invalid_config", "config.command")
	var de *execdriver.Error
	if errors.As(err, &de) && (de.Status != execdriver.StatusInvalid || de.Op != "start") {
		t.Errorf("Start without config.command: status %v, op %q", de.Status, de.Op)
	}
	_, err = drv.Start(bg, "{not json")
	check("Start with broken JSON", err, []error{execdriver.ErrInvalid, execdriver.ErrInvalidJSON}, "invalid_json", "")

	task := startSleeper(t, "errors")
	_, err = drv.WaitFor(bg, task.TaskID, 0)
	check("WaitFor on a running task", err, []error{execdriver.ErrTimeout}, "timeout", "")
	if errors.As(err, &de) && de.Status != execdriver.StatusTimeout {
		t.Errorf("timeout: status %v", de.Status)
	}

	_, err = drv.Start(bg, execdriver.TaskConfig{ID: task.TaskID, Name: "other", Driver: "raw_exec",
		Config: execdriver.CommandConfig{Command: "/bin/true"}})
	check("Start with a live task's id", err, []error{execdriver.ErrConflict, execdriver.ErrTaskExists}, "task_exists", "id")
	err = drv.Destroy(bg, task.TaskID, execdriver.DestroyOptions{})
	check("Destroy a running task without force", err, []error{execdriver.ErrConflict, execdriver.ErrTaskRunning}, "task_running", "force")
}

func contains(errs []error, e error) bool {
	for _, x := range errs {
		if x == e {
			return true
		}
	}
	return false
}

// A context already done stops an operation before it reaches the library.
func TestDoneContextCallsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	_, err := drv.Start(ctx, execdriver.TaskConfig{Name: "never", Driver: "raw_exec", AllocDir: dir,
		Config: execdriver.CommandConfig{Command: "/bin/true"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); !os.IsNotExist(err) {
		t.Errorf("the task dir exists: %v", err)
	}
}

// Every operation once, on one task.
func TestTaskLifecycle(t *testing.T) {
	bg := context.Background()
	if drv.Version() == "" {
		t.Error("no version")
	}
	fp, err := drv.Fingerprint(bg)
	if err != nil || fp.Health == "" || fp.Attributes["driver.raw_exec"] != "1" {
		t.Fatalf("fingerprint: %+v, %v", fp, err)
	}
	cfg, err := drv.Configure(bg, nil)
	var c struct {
		DataDir string `json:"data_dir"`
	}
	if err != nil || json.Unmarshal(cfg, &c) != nil || c.DataDir == "" {
		t.Fatalf("configure(nil): %s, %v", cfg, err)
	}

	task := startSleeper(t, "lifecycle")
	if task.PID <= 0 || task.TaskDir == "" || task.StartedAt.IsZero() || len(task.Handle) == 0 {
		t.Errorf("start response: %+v", task)
	}
	raw, err := drv.Inspect(bg, task.TaskID)
	var in struct {
		State string `json:"state"`
	}
	if err != nil || json.Unmarshal(raw, &in) != nil || in.State != "running" {
		t.Fatalf("inspect: %s, %v", raw, err)
	}
	if raw, err := drv.Stats(bg, task.TaskID); err != nil || !strings.Contains(string(raw), `"pids"`) {
		t.Errorf("stats: %s, %v", raw, err)
	}
	out, err := drv.Exec(bg, task.TaskID, execdriver.ExecRequest{Command: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exit 4"}})
	if err != nil || out.ExitCode != 4 || out.Stdout != "out\n" || out.Stderr != "err\n" {
		t.Errorf("exec: %+v, %v", out, err)
	}
	rec, err := drv.Recover(bg, task.Handle)
	if err != nil || !rec.Recovered || rec.State != "running" || rec.TaskID != task.TaskID {
		t.Errorf("recover of a known task: %+v, %v", rec, err)
	}
	if err := drv.Signal(bg, task.TaskID, "SIGUSR1"); err != nil {
		t.Fatalf("signal: %v", err)
	}
	wctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	res, err := drv.Wait(wctx, task.TaskID)
	if err != nil || res.Signal != 10 || res.ExitCode != 138 || res.Err != "" || res.FinishedAt.Before(res.StartedAt) {
		t.Fatalf("wait after SIGUSR1: %+v, %v", res, err)
	}
	// Stopping an exited task gives its result.
	if st, err := drv.Stop(bg, task.TaskID, &execdriver.StopOptions{Timeout: -1}); err != nil || st.Signal != 10 {
		t.Errorf("stop of an exited task: %+v, %v", st, err)
	}
	if err := drv.Destroy(bg, task.TaskID, execdriver.DestroyOptions{Purge: true}); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := os.Stat(task.TaskDir); !os.IsNotExist(err) {
		t.Errorf("purge left the task dir: %v", err)
	}
	if _, err := drv.Wait(bg, task.TaskID); !errors.Is(err, execdriver.ErrNotFound) {
		t.Errorf("wait after destroy: want ErrNotFound, got %v", err)
	}
}

// Stop's grace period: the task ignores its signal, so it is SIGKILLed after Timeout.
func TestStopTimeout(t *testing.T) {
	bg := context.Background()
	dir := t.TempDir()
	s, err := drv.Start(bg, execdriver.TaskConfig{Name: "stubborn", Driver: "raw_exec", AllocDir: dir,
		Config: execdriver.CommandConfig{Command: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo ready; sleep 600"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Destroy(bg, s.TaskID, execdriver.DestroyOptions{Force: true})
	if !logSays(filepath.Join(dir, "alloc", "logs", "stubborn.stdout.0"), "ready") {
		t.Fatal("the task never set its trap")
	}
	t0 := time.Now()
	res, err := drv.Stop(bg, s.TaskID, &execdriver.StopOptions{Signal: "SIGTERM", Timeout: 300 * time.Millisecond})
	took := time.Since(t0)
	if err != nil || res.Signal != 9 {
		t.Fatalf("stop: %+v, %v", res, err)
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("stop took %v with a 300ms grace", took)
	}
}

// 20 tasks started and waited on from 20 goroutines at once, while this process runs
// and reaps its own os/exec children.
func TestConcurrentTasksAndOwnChildren(t *testing.T) {
	// A child of our own, started before any task and still running while they run.
	before := exec.Command("/bin/sh", "-c", "sleep 1; exit 7")
	if err := before.Start(); err != nil {
		t.Fatal(err)
	}

	const n = 20
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	errs := make(chan error, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		i := i
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- oneTask(i, dirs[i], gate)
		}()
	}

	// While the tasks run: more children of our own, each reaped by Go with its status.
	childErrs := make(chan error, 1)
	go func() {
		for k := 0; k < 10; k++ {
			c := exec.Command("/bin/sh", "-c", fmt.Sprintf("exit %d", 10+k))
			err := c.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 10+k {
				childErrs <- fmt.Errorf("os/exec child %d: want exit status %d, got %v", k, 10+k, err)
				return
			}
		}
		childErrs <- nil
	}()

	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := <-childErrs; err != nil {
		t.Error(err)
	}
	err := before.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("os/exec child started before the tasks: want exit status 7, got %v", err)
	}
	// And one after them.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Errorf("os/exec child after the tasks: %v", err)
	}
}

func oneTask(i int, allocDir string, gate <-chan struct{}) error {
	ctx := context.Background()
	name := fmt.Sprintf("task%02d", i)
	job := execdriver.TaskConfig{
		Name:     name,
		Driver:   "raw_exec",
		AllocDir: allocDir,
		Config: execdriver.CommandConfig{
			Command: "/bin/sh",
			// ${NOMAD_TASK_NAME} is the library's interpolation; $$ is a literal $, so the
			// shell expands the second one from the task's environment.
			Args: []string{"-c", fmt.Sprintf("echo lib=${NOMAD_TASK_NAME} sh=$$NOMAD_TASK_NAME; exit %d", i%4)},
		},
	}
	<-gate
	started, err := drv.Start(ctx, job)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	defer drv.Destroy(ctx, started.TaskID, execdriver.DestroyOptions{Force: true})
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	w, err := drv.Wait(wctx, started.TaskID)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	if w.TaskID != started.TaskID || w.ExitCode != i%4 || w.Signal != 0 || w.Err != "" {
		return fmt.Errorf("%s: want exit_code %d, got %s", name, i%4, w.Raw)
	}
	logs, err := os.ReadFile(filepath.Join(allocDir, "alloc", "logs", name+".stdout.0"))
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	if want := fmt.Sprintf("lib=%s sh=%s\n", name, name); string(logs) != want {
		return fmt.Errorf("%s: stdout %q, want %q", name, logs, want)
	}
	return nil
}

// The library's own log, in the file of the plugin configuration's log_path.
func TestLibraryLogFile(t *testing.T) {
	bg := context.Background()
	path := filepath.Join(t.TempDir(), "driver.log")
	conf := func(v any) error {
		b, _ := json.Marshal(v)
		_, err := drv.Configure(bg, b)
		return err
	}
	if err := conf(map[string]string{"log_path": path, "log_level": "debug"}); err != nil {
		t.Fatalf("configure: %v", err)
	}
	t.Cleanup(func() { _ = conf(map[string]string{}) })
	var e *execdriver.Error
	if err := conf(map[string]string{"log_path": filepath.Join(path, "no", "x.log")}); !errors.As(err, &e) ||
		!errors.Is(err, execdriver.ErrInvalidConfig) || e.Field != "log_path" {
		t.Fatalf("a log_path that cannot be opened: %v", err)
	}
	task := startSleeper(t, "logged")
	if _, err := drv.Stop(bg, task.TaskID, &execdriver.StopOptions{Timeout: 5 * time.Second}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := drv.Destroy(bg, task.TaskID, execdriver.DestroyOptions{}); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"DEBUG task " + task.TaskID + ": received",
		"INFO  task " + task.TaskID + ": started: supervisor pid ",
		"INFO  task " + task.TaskID + ": killing",
		"INFO  task " + task.TaskID + ": exited: killed by signal 15",
		"INFO  task " + task.TaskID + ": destroyed",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%q not in the log:\n%s", want, b)
		}
	}
}
