package main

// A thin cgo binding to libexecdriver.so, loaded at run time with dlopen (SPEC §1).
// Every response the library returns is copied into a Go string and released with
// driver_free before Call returns.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

typedef int32_t (*op_fn)(const char *, char **);
typedef void (*free_fn)(char *);
typedef uint32_t (*abi_fn)(void);
typedef const char *(*version_fn)(void);

static int32_t ed_call(void *f, const char *req, char **resp) { return ((op_fn)f)(req, resp); }
static void ed_free(void *f, char *p) { ((free_fn)f)(p); }
static uint32_t ed_abi(void *f) { return ((abi_fn)f)(); }
static const char *ed_version(void *f) { return ((version_fn)f)(); }
static void *ed_open(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static const char *ed_dlerror(void) { const char *e = dlerror(); return e ? e : "unknown dlopen error"; }
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"unsafe"
)

// Status is a DriverStatus from include/execdriver.h.
type Status int32

// The DriverStatus values.
const (
	StatusOK          Status = 0
	StatusInvalid     Status = 1
	StatusNotFound    Status = 2
	StatusTimeout     Status = 3
	StatusUnsupported Status = 4
	StatusArtifact    Status = 5
	StatusStart       Status = 6
	StatusConflict    Status = 7
	StatusInternal    Status = 8
)

func (s Status) String() string {
	names := []string{"DRIVER_OK", "DRIVER_INVALID", "DRIVER_NOT_FOUND", "DRIVER_TIMEOUT",
		"DRIVER_UNSUPPORTED", "DRIVER_ARTIFACT", "DRIVER_START", "DRIVER_CONFLICT", "DRIVER_INTERNAL"}
	if s >= 0 && int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("unknown status %d", int32(s))
}

// DriverError is a failed driver_<op> call: its status and the library's error object.
type DriverError struct {
	Op      string
	Status  Status
	Code    string
	Message string
	Field   string
	Raw     string
}

func (e *DriverError) Error() string {
	s := fmt.Sprintf("driver_%s failed: status %d (%s), error code %q", e.Op, int32(e.Status), e.Status, e.Code)
	if e.Field != "" {
		s += fmt.Sprintf(", field %q", e.Field)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Driver is a loaded library. Safe for concurrent use (the library is).
type Driver struct {
	free unsafe.Pointer
	ops  map[string]unsafe.Pointer
	abi  uint32
	ver  string
}

var opNames = []string{"configure", "fingerprint", "start", "wait", "stop", "destroy",
	"inspect", "stats", "signal", "recover", "exec"}

// Load dlopens the library at path and resolves every driver_<op>. It is never
// unloaded: a Rust cdylib keeps threads and thread-locals alive.
func Load(path string) (*Driver, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.ed_open(cpath)
	if h == nil {
		return nil, fmt.Errorf("dlopen(%s): %s", path, C.GoString(C.ed_dlerror()))
	}
	sym := func(name string) (unsafe.Pointer, error) {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		p := C.dlsym(h, cname)
		if p == nil {
			return nil, fmt.Errorf("%s: symbol %s not found", path, name)
		}
		return p, nil
	}
	d := &Driver{ops: map[string]unsafe.Pointer{}}
	var err error
	if d.free, err = sym("driver_free"); err != nil {
		return nil, err
	}
	abi, err := sym("driver_abi_version")
	if err != nil {
		return nil, err
	}
	if d.abi = uint32(C.ed_abi(abi)); d.abi != 1 {
		return nil, fmt.Errorf("%s has C ABI %d; this host speaks 1", path, d.abi)
	}
	ver, err := sym("driver_version")
	if err != nil {
		return nil, err
	}
	d.ver = C.GoString(C.ed_version(ver))
	for _, op := range opNames {
		if d.ops[op], err = sym("driver_" + op); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Version is driver_version().
func (d *Driver) Version() string { return d.ver }

// Raw calls driver_<op> with request (empty: NULL) and returns the status and the
// response text. The response is freed with driver_free before Raw returns.
func (d *Driver) Raw(op, request string) (Status, string) {
	f, ok := d.ops[op]
	if !ok {
		panic("execdriver: unknown operation " + op)
	}
	var creq *C.char
	if request != "" {
		creq = C.CString(request)
		defer C.free(unsafe.Pointer(creq))
	}
	var resp *C.char
	st := Status(C.ed_call(f, creq, &resp))
	out := ""
	if resp != nil {
		out = C.GoString(resp)
		C.ed_free(d.free, resp)
	}
	return st, out
}

// Call is Raw with the error object decoded into a *DriverError on failure.
func (d *Driver) Call(op, request string) (string, error) {
	st, resp := d.Raw(op, request)
	if st == StatusOK {
		return resp, nil
	}
	e := &DriverError{Op: op, Status: st, Raw: resp}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(resp), &body) == nil {
		e.Code, e.Message, e.Field = body.Error.Code, body.Error.Message, body.Error.Field
	} else {
		e.Message = "unreadable response: " + resp
	}
	return "", e
}

// taskRequest is the JSON `{"task_id": id}` plus extra fields.
func taskRequest(id string, extra map[string]interface{}) string {
	m := map[string]interface{}{"task_id": id}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}
