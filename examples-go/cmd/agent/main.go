// Command agent is a small Go host for libexecdriver.so, on the execdriver package.
//
//	agent [-lib PATH] [-purge] JOB.json...
//
// It starts every job file (a driver_start request: docs/api.md, docs/task.md), waits on
// each task from its own goroutine, and prints each wait result as one JSON line
// prefixed by the job file: `JOB.json: {"task_id":...,"exit_code":0,...}`. Finished
// tasks are destroyed (-purge also removes their directories). On SIGINT or SIGTERM it
// stops its running tasks with driver_stop (each task's kill_signal and
// kill_timeout_ms), prints their results and exits with 128+signal.
//
// The library comes from -lib, else $EXECDRIVER_LIB. It runs the supervisor named by
// $EXECDRIVER_SHIM, else the execdriver-shim next to itself, else the one of an install
// (<libdir>/../libexec/execdriver/), and keeps state under $EXECDRIVER_DATA_DIR.
//
// Exit status: 0 when every task exited 0; 1 when one did not; 2 when the agent could not
// run (bad usage, library not loadable, a job file the library rejects: the library's
// error code and field are printed); 128+N after signal N.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"execdriver"
)

const exitAgent = 2

type task struct {
	job string // the job file, as given
	id  string
}

type result struct {
	t   *task
	res *execdriver.ExitResult
	err error
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	libPath := fs.String("lib", os.Getenv("EXECDRIVER_LIB"), "libexecdriver.so to load (default $EXECDRIVER_LIB)")
	purge := fs.Bool("purge", false, "remove each task's directory when destroying it")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: agent [-lib PATH] [-purge] JOB.json...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitAgent
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitAgent
	}
	if *libPath == "" {
		fmt.Fprintln(stderr, "agent: no library: pass -lib PATH or set EXECDRIVER_LIB")
		return exitAgent
	}

	// Read every job file before starting anything.
	jobs := make([]string, fs.NArg())
	for i, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "agent: %v\n", err)
			return exitAgent
		}
		jobs[i] = string(b)
	}

	d, err := execdriver.Open(*libPath)
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exitAgent
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var out sync.Mutex // one line at a time
	say := func(w io.Writer, format string, a ...interface{}) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(w, format+"\n", a...)
	}

	// Nothing cancels it: on a signal the tasks are stopped, which ends their waits.
	ctx := context.Background()
	results := make(chan result)
	running := map[*task]bool{}
	var caught os.Signal
	startFailed := false

	for i, path := range fs.Args() {
		select {
		case caught = <-sigs:
		default:
		}
		if caught != nil {
			break
		}
		started, err := d.Start(ctx, jobs[i])
		if err != nil {
			say(stderr, "agent: %s: %v", path, err)
			startFailed = true
			break
		}
		t := &task{job: path, id: started.TaskID}
		running[t] = true
		go func() {
			res, err := d.Wait(ctx, t.id)
			results <- result{t, res, err}
		}()
	}

	stopAll := func() {
		for t := range running {
			t := t
			go func() {
				// nil: the task's own kill_signal and kill_timeout_ms.
				if _, err := d.Stop(ctx, t.id, nil); err != nil {
					say(stderr, "agent: %s: %v", t.job, err)
				}
			}()
		}
	}
	if caught != nil || startFailed {
		stopAll()
	}

	failed := false
	for len(running) > 0 {
		select {
		case s := <-sigs:
			if caught == nil {
				caught = s
				say(stderr, "agent: %v: stopping %d task(s)", s, len(running))
				stopAll()
			}
		case r := <-results:
			delete(running, r.t)
			if r.err != nil {
				say(stderr, "agent: %s: %v", r.t.job, r.err)
				failed = true
				continue
			}
			say(stdout, "%s: %s", r.t.job, r.res.Raw)
			if r.res.ExitCode != 0 || r.res.Err != "" {
				failed = true
			}
			if err := d.Destroy(ctx, r.t.id, execdriver.DestroyOptions{Force: true, Purge: *purge}); err != nil {
				say(stderr, "agent: %s: %v", r.t.job, err)
			}
		}
	}

	switch {
	case startFailed:
		return exitAgent
	case caught != nil:
		if s, ok := caught.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return 1
	case failed:
		return 1
	}
	return 0
}
