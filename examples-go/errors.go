package execdriver

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Status is a DriverStatus of include/execdriver.h: what every driver_<op> returns.
type Status int32

// The DriverStatus values.
const (
	StatusOK          Status = 0 // success
	StatusInvalid     Status = 1 // invalid_json, invalid_request, invalid_config
	StatusNotFound    Status = 2 // task_not_found
	StatusTimeout     Status = 3 // timeout: the task is still running
	StatusUnsupported Status = 4 // unsupported
	StatusArtifact    Status = 5 // artifact_*
	StatusStart       Status = 6 // command_not_found, user_not_found, isolation, spawn
	StatusConflict    Status = 7 // task_exists, task_running
	StatusInternal    Status = 8 // internal
)

var statusNames = []string{"DRIVER_OK", "DRIVER_INVALID", "DRIVER_NOT_FOUND", "DRIVER_TIMEOUT",
	"DRIVER_UNSUPPORTED", "DRIVER_ARTIFACT", "DRIVER_START", "DRIVER_CONFLICT", "DRIVER_INTERNAL"}

// String is the status's name in the header, e.g. "DRIVER_TIMEOUT".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("unknown status %d", int32(s))
}

// Sentinel errors, one per status (the first group) and one per error code of a status
// that has several (the second). An *Error matches both its status's and its code's:
// a task_exists failure is errors.Is(err, ErrTaskExists) and errors.Is(err, ErrConflict).
var (
	// ErrInvalid matches every DRIVER_INVALID failure.
	ErrInvalid = errors.New("execdriver: invalid request")
	// ErrNotFound matches task_not_found: no such task here (or, for Signal, Exec and
	// ExecSession, the task is not running); for ExecWait and ExecResize, no such exec
	// session (or, for ExecResize, its command has ended).
	ErrNotFound = errors.New("execdriver: task not found")
	// ErrTimeout matches timeout: WaitFor's limit passed with the task still running.
	ErrTimeout = errors.New("execdriver: timed out, the task is still running")
	// ErrUnsupported matches unsupported (e.g. exec without root or cgroups).
	ErrUnsupported = errors.New("execdriver: unsupported on this host")
	// ErrArtifact matches every artifact_* failure.
	ErrArtifact = errors.New("execdriver: artifact failed")
	// ErrStart matches every DRIVER_START failure.
	ErrStart = errors.New("execdriver: start failed")
	// ErrConflict matches task_exists and task_running.
	ErrConflict = errors.New("execdriver: conflict")
	// ErrInternal matches internal: a bug in the library.
	ErrInternal = errors.New("execdriver: internal error")

	// ErrInvalidJSON matches invalid_json: the request is not a JSON object.
	ErrInvalidJSON = errors.New("execdriver: invalid_json")
	// ErrInvalidRequest matches invalid_request: a malformed request or a refused handle.
	ErrInvalidRequest = errors.New("execdriver: invalid_request")
	// ErrInvalidConfig matches invalid_config: the task or plugin configuration is invalid.
	ErrInvalidConfig = errors.New("execdriver: invalid_config")
	// ErrArtifactDownload matches artifact_download.
	ErrArtifactDownload = errors.New("execdriver: artifact_download")
	// ErrArtifactChecksum matches artifact_checksum.
	ErrArtifactChecksum = errors.New("execdriver: artifact_checksum")
	// ErrArtifactUnpack matches artifact_unpack.
	ErrArtifactUnpack = errors.New("execdriver: artifact_unpack")
	// ErrArtifactLimit matches artifact_limit.
	ErrArtifactLimit = errors.New("execdriver: artifact_limit")
	// ErrArtifactDenied matches artifact_denied.
	ErrArtifactDenied = errors.New("execdriver: artifact_denied")
	// ErrCommandNotFound matches command_not_found.
	ErrCommandNotFound = errors.New("execdriver: command_not_found")
	// ErrUserNotFound matches user_not_found.
	ErrUserNotFound = errors.New("execdriver: user_not_found")
	// ErrIsolation matches isolation: building the task's isolation failed.
	ErrIsolation = errors.New("execdriver: isolation")
	// ErrSpawn matches spawn: making directories or starting the command failed.
	ErrSpawn = errors.New("execdriver: spawn")
	// ErrTaskExists matches task_exists: the id (or task dir) is taken by a live task.
	ErrTaskExists = errors.New("execdriver: task_exists")
	// ErrTaskRunning matches task_running: destroy without force, or a task still starting.
	ErrTaskRunning = errors.New("execdriver: task_running")
)

var statusErrs = map[Status]error{
	StatusInvalid: ErrInvalid, StatusNotFound: ErrNotFound, StatusTimeout: ErrTimeout,
	StatusUnsupported: ErrUnsupported, StatusArtifact: ErrArtifact, StatusStart: ErrStart,
	StatusConflict: ErrConflict, StatusInternal: ErrInternal,
}

var codeErrs = map[string]error{
	"invalid_json": ErrInvalidJSON, "invalid_request": ErrInvalidRequest,
	"invalid_config": ErrInvalidConfig, "artifact_download": ErrArtifactDownload,
	"artifact_checksum": ErrArtifactChecksum, "artifact_unpack": ErrArtifactUnpack,
	"artifact_limit": ErrArtifactLimit, "artifact_denied": ErrArtifactDenied,
	"command_not_found": ErrCommandNotFound, "user_not_found": ErrUserNotFound,
	"isolation": ErrIsolation, "spawn": ErrSpawn, "task_exists": ErrTaskExists,
	"task_running": ErrTaskRunning,
}

// Error is a failed driver_<op> call: its status and the library's error object
// {"error": {"code", "field", "message"}}. Use errors.Is with the Err* sentinels to
// test what failed, errors.As to read the fields.
type Error struct {
	Op      string // the operation, e.g. "start"
	Status  Status // what driver_<op> returned
	Code    string // error.code, e.g. "invalid_config"
	Field   string // error.field: the input at fault, if one is (e.g. "config.command")
	Message string // error.message
	Raw     string // the response as the library sent it
}

// Error gives the operation, status, code, field and message.
func (e *Error) Error() string {
	s := fmt.Sprintf("driver_%s failed: status %d (%s), error code %q", e.Op, int32(e.Status), e.Status, e.Code)
	if e.Field != "" {
		s += fmt.Sprintf(", field %q", e.Field)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is the sentinel of e's status or of e's code.
func (e *Error) Is(target error) bool {
	if s, ok := statusErrs[e.Status]; ok && s == target {
		return true
	}
	c, ok := codeErrs[e.Code]
	return ok && c == target
}

func newError(op string, st Status, resp []byte) *Error {
	e := &Error{Op: op, Status: st, Raw: string(resp)}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	if json.Unmarshal(resp, &body) == nil {
		e.Code, e.Message, e.Field = body.Error.Code, body.Error.Message, body.Error.Field
	} else {
		e.Message = "unreadable response: " + string(resp)
	}
	return e
}
