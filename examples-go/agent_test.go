package execdriver_test

// The agent (cmd/agent) run as a process, as a user runs it; TestMain builds it.

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

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

func TestBadJob(t *testing.T) {
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
	if !logSays(log, "ready") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the task never started; agent stderr %q", errb.String())
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
