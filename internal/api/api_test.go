package api

import (
	"context"
	"log/slog"
	"moat/internal/notify"
	"path/filepath"
	"slices"
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
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
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
