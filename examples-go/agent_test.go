package main

// Tests against the real library: $EXECDRIVER_LIB, else ../target/debug/libexecdriver.so
// (run `cargo build` first). The agent binary is built into a temporary directory; the
// library is also loaded into this test process to drive it from many goroutines.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	libPath  string
	agentBin string
	drv      *Driver
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	libPath = os.Getenv("EXECDRIVER_LIB")
	if libPath == "" {
		libPath = "../target/debug/libexecdriver.so"
	}
	abs, err := filepath.Abs(libPath)
	if err == nil {
		libPath = abs
	}
	if _, err := os.Stat(libPath); err != nil {
		fmt.Fprintf(os.Stderr, "examples-go: %v (run `cargo build` at the repository root, or set EXECDRIVER_LIB)\n", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "execdriver-go-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if os.Getenv("EXECDRIVER_DATA_DIR") == "" {
		os.Setenv("EXECDRIVER_DATA_DIR", filepath.Join(tmp, "data"))
	}
	agentBin = filepath.Join(tmp, "agent")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", agentBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "examples-go: building the agent: %v\n", err)
		return 1
	}
	if drv, err = Load(libPath); err != nil {
		fmt.Fprintf(os.Stderr, "examples-go: %v\n", err)
		return 1
	}
	return m.Run()
}

type agentRun struct {
	code           int
	stdout, stderr string
}

func runAgent(t *testing.T, args ...string) agentRun {
	t.Helper()
	cmd := exec.Command(agentBin, append([]string{"-lib", libPath}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := agentRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running the agent: %v", err)
	}
	return r
}

type waitResult struct {
	TaskID   string      `json:"task_id"`
	ExitCode int         `json:"exit_code"`
	Signal   int         `json:"signal"`
	Err      interface{} `json:"err"`
}

// agentLines parses the agent's `JOB: {...}` lines, keyed by job file.
func agentLines(t *testing.T, stdout string) map[string]waitResult {
	t.Helper()
	got := map[string]waitResult{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		i := strings.Index(line, ": {")
		if i < 0 {
			t.Fatalf("not a `JOB: {json}` line: %q", line)
		}
		var w waitResult
		if err := json.Unmarshal([]byte(line[i+2:]), &w); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got[line[:i]] = w
	}
	return got
}

func writeJob(t *testing.T, dir, file string, job map[string]interface{}) string {
	t.Helper()
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAgentHelloRaw(t *testing.T) {
	hello := "../examples-c/jobs/hello-raw.json"
	exit3 := "../examples-c/jobs/exit3.json"
	r := runAgent(t, "-purge", hello)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("agent %s: exit %d, stderr %q, stdout %q", hello, r.code, r.stderr, r.stdout)
	}
	got := agentLines(t, r.stdout)
	if w, ok := got[hello]; !ok || len(got) != 1 || w.ExitCode != 0 || w.Signal != 0 || w.Err != nil || w.TaskID == "" {
		t.Fatalf("want one successful result for %s, got %q", hello, r.stdout)
	}

	// Two jobs at once; one fails, so the agent exits 1 and still prints both.
	r = runAgent(t, "-purge", hello, exit3)
	got = agentLines(t, r.stdout)
	if r.code != 1 || len(got) != 2 || got[hello].ExitCode != 0 || got[exit3].ExitCode != 3 {
		t.Fatalf("agent hello+exit3: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
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
	name := fmt.Sprintf("task%02d", i)
	job, _ := json.Marshal(map[string]interface{}{
		"name":      name,
		"driver":    "raw_exec",
		"alloc_dir": allocDir,
		"config": map[string]interface{}{
			"command": "/bin/sh",
			// ${NOMAD_TASK_NAME} is the library's interpolation; $$ is a literal $, so the
			// shell expands the second one from the task's environment.
			"args": []string{"-c", fmt.Sprintf("echo lib=${NOMAD_TASK_NAME} sh=$$NOMAD_TASK_NAME; exit %d", i%4)},
		},
	})
	<-gate
	resp, err := drv.Call("start", string(job))
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	var started struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal([]byte(resp), &started); err != nil || started.TaskID == "" {
		return fmt.Errorf("%s: start response %q", name, resp)
	}
	defer drv.Call("destroy", taskRequest(started.TaskID, map[string]interface{}{"force": true}))
	resp, err = drv.Call("wait", taskRequest(started.TaskID, map[string]interface{}{"timeout_ms": 60000}))
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	var w waitResult
	if err := json.Unmarshal([]byte(resp), &w); err != nil {
		return fmt.Errorf("%s: wait response %q: %v", name, resp, err)
	}
	if w.TaskID != started.TaskID || w.ExitCode != i%4 || w.Signal != 0 || w.Err != nil {
		return fmt.Errorf("%s: want exit_code %d, got %s", name, i%4, resp)
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

func TestBadJob(t *testing.T) {
	// In process: the library's status, code and field.
	_, err := drv.Call("start", `{"name":"bad","driver":"raw_exec","config":{}}`)
	var de *DriverError
	if !errors.As(err, &de) || de.Status != StatusInvalid || de.Code != "invalid_config" || de.Field != "config.command" {
		t.Fatalf("start without config.command: got %#v", err)
	}

	dir := t.TempDir()
	bad := writeJob(t, dir, "bad.json", map[string]interface{}{"name": "bad", "driver": "raw_exec", "config": map[string]interface{}{}})
	r := runAgent(t, bad)
	for _, want := range []string{bad + ":", "status 1 (DRIVER_INVALID)", `"invalid_config"`, `field "config.command"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("agent stderr lacks %q: %q", want, r.stderr)
		}
	}
	if r.code != 2 || r.stdout != "" || strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
		t.Errorf("agent with a bad job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	notJSON := filepath.Join(dir, "broken.json")
	if err := os.WriteFile(notJSON, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runAgent(t, notJSON)
	if r.code != 2 || !strings.Contains(r.stderr, `"invalid_json"`) || strings.Contains(r.stderr, "goroutine") {
		t.Errorf("agent with broken JSON: exit %d, stderr %q", r.code, r.stderr)
	}
}

// SIGTERM to the agent stops its task with the task's kill_timeout_ms: the task ignores
// its kill_signal, so it is SIGKILLed after the timeout.
func TestAgentStopsTasksOnSignal(t *testing.T) {
	dir := t.TempDir()
	job := writeJob(t, dir, "stubborn.json", map[string]interface{}{
		"name":            "stubborn",
		"driver":          "raw_exec",
		"alloc_dir":       dir,
		"kill_signal":     "SIGTERM",
		"kill_timeout_ms": 500,
		"config": map[string]interface{}{
			"command": "/bin/sh",
			"args":    []string{"-c", "trap '' TERM; echo ready; sleep 60"},
		},
	})
	cmd := exec.Command(agentBin, "-lib", libPath, job)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "alloc", "logs", "stubborn.stdout.0")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "ready") {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("the task never started; agent stderr %q", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	err = cmd.Wait()
	took := time.Since(t0)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Fatalf("agent after SIGTERM: want exit 143, got %v; stderr %q", err, errb.String())
	}
	got := agentLines(t, strings.Join(lines, "\n"))
	if w, ok := got[job]; !ok || w.Signal != int(syscall.SIGKILL) {
		t.Fatalf("want the task SIGKILLed after its kill timeout, got %q", lines)
	}
	if took < 400*time.Millisecond || took > 15*time.Second {
		t.Errorf("stop took %v; the kill timeout is 500ms", took)
	}
}
