package apps

import (
	"context"
	"errors"
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
