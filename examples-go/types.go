package execdriver

import (
	"encoding/json"
	"time"
)

// TaskConfig is a driver_start request (docs/api.md, "driver_start") for Start. A zero
// field is left out of the request, so the library's default applies; for what it
// cannot say (e.g. `node`, or a kill_timeout_ms of 0) pass Start the JSON instead.
type TaskConfig struct {
	ID               string            `json:"id,omitempty"`
	Name             string            `json:"name"`
	Driver           string            `json:"driver,omitempty"` // "exec" (default) or "raw_exec"
	AllocID          string            `json:"alloc_id,omitempty"`
	AllocName        string            `json:"alloc_name,omitempty"`
	AllocIndex       int               `json:"alloc_index,omitempty"`
	JobID            string            `json:"job_id,omitempty"`
	JobName          string            `json:"job_name,omitempty"`
	GroupName        string            `json:"group_name,omitempty"`
	Namespace        string            `json:"namespace,omitempty"`
	Datacenter       string            `json:"datacenter,omitempty"`
	Region           string            `json:"region,omitempty"`
	AllocDir         string            `json:"alloc_dir,omitempty"`
	Artifacts        []Artifact        `json:"artifacts,omitempty"`
	Env              map[string]string `json:"env,omitempty"`
	Meta             map[string]string `json:"meta,omitempty"`
	Ports            map[string]Port   `json:"ports,omitempty"`
	User             string            `json:"user,omitempty"`
	Resources        *Resources        `json:"resources,omitempty"`
	NetworkIsolation *NetworkIsolation `json:"network_isolation,omitempty"`
	KillSignal       string            `json:"kill_signal,omitempty"`
	KillTimeoutMS    int64             `json:"kill_timeout_ms,omitempty"`
	Logs             *Logs             `json:"logs,omitempty"`
	Config           CommandConfig     `json:"config"`
	// NoWaitFD: Start asks for no wait fd, and Wait calls driver_wait in 100 ms slices
	// (one fd fewer per running task). Not part of the request.
	NoWaitFD bool `json:"-"`
}

// CommandConfig is a task's `config`: its command and how it runs.
type CommandConfig struct {
	Command        string   `json:"command"`
	Args           []string `json:"args,omitempty"`
	ArtifactSource string   `json:"artifact_source,omitempty"`
	Checksum       string   `json:"checksum,omitempty"`
	WorkDir        string   `json:"work_dir,omitempty"`
	PidMode        string   `json:"pid_mode,omitempty"`
	IpcMode        string   `json:"ipc_mode,omitempty"`
	CapAdd         []string `json:"cap_add,omitempty"`
	CapDrop        []string `json:"cap_drop,omitempty"`
	Seccomp        string   `json:"seccomp,omitempty"`
}

// Artifact is an entry of a task's `artifacts` (docs/task.md, "Artifacts").
type Artifact struct {
	Source      string            `json:"source"`
	Destination string            `json:"destination,omitempty"`
	Mode        string            `json:"mode,omitempty"`
	Options     map[string]string `json:"options,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

// Port is a value of a task's `ports`.
type Port struct {
	IP   string `json:"ip,omitempty"`
	Port int    `json:"port"`
}

// Resources are an exec task's limits.
type Resources struct {
	CPUMHz      int64 `json:"cpu_mhz,omitempty"`
	Cores       int64 `json:"cores,omitempty"`
	MemoryMB    int64 `json:"memory_mb,omitempty"`
	MemoryMaxMB int64 `json:"memory_max_mb,omitempty"`
	PidsMax     int64 `json:"pids_max,omitempty"`
}

// NetworkIsolation is an exec task's network namespace: Mode "host", "group" (Path
// names the namespace) or "none".
type NetworkIsolation struct {
	Mode string `json:"mode"`
	Path string `json:"path,omitempty"`
}

// Logs bound a task's log files.
type Logs struct {
	MaxFiles      int `json:"max_files,omitempty"`
	MaxFileSizeMB int `json:"max_file_size_mb,omitempty"`
}

// Started is driver_start's response.
type Started struct {
	TaskID    string          `json:"task_id"`
	PID       int             `json:"pid"` // the task's supervisor, not its command
	TaskDir   string          `json:"task_dir"`
	StartedAt time.Time       `json:"started_at"`
	Handle    json.RawMessage `json:"handle"` // store it; Recover takes it after a restart
}

// ExitResult is the wait object: how a task ended (docs/task.md, "Exit status").
type ExitResult struct {
	TaskID     string    `json:"task_id"`
	ExitCode   int       `json:"exit_code"` // 128+N after signal N; -1 when unknown (then Err says why)
	Signal     int       `json:"signal"`    // the signal that killed the command, else 0
	OOMKilled  bool      `json:"oom_killed"`
	Err        string    `json:"err"` // empty normally; why the status was lost
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Raw is the wait object as the library sent it.
	Raw json.RawMessage `json:"-"`
}

// Fingerprint is driver_fingerprint's response.
type Fingerprint struct {
	Health            string            `json:"health"` // "healthy", "unhealthy" or "undetected"
	HealthDescription string            `json:"health_description"`
	Attributes        map[string]string `json:"attributes"`
}

// StopOptions say how Stop stops a task. A nil *StopOptions uses the task's own.
type StopOptions struct {
	// Signal is the first signal (e.g. "SIGTERM"); empty: the task's kill_signal.
	Signal string
	// Timeout is how long the task has to exit before everything is SIGKILLed; 0: the
	// task's kill_timeout_ms; negative: no grace at all.
	Timeout time.Duration
}

// DestroyOptions say what Destroy may do.
type DestroyOptions struct {
	Force bool // kill a running task first (else a running task is ErrTaskRunning)
	Purge bool // also remove the task dir <alloc_dir>/<name>
}

// ExecRequest is a command for Exec to run inside a task.
type ExecRequest struct {
	Command string
	Args    []string
	// Timeout after which the command is SIGKILLed (the result is then exit 137,
	// signal 9); 0: the library's default, 10 s.
	Timeout time.Duration
}

// ExecResult is driver_exec's response. Each stream holds at most 1 MiB.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   int    `json:"signal"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// Recovered is driver_recover's response.
type Recovered struct {
	TaskID    string `json:"task_id"`
	Recovered bool   `json:"recovered"`
	State     string `json:"state"` // "running" or "exited"
}

// LogOptions say what a Logs reader reads.
type LogOptions struct {
	// Stream is "stdout" (default) or "stderr".
	Stream string
	// Origin is "start" (default: Offset counts from the stream's start) or "end"
	// (Offset counts back from its current end: 1000 is the last 1000 bytes).
	Origin string
	Offset int64
	// Follow: at the current end, wait for more while the task runs; io.EOF once the
	// task has ended and all of its output was read. Without Follow, io.EOF at the
	// current end.
	Follow bool
	// Limit is the most bytes one driver_logs call returns (0: the library's 64 KiB;
	// at most 1 MiB).
	Limit int
}
