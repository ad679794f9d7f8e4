package execdriver_test

// The tests run against the real library: $EXECDRIVER_LIB, else
// ../target/debug/libexecdriver.so (run `cargo build` first). TestMain loads it into
// this process (drv) and builds the agent (cmd/agent) into a temporary directory.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"execdriver"
)

var (
	libPath  string
	agentBin string
	goBin    = filepath.Join(runtime.GOROOT(), "bin", "go")
	drv      *execdriver.Driver
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
	build := exec.Command(goBin, "build", "-o", agentBin, "./cmd/agent")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "examples-go: building the agent: %v\n", err)
		return 1
	}
	if drv, err = execdriver.Open(libPath); err != nil {
		fmt.Fprintf(os.Stderr, "examples-go: %v\n", err)
		return 1
	}
	return m.Run()
}

// logSays waits up to 20 s for the log file at path to contain want (a task's output
// reaches its log through its supervisor: nothing to wait on but the file).
func logSays(path, want string) bool {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
