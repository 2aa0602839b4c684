package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/daemon"
	"moat/internal/store"
	"moat/internal/testenv"
)

// daemonProc is `moat serve` running as a child process.
type daemonProc struct {
	cmd  *exec.Cmd
	out  testenv.SyncBuffer
	done chan struct{}
	err  error // from Wait, once done is closed
}

// startDaemon runs moat serve and waits until its control socket answers.
// The child is killed when the test ends, whatever happened.
func startDaemon(t *testing.T, bin, dataDir, socket string) *daemonProc {
	t.Helper()
	return startDaemonUnder(t, nil, bin, dataDir, socket)
}

// startDaemonUnder is startDaemon with the daemon run by a wrapper
// command (wrap, then the daemon's command line), and extra flags after
// the daemon's own (--firewall=true, given a wrapper that puts it in a
// namespace of the test's).
func startDaemonUnder(t *testing.T, wrap []string, bin, dataDir, socket string, extra ...string) *daemonProc {
	t.Helper()
	p := &daemonProc{done: make(chan struct{})}
	// Never the host's firewall or sshd: no test may change them.
	args := append(append([]string(nil), wrap...), bin, "serve", "--data-dir", dataDir, "--socket", socket, "--log-level", "warn", "--firewall=false", "--ssh=false")
	args = append(args, extra...)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	// Dies with the test process too, should that be killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("moat serve (pid %d) output:\n%s", p.cmd.Process.Pid, p.out.String())
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("moat serve exited before it answered: %v\n%s", p.err, p.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var st api.StatusResponse
		c, err := api.DialControl(ctx, socket)
		if err == nil {
			err = c.Do(ctx, "GET", "/v1/status", nil, &st)
		}
		cancel()
		if err == nil && st.Daemon {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("moat serve does not answer on %s: %v\n%s", socket, err, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seedStore writes the store a daemon will start from in dataDir.
func seedStore(t *testing.T, dataDir string, change func(s *config.State)) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, daemon.StorePath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Update(ctx, store.Actor{Who: "test", From: "test"}, false, func(s *config.State) error { change(s); return nil }); err != nil {
		t.Fatal(err)
	}
}

// kill sends SIGKILL, unless the process has ended, and waits for it.
func (p *daemonProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// burster is one client changing its own apps (named w<id>-<n>) in a loop,
// keeping what the daemon acknowledged.
type burster struct {
	id   int
	rng  *rand.Rand
	next int
	// present is every app of this burster whose last acknowledged call
	// left it in place, with its acknowledged upstream.
	present map[string]string
	// unsure is the app whose call was under way at the kill: it may or
	// may not have been committed.
	unsure string
	acks   int
	maxRev int64
}

// run changes apps until a call fails; failing is expected only once the
// daemon is killed, and never with an answer from the daemon.
func (b *burster) run(t *testing.T, c *api.Client, killed *atomic.Bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var (
			name, method, path string
			body               any
			upstream           string
		)
		names := slices.Sorted(maps.Keys(b.present))
		b.next++
		upstream = fmt.Sprintf("http://127.0.0.1:%d", 10000+b.next)
		switch r := b.rng.IntN(4); {
		case len(names) == 0 || r < 2:
			name = fmt.Sprintf("w%d-%d", b.id, b.next)
			method, path = "POST", "/v1/apps"
			body = config.App{Name: name, Domains: []string{name + ".moat.test"}, Upstream: upstream}
		case r == 2:
			name = names[b.rng.IntN(len(names))]
			method, path = "PATCH", "/v1/apps/"+url.PathEscape(name)
			body = api.AppPatch{Upstream: &upstream}
		default:
			name = names[b.rng.IntN(len(names))]
			method, path = "DELETE", "/v1/apps/"+url.PathEscape(name)+"?confirm="+url.QueryEscape(name)
		}
		b.unsure = name
		var res api.ChangeResponse
		if err := c.Do(ctx, method, path, body, &res); err != nil {
			var ae *api.APIError
			if errors.As(err, &ae) || !killed.Load() {
				t.Errorf("burster %d: %s %s before the kill: %v", b.id, method, path, err)
			}
			return
		}
		if res.Warning != "" {
			t.Errorf("burster %d: %s %s: %s", b.id, method, path, res.Warning)
		}
		if method == "DELETE" {
			delete(b.present, name)
		} else {
			b.present[name] = upstream
		}
		b.unsure = ""
		b.acks++
		b.maxRev = max(b.maxRev, res.Revision)
	}
}

// TestKill9DuringBurst kills the daemon with SIGKILL while four clients
// change apps as fast as it answers, three times on the same data dir: the
// daemon must start again each time (over its stale socket), the store
// must pass its own consistency check, and hold every acknowledged change.
func TestKill9DuringBurst(t *testing.T) {
	bin := testenv.MoatBinary(t)
	dataDir := t.TempDir()
	socket := filepath.Join(dataDir, "moat.sock")

	// Loopback only: the edge on free loopback ports; the DNS pre-check
	// asks a closed loopback port, so no domain ever passes it and the
	// ACME directory (also a closed loopback port) is never contacted.
	ctx := context.Background()
	seedStore(t, dataDir, func(s *config.State) {
		s.Server = config.Server{
			Domain: "moat.test", Email: "admin@moat.test",
			Listen:    config.Listen{HTTP: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), HTTPS: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Admin: "127.0.0.1:0"},
			ACME:      config.ACME{Directory: fmt.Sprintf("https://127.0.0.1:%d/directory", testenv.FreePort(t))},
			PublicIPs: []string{"127.0.0.1"},
			Resolver:  fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)),
		}
		s.Mail.Listen = []string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
	})

	bursters := make([]*burster, 4)
	for i := range bursters {
		bursters[i] = &burster{id: i, rng: rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))), present: map[string]string{}}
	}
	for round := 1; round <= 3; round++ {
		p := startDaemon(t, bin, dataDir, socket)
		var killed atomic.Bool
		var wg sync.WaitGroup
		acksBefore := 0
		for _, b := range bursters {
			acksBefore += b.acks
			c, err := api.DialControl(ctx, socket)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() { b.run(t, c, &killed) })
		}
		time.Sleep(300 * time.Millisecond)
		killed.Store(true)
		p.kill()
		wg.Wait()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: moat serve ended with %v before the kill\n%s", round, p.err, p.out.String())
		}
		if strings.Contains(p.out.String(), "DATA RACE") {
			t.Errorf("round %d: the daemon reported a data race:\n%s", round, p.out.String())
		}
		if t.Failed() {
			t.FailNow()
		}
		acks := -acksBefore
		for _, b := range bursters {
			acks += b.acks
		}
		checkStore(t, round, dataDir, bursters, acks)
	}

	// Once more, and stopped gracefully: it serves what the store holds,
	// exits cleanly and takes its socket with it.
	p := startDaemon(t, bin, dataDir, socket)
	c, err := api.DialControl(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	var apps []config.App
	if err := c.Do(ctx, "GET", "/v1/apps", nil, &apps); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, b := range bursters {
		maps.Copy(want, b.present)
	}
	got := map[string]string{}
	for _, a := range apps {
		got[a.Name] = a.Upstream
	}
	if !maps.Equal(got, want) {
		t.Errorf("the restarted daemon serves %d apps, the acknowledged changes leave %d", len(got), len(want))
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("moat serve did not stop within 15s of SIGTERM")
	}
	if p.err != nil {
		t.Errorf("moat serve after SIGTERM: %v\n%s", p.err, p.out.String())
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a gracefully stopped daemon left its socket behind: %v", err)
	}
}

