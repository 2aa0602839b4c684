package api

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"moat/internal/audit"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/updates"
)

// TestUpdates: on a temp root, the audit finds updates off; enable
// writes moat's drop-ins (reboots off while the server is protected,
// and back on with the protection off), the audit then passes, and
// disable takes them back.
func TestUpdates(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/apt/apt.conf.d"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/unattended-upgrade"), []byte("#!/bin/sh\n"), 0o755)
	st := openStore(t, t.TempDir())
	st.Update(ctx, store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{Domain: "example.com", Protect: true}
		return nil
	})
	srv := &Server{Store: st, Log: slog.New(slog.DiscardHandler), Updates: updates.Host{Root: root}}
	c := Local(srv.Handler(), store.Actor{Who: "owner@example.com", From: "local"})
	check := func(want bool) {
		t.Helper()
		var rep audit.Report
		if err := c.Do(ctx, "GET", "/v1/audit", nil, &rep); err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(rep.Passed, "updates.off"); got != want {
			t.Errorf("updates.off passed: %v, want %v (%+v)", got, want, rep.Findings)
		}
	}
	check(false)
	if err := c.Do(ctx, "POST", "/v1/updates/enable", UpdatesRequest{RebootWindow: "2am"}, nil); statusOf(err) != 400 || !strings.Contains(err.Error(), "reboot_window") {
		t.Errorf("a bad window: %v", err)
	}
	var out UpdatesChange
	if err := c.Do(ctx, "POST", "/v1/updates/enable", UpdatesRequest{RebootWindow: "04:30"}, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Files) != 2 || !out.Status.Periodic || !out.Status.Security || out.Status.Reboot || out.Status.RebootTime != "04:30" {
		t.Errorf("enable on a protected server: %+v", out)
	}
	check(true)
	off := false
	if err := c.Do(ctx, "PATCH", "/v1/server", ServerPatch{Protect: &off}, nil); err != nil {
		t.Fatal(err)
	}
	var s updates.Status
	if err := c.Do(ctx, "GET", "/v1/updates", nil, &s); err != nil || !s.Reboot || s.RebootTime != "04:30" {
		t.Errorf("with the protection off: %+v %v", s, err)
	}
	if err := c.Do(ctx, "POST", "/v1/updates/disable", struct{}{}, &out); err != nil || len(out.Files) != 2 || out.Status.Enabled {
		t.Errorf("disable: %+v %v", out, err)
	}
	if es, _ := os.ReadDir(filepath.Join(root, "etc/apt/apt.conf.d")); len(es) != 0 {
		t.Errorf("disable left %v", es)
	}
}
