package updates

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"moat/internal/testenv"
)

// root is a temp root with apt's configuration directory, Debian's own
// 20auto-upgrades (which turns the runs off), and unattended-upgrades
// when installed.
func root(t *testing.T, installed bool) Host {
	t.Helper()
	if _, err := exec.LookPath("apt-config"); err != nil {
		t.Fatal("apt-config is missing (Debian package apt)")
	}
	r := t.TempDir()
	os.MkdirAll(filepath.Join(r, "etc/apt/apt.conf.d"), 0o755)
	os.WriteFile(filepath.Join(r, "etc/apt/apt.conf.d/20auto-upgrades"), []byte("APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"0\";\n"), 0o644)
	os.WriteFile(filepath.Join(r, "etc/apt/apt.conf.d/50unattended-upgrades"), []byte("Unattended-Upgrade::Automatic-Reboot \"false\";\n"), 0o644)
	if installed {
		os.MkdirAll(filepath.Join(r, "usr/bin"), 0o755)
		os.WriteFile(filepath.Join(r, "usr/bin/unattended-upgrade"), []byte("#!/bin/sh\n"), 0o755)
	}
	return Host{Root: r, Systemctl: func(context.Context, ...string) error { t.Error("systemctl ran under a temp root"); return nil }}
}

// TestEnableDisable: enable writes exactly moat's two drop-ins, apt reads
// back the security origins, the daily runs and the reboot window (over
// Debian's own files), and disable leaves the tree as it was.
func TestEnableDisable(t *testing.T) {
	ctx := context.Background()
	h := root(t, true)
	before := testenv.TreeHash(t, h.Root)
	entries := func() []string {
		es, _ := os.ReadDir(h.confDir())
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}
	written, err := h.Enable(ctx, Options{RebootWindow: "03:30"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(h.confDir(), PeriodicFile), filepath.Join(h.confDir(), UnattendedFile)}; !slices.Equal(written, want) {
		t.Errorf("written %v, want %v", written, want)
	}
	if got := entries(); !slices.Equal(got, []string{"20auto-upgrades", PeriodicFile, "50unattended-upgrades", UnattendedFile}) {
		t.Errorf("apt.conf.d holds %v", got)
	}
	s, err := h.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Installed || !s.Enabled || !s.Periodic || !s.Security || !s.Reboot || s.RebootTime != "03:30" || s.RebootWithUsers {
		t.Errorf("as apt reads it: %+v", s)
	}
	if !slices.Contains(s.Origins, Origins[0]) {
		t.Errorf("origins: %v", s.Origins)
	}

	// The server's termination protection turns reboots off, the window kept.
	if err := h.Refresh(Options{NoReboot: true}); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.Read(ctx); s.Reboot || s.RebootTime != "03:30" {
		t.Errorf("after a refresh with the protection on: %+v", s)
	}

	// What the last run did, and a reboot an update asked for.
	os.MkdirAll(filepath.Join(h.Root, "var/run"), 0o755)
	os.WriteFile(filepath.Join(h.Root, "var/run/reboot-required"), []byte("*** System restart required ***\n"), 0o644)
	os.WriteFile(filepath.Join(h.Root, "var/run/reboot-required.pkgs"), []byte("linux-image-6.1.0-28-amd64\nlibc6\n"), 0o644)
	os.MkdirAll(filepath.Join(h.Root, "var/log/unattended-upgrades"), 0o755)
	os.WriteFile(filepath.Join(h.Root, "var/log/unattended-upgrades/unattended-upgrades.log"), []byte(
		"2026-12-06 06:12:01,101 INFO Starting unattended upgrades script\n"+
			"2026-12-06 06:12:04,333 INFO Packages that will be upgraded: libc6 openssl\n"+
			"2026-12-06 06:13:10,901 INFO All upgrades installed\n"), 0o644)
	s, _ = h.Read(ctx)
	if !s.RebootRequired || !slices.Equal(s.RebootPackages, []string{"linux-image-6.1.0-28-amd64", "libc6"}) ||
		s.LastRun.Format("2006-01-02 15:04:05") != "2026-12-06 06:13:10" || !slices.Equal(s.LastInstalled, []string{"libc6", "openssl"}) {
		t.Errorf("the last run and the reboot: %+v", s)
	}
	for _, p := range []string{"var/run/reboot-required", "var/run/reboot-required.pkgs", "var/log/unattended-upgrades/unattended-upgrades.log"} {
		os.Remove(filepath.Join(h.Root, p))
	}
	os.Remove(filepath.Join(h.Root, "var/log/unattended-upgrades"))
	os.Remove(filepath.Join(h.Root, "var/log"))
	os.Remove(filepath.Join(h.Root, "var/run"))
	os.Remove(filepath.Join(h.Root, "var"))

	removed, err := h.Disable()
	if err != nil || len(removed) != 2 {
		t.Fatalf("disable: %v %v", removed, err)
	}
	if after := testenv.TreeHash(t, h.Root); after != before {
		t.Errorf("disable left the tree changed: %v", entries())
	}
	if s, _ := h.Read(ctx); s.Enabled || s.Periodic || s.Reboot {
		t.Errorf("after disable apt reads %+v", s)
	}
	if again, err := h.Disable(); err != nil || len(again) != 0 {
		t.Errorf("disable again: %v %v", again, err)
	}
}

func TestEnableRefuses(t *testing.T) {
	ctx := context.Background()
	if _, err := root(t, false).Enable(ctx, Options{}); !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "--install") {
		t.Errorf("without unattended-upgrades: %v", err)
	}
	h := root(t, true)
	if _, err := h.Enable(ctx, Options{RebootWindow: "2am"}); err == nil || !strings.Contains(err.Error(), "HH:MM") {
		t.Errorf("a bad window: %v", err)
	}
	if es, _ := os.ReadDir(h.confDir()); len(es) != 2 {
		t.Errorf("a refused enable wrote files: %v", es)
	}
}

func TestKernels(t *testing.T) {
	h := root(t, true)
	os.MkdirAll(filepath.Join(h.Root, "proc/sys/kernel"), 0o755)
	os.WriteFile(filepath.Join(h.Root, "proc/sys/kernel/osrelease"), []byte("6.1.0-9-amd64\n"), 0o644)
	os.MkdirAll(filepath.Join(h.Root, "boot"), 0o755)
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-28-amd64", "6.1.0-10-amd64"} {
		os.WriteFile(filepath.Join(h.Root, "boot", "vmlinuz-"+v), nil, 0o644)
	}
	s, err := h.Read(context.Background())
	if err != nil || s.KernelRunning != "6.1.0-9-amd64" || s.KernelInstalled != "6.1.0-28-amd64" {
		t.Errorf("kernels: %q, %q, %v", s.KernelRunning, s.KernelInstalled, err)
	}
}
