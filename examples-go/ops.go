package execdriver

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"syscall"
	"time"
)

// waitSlice is the longest a Wait keeps a C thread in driver_wait before it looks at its
// context again: a blocked C call cannot be interrupted, so this bounds how late a
// cancelled Wait returns.
const waitSlice = 100 * time.Millisecond

// taskReq is a request naming a task, with the fields an operation adds.
type taskReq struct {
	TaskID    string   `json:"task_id"`
	TimeoutMS *int64   `json:"timeout_ms,omitempty"`
	Signal    string   `json:"signal,omitempty"`
	Force     bool     `json:"force,omitempty"`
	Purge     bool     `json:"purge,omitempty"`
	Command   string   `json:"command,omitempty"`
	Args      []string `json:"args,omitempty"`
}

func ms(d time.Duration) *int64 {
	v := int64((d + time.Millisecond - 1) / time.Millisecond) // rounded up: never 0 by truncation
	return &v
}

// Configure replaces the plugin configuration (docs/configuration.md; fields left out
// take their defaults) and returns the effective one. A nil config changes nothing and
// returns the current configuration.
func (d *Driver) Configure(ctx context.Context, config json.RawMessage) (json.RawMessage, error) {
	return d.Call(ctx, "configure", config)
}

// Fingerprint reports the host's health and attributes (driver.exec, driver.raw_exec, …).
func (d *Driver) Fingerprint(ctx context.Context) (*Fingerprint, error) {
	var f Fingerprint
	if _, err := d.call(ctx, "fingerprint", nil, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// Start starts a task and returns once its command runs. task is a TaskConfig, or the
// request's JSON (json.RawMessage, []byte or string), or any value that encoding/json
// turns into it. Start blocks while artifacts are fetched; ctx is checked before.
//
// A TaskConfig's start asks for a wait fd unless its NoWaitFD is set; so does JSON that
// says "wait_fd": true. The Driver keeps that fd (Wait and WaitFor block on it in Go's
// poller) and closes it when a Wait has returned the task's exit, or at Destroy.
func (d *Driver) Start(ctx context.Context, task interface{}) (*Started, error) {
	req := task
	switch t := task.(type) {
	case TaskConfig:
		req = startReq{t, !t.NoWaitFD}
	case *TaskConfig:
		if t != nil {
			req = startReq{*t, !t.NoWaitFD}
		}
	}
	var s Started
	raw, err := d.call(ctx, "start", req, &s)
	var fd struct {
		WaitFD *int `json:"wait_fd"`
	}
	if raw != nil && json.Unmarshal(raw, &fd) == nil && fd.WaitFD != nil {
		if err != nil || s.TaskID == "" {
			syscall.Close(*fd.WaitFD) // an unreadable response: no task to keep it for
		} else {
			d.adoptWaitFD(s.TaskID, *fd.WaitFD)
		}
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// startReq is a TaskConfig with the wait_fd it cannot say itself.
type startReq struct {
	TaskConfig
	WaitFD bool `json:"wait_fd,omitempty"`
}

// Wait waits for the task to exit and returns its exit result; every waiter gets the
// same one, until Destroy. When ctx is done first it returns ctx.Err() (at once on a
// task with a wait fd, else within about waitSlice), leaving the task running, with no
// goroutine or C call left behind.
func (d *Driver) Wait(ctx context.Context, taskID string) (*ExitResult, error) {
	return d.wait(ctx, taskID, time.Time{})
}

// WaitFor is Wait for at most timeout: an error matching ErrTimeout when the task is
// still running then (0 only polls). ctx ends it earlier, as it does Wait.
func (d *Driver) WaitFor(ctx context.Context, taskID string, timeout time.Duration) (*ExitResult, error) {
	return d.wait(ctx, taskID, time.Now().Add(timeout))
}

// wait waits until the task exits, ctx is done or limit (zero: none) passes: on the
// task's wait fd when the Driver holds one, else by driver_wait in slices. Once it has
// the exit (or the task is gone) the wait fd is no longer needed and is closed.
func (d *Driver) wait(ctx context.Context, taskID string, limit time.Time) (*ExitResult, error) {
	end, endIsCtx := limit, false
	if dl, ok := ctx.Deadline(); ok && (limit.IsZero() || dl.Before(limit)) {
		end, endIsCtx = dl, true
	}
	r, err := d.waitOnFD(ctx, taskID, end, endIsCtx)
	if err == errNoPoller {
		r, err = d.waitSliced(ctx, taskID, end, endIsCtx)
	}
	if err == nil || errors.Is(err, ErrNotFound) {
		d.dropWaitFD(taskID)
	}
	return r, err
}

// waitOnFD waits in the runtime poller on a duplicate of the task's wait fd, then takes
// the exit with a driver_wait that does not block. errNoPoller: there is no wait fd to
// wait on (or no time left to wait), and nothing was done.
func (d *Driver) waitOnFD(ctx context.Context, taskID string, end time.Time, endIsCtx bool) (*ExitResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !end.IsZero() && !time.Now().Before(end) {
		return nil, errNoPoller
	}
	f := d.dupWaitFD(taskID)
	if f == nil {
		return nil, errNoPoller
	}
	switch err := awaitReadable(ctx, f, end); {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded) && endIsCtx:
		// The deadline is ctx's: its timer is about to close Done.
		<-ctx.Done()
		return nil, ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		// WaitFor's limit: the poll below says ErrTimeout, or has an exit that came
		// just now.
	default:
		return nil, err // ctx.Err(), or errNoPoller
	}
	return d.pollExit(ctx, taskID)
}

// pollExit is driver_wait with timeout_ms 0.
func (d *Driver) pollExit(ctx context.Context, taskID string) (*ExitResult, error) {
	var r ExitResult
	zero := int64(0)
	raw, err := d.call(ctx, "wait", taskReq{TaskID: taskID, TimeoutMS: &zero}, &r)
	if err != nil {
		return nil, err
	}
	r.Raw = raw
	return &r, nil
}

// nextSlice is how long the next sliced wait may block: waitSlice, or what is left until
// end (zero: no end), never negative; last when that reaches end.
func nextSlice(end time.Time) (slice time.Duration, last bool) {
	slice = waitSlice
	if !end.IsZero() {
		if rest := time.Until(end); rest <= slice {
			slice, last = rest, true
		}
	}
	if slice < 0 {
		slice = 0
	}
	return slice, last
}

// waitSliced calls driver_wait in slices of at most waitSlice until the task exits, ctx
// is done or end (zero: none) passes.
func (d *Driver) waitSliced(ctx context.Context, taskID string, end time.Time, endIsCtx bool) (*ExitResult, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slice, last := nextSlice(end)
		var r ExitResult
		raw, err := d.call(ctx, "wait", taskReq{TaskID: taskID, TimeoutMS: ms(slice)}, &r)
		if err == nil {
			r.Raw = raw
			return &r, nil
		}
		if !errors.Is(err, ErrTimeout) {
			return nil, err
		}
		if !last {
			continue
		}
		if endIsCtx {
			// The deadline has passed (the slice was rounded up to it); its timer is
			// about to close Done.
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, err // WaitFor's limit
	}
}

// Stop sends the task its stop signal, waits up to the grace period, then kills every
// process of the task, and returns the exit result once none remains. It blocks until
// then (up to the grace period plus the final kill); ctx is checked before. Stopping an
// exited task returns its result.
func (d *Driver) Stop(ctx context.Context, taskID string, opts *StopOptions) (*ExitResult, error) {
	req := taskReq{TaskID: taskID}
	if opts != nil {
		req.Signal = opts.Signal
		switch {
		case opts.Timeout < 0:
			req.TimeoutMS = ms(0)
		case opts.Timeout > 0:
			req.TimeoutMS = ms(opts.Timeout)
		}
	}
	var r ExitResult
	raw, err := d.call(ctx, "stop", req, &r)
	if err != nil {
		return nil, err
	}
	r.Raw = raw
	return &r, nil
}

// Destroy releases the task: its cgroups, its state and its id. A running task needs
// opts.Force (it is then SIGKILLed); opts.Purge also removes its task dir. The task's
// wait fd, if the Driver holds one, is closed.
func (d *Driver) Destroy(ctx context.Context, taskID string, opts DestroyOptions) error {
	_, err := d.call(ctx, "destroy", taskReq{TaskID: taskID, Force: opts.Force, Purge: opts.Purge}, nil)
	if err == nil || errors.Is(err, ErrNotFound) {
		d.dropWaitFD(taskID)
	}
	return err
}

// Inspect describes the task (state, pid, exit, handle, artifact progress; docs/api.md,
// "driver_inspect").
func (d *Driver) Inspect(ctx context.Context, taskID string) (json.RawMessage, error) {
	return d.call(ctx, "inspect", taskReq{TaskID: taskID}, nil)
}

// Stats returns the task's resource usage (docs/api.md, "driver_stats").
func (d *Driver) Stats(ctx context.Context, taskID string) (json.RawMessage, error) {
	return d.call(ctx, "stats", taskReq{TaskID: taskID}, nil)
}

// Signal sends sig ("SIGHUP", "hup", "1", "SIGRTMIN+3") to the task's command.
func (d *Driver) Signal(ctx context.Context, taskID, sig string) error {
	_, err := d.call(ctx, "signal", taskReq{TaskID: taskID, Signal: sig}, nil)
	return err
}

// Exec runs a command inside the running task's isolation and returns its output. It
// blocks until the command ends or its timeout kills it; ctx is checked before.
// ExecSession is the interactive form: a terminal or pipes, and no cap on the output.
func (d *Driver) Exec(ctx context.Context, taskID string, req ExecRequest) (*ExecResult, error) {
	r := taskReq{TaskID: taskID, Command: req.Command, Args: req.Args}
	if req.Timeout > 0 {
		r.TimeoutMS = ms(req.Timeout)
	}
	var out ExecResult
	if _, err := d.call(ctx, "exec", r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Recover registers in this process the task of a handle from Start (Started.Handle),
// e.g. after the host restarted while the task ran on. It asks for no wait fd: the
// library's would be a pidfd of the task's supervisor, which for a task this process
// started may be kept as an idle spare and then never becomes readable; Wait on a
// recovered task calls driver_wait in slices.
func (d *Driver) Recover(ctx context.Context, handle json.RawMessage) (*Recovered, error) {
	var r Recovered
	if _, err := d.call(ctx, "recover", struct {
		Handle json.RawMessage `json:"handle"`
	}{handle}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
