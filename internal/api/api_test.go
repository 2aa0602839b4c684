package api

import (
	"context"
	"log/slog"
	"moat/internal/notify"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/store"
)

// holdFirstApply is a Runtime whose first Apply waits for release, so a
// test can stall one change between the store and the running daemon.
type holdFirstApply struct {
	entered, release chan struct{}

	mu      sync.Mutex
	calls   int
	applied [][]string // the app names of each applied state, in order
}

func (r *holdFirstApply) Check(context.Context, config.State) error  { return nil }
func (r *holdFirstApply) Certificates() []certs.Status               { return nil }
func (r *holdFirstApply) Firewall() Firewall                         { return nil }
func (r *holdFirstApply) Guard() Guard                               { return nil }
func (r *holdFirstApply) SSH() SSH                                   { return nil }
func (r *holdFirstApply) Mail() Mail                                 { return nil }
func (r *holdFirstApply) Notify(context.Context, notify.Alert) error { return nil }

func (r *holdFirstApply) Apply(_ context.Context, s config.State) error {
	r.mu.Lock()
	n := r.calls
	r.calls++
	r.mu.Unlock()
	if n == 0 {
		close(r.entered)
		<-r.release
	}
	var names []string
	for _, a := range s.Apps {
		names = append(names, a.Name)
	}
	r.mu.Lock()
	r.applied = append(r.applied, names)
	r.mu.Unlock()
	return nil
}

func (r *holdFirstApply) appliedSoFar() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.applied)
}

// TestOlderChangeIsNotAppliedLast: two changes stored one after the other
// reach the runtime in the other order; the daemon must end up serving
// the newer state, not the one that happened to finish last.
func TestOlderChangeIsNotAppliedLast(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	rt := &holdFirstApply{entered: make(chan struct{}), release: make(chan struct{})}
	srv := &Server{Store: st, Runtime: rt, Log: slog.New(slog.DiscardHandler)}
	c := Local(srv.Handler(), store.Actor{Who: "test", From: "test"})

	add := func(name string, done chan<- error) {
		a := config.App{Name: name, Domains: []string{name + ".example.com"}, Upstream: "http://127.0.0.1:3000"}
		done <- c.Do(ctx, "POST", "/v1/apps", a, &ChangeResponse{})
	}
	aDone, bDone := make(chan error, 1), make(chan error, 1)
	go add("a", aDone) // stored as revision 1, then stalls in Apply
	<-rt.entered
	go add("b", bDone) // stored as revision 2
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, rev, err := st.State(ctx); err != nil {
			t.Fatal(err)
		} else if rev == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second change was not stored while the first one's apply stalled")
		}
		time.Sleep(time.Millisecond)
	}
	// Give the second change time to reach the runtime, if it can.
	time.Sleep(100 * time.Millisecond)
	close(rt.release)
	for _, done := range []chan error{aDone, bDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	applied := rt.appliedSoFar()
	if len(applied) == 0 || !slices.Equal(applied[len(applied)-1], []string{"a", "b"}) {
		t.Errorf("states applied, in order: %v; the last must be the newest, [a b]", applied)
	}
}

// TestPatchAppLimitAndCache: an app's rate limit and cache change by
// PATCH, a bad one is refused by field, and GET /v1/config shows the
// result as moat.yaml next to the firewall's ruleset.
func TestPatchAppLimitAndCache(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	c := Local((&Server{Store: st, Log: slog.New(slog.DiscardHandler)}).Handler(), store.Actor{Who: "test", From: "test"})
	a := config.App{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000"}
	if err := c.Do(ctx, "POST", "/v1/apps", a, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/rules", RuleRequest{Port: "22/tcp", From: []string{"203.0.113.7"}}, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		patch   AppPatch
		refused string // the field a refusal names; "" when it is taken
	}{
		{"limit", AppPatch{RateLimit: &config.RateLimit{Requests: 20, Per: "second"}}, ""},
		{"cache off", AppPatch{Cache: &config.Cache{TTL: "0s"}}, ""},
		{"bad limit", AppPatch{RateLimit: &config.RateLimit{Requests: -1}}, "rate_limit.requests"},
		{"bad cache", AppPatch{Cache: &config.Cache{TTL: "soon"}}, "cache.ttl"},
	}
	for _, tt := range tests {
		err := c.Do(ctx, "PATCH", "/v1/apps/gitea", tt.patch, nil)
		if tt.refused == "" && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)) {
			t.Errorf("%s: %v, want a refusal naming %s", tt.name, err, tt.refused)
		}
	}
	var got config.App
	if err := c.Do(ctx, "GET", "/v1/apps/gitea", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.RateLimit.Requests != 20 || got.RateLimit.Per != "second" || got.Cache.TTL != "0s" {
		t.Errorf("app after the patches: rate limit %+v, cache %+v", got.RateLimit, got.Cache)
	}
	var eff EffectiveConfig
	if err := c.Do(ctx, "GET", "/v1/config", nil, &eff); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ttl: 0s", "requests: 20"} {
		if !strings.Contains(eff.Edge, want) {
			t.Errorf("edge config lacks %q:\n%s", want, eff.Edge)
		}
	}
	if !strings.Contains(eff.Firewall, "table inet moat {") || !strings.Contains(eff.Firewall, "203.0.113.7") {
		t.Errorf("firewall config is not the rendered ruleset:\n%s", eff.Firewall)
	}
	if !strings.Contains(eff.SSHD, "does not manage sshd") {
		t.Errorf("sshd without a daemon: %q", eff.SSHD)
	}
}

// openStore is a store in dir, closed when the test ends.
func openStore(t *testing.T, dir string) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
