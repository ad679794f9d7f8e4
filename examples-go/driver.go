// Package execdriver is a Go binding to libexecdriver.so, loaded at run time with
// dlopen (cgo, standard library only).
//
// Open loads the library; the methods of Driver are its operations (docs/api.md), each
// taking a context.Context first. Failures are *Error values that match the sentinel
// errors of this package with errors.Is:
//
//	_, err := drv.Wait(ctx, "no-such-task")
//	errors.Is(err, execdriver.ErrNotFound) // true
//
// A C call cannot be interrupted, so the context is honoured as follows. Wait and
// WaitFor on a task started with a wait fd (Start asks for one unless
// TaskConfig.NoWaitFD) block in Go's runtime poller, no C call at all, until the fd says
// the exit is known, and return ctx.Err() as soon as ctx is done; on any other task
// (e.g. one from Recover) they never keep a C thread in driver_wait for more than
// 100 ms, checking the context in between; so do ExecWait and ExecSession.Wait in
// driver_exec_wait. A Logs reader never keeps a C thread in driver_logs for more than
// 500 ms. Every other operation checks the context before it calls the library and then
// runs to its end, which the library bounds (Stop by the grace period plus the final
// kill, Exec by its timeout, Start by the artifact fetch limits, ExecResize by about
// 5 s; ExecSession returns once the command has started).
//
// ExecSession is the interactive form of Exec: a command in a task with a terminal
// (ExecSession.TTY) or pipes (Stdin, Stdout, Stderr), files of this process in Go's
// runtime poller, which the session owns; Wait for its exit, Resize its terminal, Close
// its files.
//
// A Driver is safe for concurrent use by many goroutines, including several calls on
// the same task (e.g. Stop while other goroutines Wait): the library is thread-safe, and
// the only state a Driver keeps, the wait fds of its tasks, is behind a mutex.
package execdriver

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"unsafe"
)

// ABIVersion is the C ABI version (EXECDRIVER_ABI_VERSION) this package speaks; Open
// refuses a library with another one.
const ABIVersion = 1

// Driver is a loaded libexecdriver.so. Safe for concurrent use.
//
// The task table belongs to the loaded library, so Drivers opened on the same file in
// one process share their tasks; a task started by another process is reached only
// after Recover.
type Driver struct {
	free unsafe.Pointer
	ops  map[string]unsafe.Pointer // read-only after Open
	ver  string

	mu  sync.Mutex
	fds map[string]int // task id -> its wait fd, owned by the Driver (see waitfd.go)
}

var opNames = []string{"configure", "fingerprint", "start", "wait", "stop", "destroy",
	"inspect", "stats", "signal", "recover", "exec", "exec_wait", "exec_resize", "logs"}

// Open dlopens the library at path, checks its C ABI version and resolves every
// driver_<op>. The library is never unloaded (there is no Close): a Rust cdylib keeps
// threads and thread-locals alive, and its tasks' supervisors keep running anyway.
func Open(path string) (*Driver, error) {
	if path == "" {
		return nil, fmt.Errorf("execdriver: no library path (set EXECDRIVER_LIB?)")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.ed_open(cpath)
	if h == nil {
		return nil, fmt.Errorf("execdriver: dlopen(%s): %s", path, C.GoString(C.ed_dlerror()))
	}
	sym := func(name string) (unsafe.Pointer, error) {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		p := C.dlsym(h, cname)
		if p == nil {
			return nil, fmt.Errorf("execdriver: %s: symbol %s not found", path, name)
		}
		return p, nil
	}
	d := &Driver{ops: map[string]unsafe.Pointer{}, fds: map[string]int{}}
	var err error
	if d.free, err = sym("driver_free"); err != nil {
		return nil, err
	}
	abi, err := sym("driver_abi_version")
	if err != nil {
		return nil, err
	}
	if v := uint32(C.ed_abi(abi)); v != ABIVersion {
		return nil, fmt.Errorf("execdriver: %s has C ABI %d; this package speaks %d", path, v, ABIVersion)
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

// Version is the library's version (driver_version(), e.g. "0.1.0").
func (d *Driver) Version() string { return d.ver }

// Call is the low-level form of every operation: it calls driver_<op> (op is
// "configure", "start", "wait", …) with request (nil: a NULL request) and returns the
// response object. A failure is an *Error. ctx is checked before the call only; the
// call itself blocks as the library's operation does (see docs/api.md). The response
// is as the library sent it: a "wait_fd" in it is the caller's to close.
func (d *Driver) Call(ctx context.Context, op string, request json.RawMessage) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, ok := d.ops[op]
	if !ok {
		return nil, fmt.Errorf("execdriver: unknown operation %q", op)
	}
	var creq *C.char
	if request != nil {
		creq = C.CString(string(request))
		defer C.free(unsafe.Pointer(creq))
	}
	var resp *C.char
	st := Status(C.ed_call(f, creq, &resp))
	var out []byte
	if resp != nil {
		out = C.GoBytes(unsafe.Pointer(resp), C.int(C.strlen(resp)))
		C.ed_free(d.free, resp)
	}
	if st != StatusOK {
		return nil, newError(op, st, out)
	}
	return out, nil
}

// call marshals request (nil: NULL), calls op and decodes its response into out (nil:
// discarded).
func (d *Driver) call(ctx context.Context, op string, request interface{}, out interface{}) (json.RawMessage, error) {
	var req json.RawMessage
	if request != nil {
		var err error
		if req, err = marshalRequest(request); err != nil {
			return nil, err
		}
	}
	resp, err := d.Call(ctx, op, req)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			return resp, fmt.Errorf("execdriver: driver_%s: unreadable response %s: %w", op, resp, err)
		}
	}
	return resp, nil
}

// marshalRequest passes JSON through as it is and marshals anything else.
func marshalRequest(v interface{}) (json.RawMessage, error) {
	switch r := v.(type) {
	case json.RawMessage:
		return r, nil
	case []byte:
		return r, nil
	case string:
		return json.RawMessage(r), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("execdriver: encoding the request: %w", err)
	}
	return b, nil
}
