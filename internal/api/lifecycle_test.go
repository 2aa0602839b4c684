package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/notify"
	"moat/internal/store"
)

// alertRuntime is a daemon that applies everything and keeps the alerts.
type alertRuntime struct {
	mu     sync.Mutex
	alerts []notify.Alert
}

func (r *alertRuntime) Check(context.Context, config.State) error { return nil }
func (r *alertRuntime) Apply(context.Context, config.State) error { return nil }
func (r *alertRuntime) Certificates() []certs.Status              { return nil }
func (r *alertRuntime) Firewall() Firewall                        { return nil }
func (r *alertRuntime) Guard() Guard                              { return nil }
func (r *alertRuntime) SSH() SSH                                  { return nil }
func (r *alertRuntime) Mail() Mail                                { return nil }
func (r *alertRuntime) Notify(_ context.Context, a notify.Alert) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.alerts = append(r.alerts, a)
	return nil
}

func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// TestTerminationProtection: while an app is protected, stop, restart,
// upgrade and remove are refused and the app (a real process) keeps
// running; turning the protection off is logged and alerted, and then
// stop stops it. A name typed back wrong removes nothing. While the host
// is protected, a reboot is refused and the reboot hook never runs.
func TestTerminationProtection(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	proc := exec.Command("sleep", "300")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { proc.Wait(); close(exited) }()
	t.Cleanup(func() { proc.Process.Kill(); <-exited })
	alive := func() bool {
		select {
		case <-exited:
			return false
		default:
			return syscall.Kill(proc.Process.Pid, 0) == nil
		}
	}
	pid := proc.Process.Pid
	kill := fmt.Sprintf("kill %d", pid)
	if _, err := st.Update(ctx, store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{Domain: "example.com", Protect: true}
		s.Apps = []config.App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000", Protect: true,
			Run: config.Run{Stop: kill, Restart: kill, Upgrade: kill, Status: fmt.Sprintf("kill -0 %d && echo running", pid)}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rt := &alertRuntime{}
	var powered []string
	srv := &Server{Store: st, Runtime: rt, Log: slog.New(slog.DiscardHandler), Power: func(_ context.Context, action string) error {
		powered = append(powered, action)
		return nil
	}}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "203.0.113.7"})

	for _, action := range []string{"stop", "restart", "upgrade"} {
		err := c.Do(ctx, "POST", "/v1/apps/gitea/"+action, nil, nil)
		if statusOf(err) != 409 || !strings.Contains(err.Error(), "protected against termination") || !strings.Contains(err.Error(), "--protect=false") {
			t.Errorf("%s while protected: %v", action, err)
		}
	}
	if err := c.Do(ctx, "DELETE", "/v1/apps/gitea?confirm=gitea", nil, nil); statusOf(err) != 409 {
		t.Errorf("remove while protected: %v", err)
	}
	if !alive() {
		t.Fatal("the protected app's process is gone")
	}
	var res struct {
		ExitCode int    `json:"exit_code"`
		Output   string `json:"output"`
	}
	if err := c.Do(ctx, "POST", "/v1/apps/gitea/status", nil, &res); err != nil || res.ExitCode != 0 || res.Output != "running\n" {
		t.Errorf("status while protected: %+v %v", res, err)
	}
	if err := c.Do(ctx, "POST", "/v1/apps/gitea/start", nil, nil); statusOf(err) != 400 || !strings.Contains(err.Error(), "run.start") {
		t.Errorf("start with no command: %v", err)
	}

	off := false
	if err := c.Do(ctx, "PATCH", "/v1/apps/gitea", AppPatch{Protect: &off}, nil); err != nil {
		t.Fatal(err)
	}
	if len(rt.alerts) != 1 || rt.alerts[0].Kind != "protection.off" || !strings.Contains(rt.alerts[0].Message, "owner@example.com") {
		t.Errorf("alerts after turning protection off: %+v", rt.alerts)
	}
	if err := c.Do(ctx, "DELETE", "/v1/apps/gitea?confirm=gite", nil, nil); statusOf(err) != 400 || !strings.Contains(err.Error(), "confirm") {
		t.Errorf("remove with the name typed wrong: %v", err)
	}
	if s, _, _ := st.State(ctx); len(s.Apps) != 1 {
		t.Fatal("a wrong name removed the app")
	}
	if err := c.Do(ctx, "POST", "/v1/apps/gitea/stop", nil, &res); err != nil || res.ExitCode != 0 {
		t.Fatalf("stop once unprotected: %+v %v", res, err)
	}
	<-exited
	es, _ := st.Activity(ctx, store.Query{Target: "gitea"})
	var acts []string
	for _, e := range es {
		acts = append(acts, e.Action)
	}
	for _, want := range []string{"app.stop_refused", "protection.off", "app.stop"} {
		if !strings.Contains(strings.Join(acts, " "), want) {
			t.Errorf("activity lacks %s: %v", want, acts)
		}
	}

	// The host.
	if err := c.Do(ctx, "POST", "/v1/host/reboot", HostRequest{Confirm: "reboot"}, nil); statusOf(err) != 409 || !strings.Contains(err.Error(), "moat host protect off") {
		t.Errorf("reboot while protected: %v", err)
	}
	if len(powered) != 0 {
		t.Fatalf("the reboot hook ran while the host was protected: %v", powered)
	}
	if err := c.Do(ctx, "PATCH", "/v1/server", ServerPatch{Protect: &off}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/v1/host/reboot", HostRequest{Confirm: "yes"}, nil); statusOf(err) != 400 {
		t.Errorf("reboot without the word: %v", err)
	}
	if err := c.Do(ctx, "POST", "/v1/host/reboot", HostRequest{Confirm: "reboot"}, nil); err != nil || len(powered) != 1 || powered[0] != "reboot" {
		t.Errorf("reboot unprotected: %v %v", err, powered)
	}
	if len(rt.alerts) != 2 {
		t.Errorf("turning the host's protection off raised %d alerts in all, want 2", len(rt.alerts))
	}
}
