package apps

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"moat/internal/config"
)

func TestRun(t *testing.T) {
	app := func(r config.Run) config.App { return config.App{Name: "gitea", Run: r} }
	tests := []struct {
		name   string
		run    config.Run
		action string
		exit   int
		out    string
		timed  bool
		err    error
	}{
		{"ok", config.Run{Status: "echo running; echo warn >&2"}, "status", 0, "running\nwarn\n", false, nil},
		{"fails", config.Run{Stop: "echo no such container; exit 3"}, "stop", 3, "no such container\n", false, nil},
		{"times out", config.Run{Restart: "echo begun; sleep 30", Timeout: "1s"}, "restart", -1, "begun\n", true, nil},
		{"leaves a child", config.Run{Start: "sleep 2 & echo started"}, "start", 0, "started\n", false, nil},
		{"no command", config.Run{}, "upgrade", 0, "", false, ErrNoCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res, err := Runner{}.Run(context.Background(), app(tc.run), tc.action)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if res.ExitCode != tc.exit || res.Output != tc.out || res.TimedOut != tc.timed {
				t.Errorf("%+v", res)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
	long, _ := Runner{}.Run(context.Background(), app(config.Run{Status: "head -c 100000 /dev/zero | tr '\\0' x; echo END"}), "status")
	if len(long.Output) > MaxOutput+len("…") || !strings.HasSuffix(long.Output, "xEND\n") || !strings.HasPrefix(long.Output, "…") {
		t.Errorf("long output: %d bytes, ends %q", len(long.Output), long.Output[len(long.Output)-10:])
	}
}

// TestInhibitor: while the host is protected, logind lists moat's
// shutdown inhibitor lock in block mode; off, it is gone.
func TestInhibitor(t *testing.T) {
	if ok, why := LogindRunning(); !ok {
		t.Skip("SKIPPED, the shutdown inhibitor is not tested here: " + why)
	}
	in := &Inhibitor{}
	if err := in.Set(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Set(false) })
	list, err := exec.Command("systemd-inhibit", "--list", "--no-pager").Output()
	if err != nil || !strings.Contains(string(list), "moat") || !strings.Contains(string(list), "block") {
		t.Errorf("systemd-inhibit --list: %v\n%s", err, list)
	}
	in.Set(false)
	if in.Held() {
		t.Error("the lock is still held after Set(false)")
	}
}
