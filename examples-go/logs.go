package execdriver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// logFollow is the longest one driver_logs call of a following reader waits for more
// output: it bounds how long a C thread is held and how late a cancelled context or a
// Close is seen.
const logFollow = 500 * time.Millisecond

// Logs returns a reader of the task's stdout or stderr (opts.Stream) as one stream
// across its rotated files, from opts.Offset (docs/api.md, "driver_logs"). Read returns
// the exact bytes; io.EOF at the stream's current end, or with opts.Follow once the
// task has ended and everything was read. A done ctx ends a Read with ctx.Err() within
// about 500 ms; so does Close, from any goroutine (Read then returns os.ErrClosed).
// Bytes rotated out before they were read are skipped: they are gone. A failure of the
// library (e.g. ErrNotFound) is returned by Read, and by every Read after it.
func (d *Driver) Logs(ctx context.Context, taskID string, opts LogOptions) io.ReadCloser {
	origin := opts.Origin
	if origin == "" {
		origin = "start"
	}
	return &logReader{d: d, ctx: ctx, taskID: taskID, opts: opts, offset: opts.Offset, origin: origin}
}

type logReader struct {
	d      *Driver
	ctx    context.Context
	taskID string
	opts   LogOptions
	offset int64
	origin string
	buf    []byte
	eof    bool
	err    error
	closed atomic.Bool
}

type logsReq struct {
	TaskID     string `json:"task_id"`
	Stream     string `json:"stream,omitempty"`
	Offset     int64  `json:"offset"`
	Origin     string `json:"origin"`
	LimitBytes int    `json:"limit_bytes,omitempty"`
	FollowMS   int64  `json:"follow_ms"`
}

type logsResp struct {
	Data   string `json:"data"`
	Start  int64  `json:"start"`
	Offset int64  `json:"offset"`
	EOF    bool   `json:"eof"`
}

func (r *logReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		switch {
		case r.closed.Load():
			return 0, os.ErrClosed
		case r.err != nil:
			return 0, r.err
		case r.eof:
			return 0, io.EOF
		}
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		if err := r.fetch(); err != nil {
			if !errors.Is(err, r.ctx.Err()) {
				r.err = err
			}
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fetch makes one driver_logs call.
func (r *logReader) fetch() error {
	req := logsReq{TaskID: r.taskID, Stream: r.opts.Stream, Offset: r.offset, Origin: r.origin, LimitBytes: r.opts.Limit}
	if r.opts.Follow {
		req.FollowMS = logFollow.Milliseconds()
	}
	var resp logsResp
	if _, err := r.d.call(r.ctx, "logs", req, &resp); err != nil {
		return err
	}
	data, err := base64.StdEncoding.DecodeString(resp.Data)
	if err != nil {
		return fmt.Errorf("execdriver: driver_logs: bad base64: %w", err)
	}
	r.buf, r.offset, r.origin = data, resp.Offset, "start"
	switch {
	case resp.EOF:
		r.eof = true
	case len(data) > 0:
	case !r.opts.Follow:
		r.eof = true // the current end
	default:
		// The library's eof needs it to know the task ended, which it learns from the
		// exit report (a wait) or the supervisor's end; a supervisor kept for reuse
		// ends only ~10 s later. A poll of the exit makes it known now, so the next
		// call can say eof.
		_, _ = r.d.pollExit(r.ctx, r.taskID) // ErrTimeout while it runs
	}
	return nil
}

// Close ends the reader: a Read in progress returns os.ErrClosed within about 500 ms,
// later ones at once. It never fails.
func (r *logReader) Close() error {
	r.closed.Store(true)
	return nil
}
