// Package apps runs an app's lifecycle commands (start, stop, restart,
// upgrade, remove, status) the way the owner wrote them in moat.yaml:
// through the shell, bounded by the app's timeout, with their output
// kept for the activity log.
package apps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"moat/internal/config"
)

// MaxOutput is how much of a command's output is kept: its last bytes.
const MaxOutput = 64 << 10

// Result is what one lifecycle command did.
type Result struct {
	Action   string `json:"action"`
	Command  string `json:"command"`
	ExitCode int    `json:"exit_code"`
	// Output is the command's standard output and error, interleaved,
	// its last MaxOutput bytes.
	Output   string `json:"output"`
	Duration string `json:"duration"`
	// TimedOut says that the command was killed at the app's timeout.
	TimedOut bool `json:"timed_out,omitempty"`
}

// OK reports whether the command succeeded.
func (r Result) OK() bool { return r.ExitCode == 0 && !r.TimedOut }

// ErrNoCommand refuses an action the app has no command for.
var ErrNoCommand = errors.New("no command")

// Runner runs lifecycle commands.
type Runner struct {
	// Shell runs a command line; /bin/sh when empty.
	Shell string
}

// Run runs the app's command for action, bounded by its timeout (and
// ctx).
func (rn Runner) Run(ctx context.Context, a config.App, action string) (Result, error) {
	line := a.Command(action)
	res := Result{Action: action, Command: line}
	if line == "" {
		return res, fmt.Errorf("app %s: %s: %w", a.Name, action, ErrNoCommand)
	}
	shell := rn.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	ctx, cancel := context.WithTimeout(ctx, a.Run.TimeoutDuration())
	defer cancel()
	cmd := exec.CommandContext(ctx, shell, "-c", line)
	// Its own process group, so that a timeout kills what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out := &tail{max: MaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// A command that leaves children holding its output (a daemon it
	// started) must not keep moat waiting past the timeout.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	res.Duration = time.Since(start).Round(time.Millisecond).String()
	res.Output = out.String()
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		res.TimedOut, res.ExitCode = true, -1
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay):
		// It finished; a child of its own still holds the output.
	case err != nil:
		return res, fmt.Errorf("app %s: %s: %w", a.Name, action, err)
	}
	return res, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
	cut bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
		t.cut = true
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return "…" + t.buf.String()
	}
	return t.buf.String()
}