// checkStore opens the killed daemon's store: it must pass Check and hold
// exactly the apps the acknowledged calls left, except for each burster's
// one call that was under way, which may have gone either way.
func checkStore(t *testing.T, round int, dataDir string, bursters []*burster, acks int) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, daemon.StorePath(dataDir))
	if err != nil {
		t.Fatalf("round %d: open the store after the kill: %v", round, err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	state, rev, err := st.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range state.Apps {
		got[a.Name] = a.Upstream
	}
	owner := map[string]*burster{}
	for _, b := range bursters {
		if b.maxRev > rev {
			t.Errorf("round %d: burster %d was acknowledged revision %d, the store is at %d", round, b.id, b.maxRev, rev)
		}
		for name, up := range b.present {
			owner[name] = b
			if name == b.unsure {
				continue
			}
			if g, ok := got[name]; !ok {
				t.Errorf("round %d: app %s was acknowledged and not removed, but is not in the store", round, name)
			} else if g != up {
				t.Errorf("round %d: app %s has upstream %s in the store, the last acknowledged change set %s", round, name, g, up)
			}
		}
	}
	for name := range got {
		b := owner[name]
		if b == nil {
			for _, bb := range bursters {
				if bb.unsure == name {
					b = bb
				}
			}
		}
		if b == nil {
			t.Errorf("round %d: app %s is in the store, but no acknowledged call leaves it there", round, name)
		}
	}
	t.Logf("round %d: %d changes acknowledged before the kill; the store is at revision %d with %d apps and passes Check", round, acks, rev, len(got))
	if acks == 0 {
		t.Errorf("round %d: no change was acknowledged in 300ms: the burst did not happen", round)
	}
	// The calls under way at the kill went one way or the other: the store
	// says which, for the next round.
	for _, b := range bursters {
		if b.unsure == "" {
			continue
		}
		if up, ok := got[b.unsure]; ok {
			b.present[b.unsure] = up
		} else {
			delete(b.present, b.unsure)
		}
		b.unsure = ""
	}
}
