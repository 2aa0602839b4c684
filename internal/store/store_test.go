package store

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"moat/internal/config"
)

// crashChildEnv, when set to a store path, turns the test binary into the
// child of TestCrashSafety: it writes to that store until it is killed.
const (
	crashChildEnv = "MOAT_STORE_TEST_CRASH_CHILD"
	crashRunEnv   = "MOAT_STORE_TEST_CRASH_RUN"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		if err := crashChild(path, os.Getenv(crashRunEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var testActor = Actor{Who: "root via control socket", From: "unix"}

func openTest(t *testing.T) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "moat.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func app(name string, domains ...string) config.App {
	return config.App{Name: name, Domains: domains, Upstream: "http://127.0.0.1:3000"}
}

func addApp(a config.App) func(*config.State) error {
	return func(s *config.State) error {
		s.Apps = append(s.Apps, a)
		return nil
	}
}

func mustUpdate(t *testing.T, s Store, fn func(*config.State) error) Result {
	t.Helper()
	r, err := s.Update(context.Background(), testActor, false, fn)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return r
}

func mustCheck(t *testing.T, s *SQLite) {
	t.Helper()
	if err := s.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func mustActivity(t *testing.T, s Store, q Query) []Entry {
	t.Helper()
	es, err := s.Activity(context.Background(), q)
	if err != nil {
		t.Fatalf("Activity: %v", err)
	}
	return es
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	s, path := openTest(t)
	mustUpdate(t, s, addApp(app("web", "web.example.com"))) // so that -wal exists
	for _, c := range []struct {
		path string
		mode fs.FileMode
	}{
		{filepath.Dir(path), 0o700 | fs.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
		{path + "-shm", 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
	}
	mustCheck(t, s)
}

// TestPragmasOnEveryConnection holds several pooled connections at once and
// asks each for the settings the DSN promises.
func TestPragmasOnEveryConnection(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var conns []*sql.Conn
	for range 4 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		for _, p := range []struct{ pragma, want string }{
			{"journal_mode", "wal"},
			{"synchronous", "2"}, // FULL
			{"foreign_keys", "1"},
			{"busy_timeout", strconv.FormatInt(busyTimeout.Milliseconds(), 10)},
		} {
			var got string
			if err := c.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != p.want {
				t.Errorf("connection %d: PRAGMA %s = %s, want %s", i, p.pragma, got, p.want)
			}
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

func TestRoundTrip(t *testing.T) {
	want := config.State{
		Server: config.Server{
			Domain: "Box.Example.COM.", // normalized on the way in
			Email:  "admin@example.com",
			Listen: config.Listen{HTTP: ":8080", HTTPS: ":8443"},
			ACME: config.ACME{
				Directory:  config.LetsEncryptStaging,
				CARoots:    "/etc/moat/ca.pem",
				Challenges: []string{config.ChallengeTLSALPN01},
			},
			PublicIPs: []string{"203.0.113.7", "2001:db8::7"},
			Resolver:  "1.1.1.1:53",
			Notify:    config.Notify{Webhook: "https://hooks.example.com/moat"},
		},
		Apps: []config.App{
			{Name: "wiki", Domains: []string{"wiki.example.com"}, Upstream: "http://127.0.0.1:8080",
				Headers: map[string]string{"x-frame-options": "DENY", "Content-Security-Policy": ""}},
			{Name: "git", Domains: []string{"git.example.com", "Code.Example.com"}, Upstream: "https://10.0.0.2:3000"},
		},
	}
	s, path := openTest(t)
	ctx := context.Background()

	st, rev, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != 0 || !reflect.DeepEqual(st, config.State{}) {
		t.Fatalf("new store: revision %d, state %+v; want 0 and empty", rev, st)
	}

	r := mustUpdate(t, s, func(st *config.State) error { *st = want.Clone(); return nil })
	if r.Revision != 1 {
		t.Errorf("revision after first update = %d, want 1", r.Revision)
	}
	norm := want.Clone()
	norm.Normalize()

	check := func(s *SQLite, what string) {
		t.Helper()
		got, rev, err := s.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rev != 1 || !reflect.DeepEqual(got, norm) {
			t.Errorf("%s: revision %d, state\n%#v\nwant revision 1, state\n%#v", what, rev, got, norm)
		}
	}
	check(s, "same handle")

	// Applying the same state again is no change: no revision, no activity.
	before := mustActivity(t, s, Query{})
	r = mustUpdate(t, s, func(st *config.State) error { *st = want.Clone(); return nil })
	if len(r.Plan) != 0 || r.Revision != 1 {
		t.Errorf("re-applying the state: plan %v, revision %d; want no plan, revision 1", r.Plan, r.Revision)
	}
	if after := mustActivity(t, s, Query{}); len(after) != len(before) {
		t.Errorf("re-applying the state logged %d entries", len(after)-len(before))
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2, "reopened")
	mustCheck(t, s2)
}

var errRefused = errors.New("refused by fn")

func TestUpdateRefusedChangesNothing(t *testing.T) {
	tests := []struct {
		name      string
		fn        func(*config.State) error
		wantField string // a *config.FieldError for this field, or
		wantErr   error  // this error
	}{
		{
			name:      "domain of another app",
			fn:        addApp(app("blog", "blog.example.com", "Shop.Example.com")),
			wantField: "apps[1].domains[0]", // blog sorts first and takes the name
		},
		{
			name:      "upstream without scheme",
			fn:        addApp(config.App{Name: "api", Domains: []string{"api.example.com"}, Upstream: "127.0.0.1:3000"}),
			wantField: "apps[0].upstream",
		},
		{
			name:      "bad app name",
			fn:        addApp(app("Bad_Name", "bad.example.com")),
			wantField: "apps[0].name",
		},
		{
			name: "valid change after a bad one",
			fn: func(s *config.State) error {
				s.Server.Domain = "box.example.com"
				s.Apps[0].Upstream = "ftp://x"
				return nil
			},
			wantField: "apps[0].upstream",
		},
		{
			name:    "fn error",
			fn:      func(s *config.State) error { s.Apps = nil; return fmt.Errorf("wrapped: %w", errRefused) },
			wantErr: errRefused,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTest(t)
			ctx := context.Background()
			mustUpdate(t, s, addApp(app("shop", "shop.example.com")))
			wantState, wantRev, _ := s.State(ctx)
			wantLog := mustActivity(t, s, Query{})

			for _, dry := range []bool{true, false} {
				r, err := s.Update(ctx, testActor, dry, tt.fn)
				if err == nil {
					t.Fatalf("dry run %v: Update succeeded with plan %v, want an error", dry, r.Plan)
				}
				if tt.wantField != "" {
					var fe *config.FieldError
					if !errors.As(err, &fe) {
						t.Fatalf("dry run %v: error %q has no *config.FieldError", dry, err)
					}
					if !strings.Contains(err.Error(), tt.wantField+":") {
						t.Errorf("dry run %v: error %q does not name %s", dry, err, tt.wantField)
					}
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("dry run %v: error %q is not %q", dry, err, tt.wantErr)
				}
			}

			st, rev, err := s.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rev != wantRev || !reflect.DeepEqual(st, wantState) {
				t.Errorf("state changed: revision %d, %+v; want %d, %+v", rev, st, wantRev, wantState)
			}
			if got := mustActivity(t, s, Query{}); !reflect.DeepEqual(got, wantLog) {
				t.Errorf("activity changed: %+v", got)
			}
			mustCheck(t, s)
		})
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	mustUpdate(t, s, addApp(app("shop", "shop.example.com")))

	r, err := s.Update(ctx, testActor, true, func(st *config.State) error {
		st.Apps[0].Upstream = "http://127.0.0.1:4000"
		st.Apps = append(st.Apps, app("blog", "blog.example.com"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 1 {
		t.Errorf("dry run revision = %d, want the current 1", r.Revision)
	}
	var ops []string
	for _, st := range r.Plan {
		ops = append(ops, string(st.Op)+" "+st.Object)
	}
	if want := []string{"add app blog", "change app shop"}; !reflect.DeepEqual(ops, want) {
		t.Errorf("dry run plan = %q, want %q", ops, want)
	}

	st, rev, _ := s.State(ctx)
	if rev != 1 || len(st.Apps) != 1 || st.Apps[0].Upstream != "http://127.0.0.1:3000" {
		t.Errorf("dry run wrote: revision %d, apps %+v", rev, st.Apps)
	}
	if n := len(mustActivity(t, s, Query{})); n != 1 {
		t.Errorf("dry run logged: %d entries, want the 1 of the first update", n)
	}
	mustCheck(t, s)
}

func TestActivityPerStep(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	start := time.Now().UTC()

	// 1: server and two apps in one update.
	r := mustUpdate(t, s, func(st *config.State) error {
		st.Server.Domain = "box.example.com"
		st.Apps = []config.App{app("shop", "shop.example.com"), app("blog", "blog.example.com")}
		return nil
	})
	if len(r.Plan) != 3 {
		t.Fatalf("plan has %d steps, want 3: %v", len(r.Plan), r.Plan)
	}
	// 2: a domain moves from blog to shop, blog's upstream changes.
	mustUpdate(t, s, func(st *config.State) error {
		shop, _ := st.App("shop")
		blog, _ := st.App("blog")
		shop.Domains = append(shop.Domains, "blog.example.com")
		blog.Domains = []string{"news.example.com"}
		blog.Upstream = "http://127.0.0.1:4000"
		return nil
	})
	mustCheck(t, s)
	// 3: shop goes.
	mustUpdate(t, s, func(st *config.State) error {
		st.Apps = st.Apps[:1] // blog sorts first
		return nil
	})
	other := Actor{Who: "admin@example.com", From: "203.0.113.5"}
	if err := s.Record(ctx, Entry{Who: other.Who, From: other.From, Action: "cert.renew_failed", Target: "news.example.com", Detail: "acme: rate limited"}); err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC()

	got := mustActivity(t, s, Query{})
	type row struct{ action, target, detail string }
	want := []row{
		{"cert.renew_failed", "news.example.com", "acme: rate limited"},
		{"app.remove", "shop", ""},
		{"app.change", "shop", "domains: shop.example.com -> shop.example.com, blog.example.com"},
		{"app.change", "blog", "domains: blog.example.com -> news.example.com; upstream: http://127.0.0.1:3000 -> http://127.0.0.1:4000"},
		{"app.add", "shop", "domains: shop.example.com; name: shop; upstream: http://127.0.0.1:3000"},
		{"app.add", "blog", "domains: blog.example.com; name: blog; upstream: http://127.0.0.1:3000"},
		{"server.change", "server", "domain: box.example.com"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, e := range got {
		w := want[i]
		if e.Action != w.action || e.Target != w.target || e.Detail != w.detail {
			t.Errorf("entry %d = %s %s %q, want %s %s %q", i, e.Action, e.Target, e.Detail, w.action, w.target, w.detail)
		}
		if i > 0 && e.ID >= got[i-1].ID {
			t.Errorf("entry %d: ID %d not below the newer %d", i, e.ID, got[i-1].ID)
		}
		if e.At.Before(start) || e.At.After(end) || e.At.Location() != time.UTC {
			t.Errorf("entry %d: At %v not in UTC within [%v, %v]", i, e.At, start, end)
		}
		wantActor := testActor
		if i == 0 {
			wantActor = other
		}
		if e.Who != wantActor.Who || e.From != wantActor.From {
			t.Errorf("entry %d: by %q from %q, want %+v", i, e.Who, e.From, wantActor)
		}
		// Before is there for change and remove, After for add and change.
		wantBefore := strings.HasSuffix(e.Action, ".change") || strings.HasSuffix(e.Action, ".remove")
		wantAfter := strings.HasSuffix(e.Action, ".change") || strings.HasSuffix(e.Action, ".add")
		if (len(e.Before) > 0) != wantBefore || (len(e.After) > 0) != wantAfter {
			t.Errorf("entry %d %s: before %s, after %s", i, e.Action, e.Before, e.After)
		}
	}
	var before, after config.App
	if err := json.Unmarshal(got[3].Before, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got[3].After, &after); err != nil {
		t.Fatal(err)
	}
	if before.Upstream != "http://127.0.0.1:3000" || after.Upstream != "http://127.0.0.1:4000" || after.Domains[0] != "news.example.com" {
		t.Errorf("blog change: before %+v, after %+v", before, after)
	}
	if got[1].At.Equal(got[2].At) || !got[4].At.Equal(got[6].At) {
		t.Errorf("entries of one update should share their time, of different updates not: %v %v %v %v", got[1].At, got[2].At, got[4].At, got[6].At)
	}

	for _, q := range []struct {
		q    Query
		want []int // indexes into got
	}{
		{Query{Target: "shop"}, []int{1, 2, 4}},
		{Query{Target: "server"}, []int{6}},
		{Query{Target: "nothing"}, nil},
		{Query{Limit: 2}, []int{0, 1}},
		{Query{Before: got[2].ID, Limit: 2}, []int{3, 4}},
		{Query{Target: "blog", Before: got[3].ID}, []int{5}},
	} {
		es := mustActivity(t, s, q.q)
		var ids, wantIDs []int64
		for _, e := range es {
			ids = append(ids, e.ID)
		}
		for _, i := range q.want {
			wantIDs = append(wantIDs, got[i].ID)
		}
		if !reflect.DeepEqual(ids, wantIDs) {
			t.Errorf("Activity(%+v) = IDs %v, want %v", q.q, ids, wantIDs)
		}
	}

	for _, bad := range []Entry{
		{Action: "login.ok"},
		{Who: "x"},
		{Who: "x", Action: "y", After: json.RawMessage("{not json")},
	} {
		if err := s.Record(ctx, bad); err == nil {
			t.Errorf("Record(%+v) succeeded, want an error", bad)
		}
	}
	if _, err := s.Update(ctx, Actor{}, false, addApp(app("anon", "anon.example.com"))); err == nil {
		t.Error("Update without an actor succeeded")
	}
}

func TestDefaultLimit(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for i := range DefaultLimit + 5 {
		if err := s.Record(ctx, Entry{Who: "test", Action: "login.ok", Target: "u" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(mustActivity(t, s, Query{})); n != DefaultLimit {
		t.Errorf("Activity with no limit returned %d entries, want %d", n, DefaultLimit)
	}
}

// TestDatabaseEnforces goes around the store with a second connection: the
// activity log cannot be rewritten, and a domain cannot belong to two apps.
func TestDatabaseEnforces(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	mustUpdate(t, s, addApp(app("shop", "shop.example.com")))
	mustUpdate(t, s, addApp(app("blog", "blog.example.com")))
	logBefore := mustActivity(t, s, Query{})

	raw, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, c := range []struct{ sql, want string }{
		{"UPDATE activity SET who = 'someone else'", "append-only"},
		{"UPDATE activity SET detail = '' WHERE id = 1", "append-only"},
		{"DELETE FROM activity WHERE id = 1", "append-only"},
		{"DELETE FROM activity", "append-only"},
		{"INSERT INTO domains (domain, app) VALUES ('shop.example.com', 'blog')", "UNIQUE"},
		{"INSERT INTO domains (domain, app) VALUES ('x.example.com', 'nope')", "FOREIGN KEY"},
		{"INSERT INTO apps (name, spec) VALUES ('x', 'not json')", "CHECK"},
		{"INSERT INTO server (id, settings) VALUES (2, '{}')", "CHECK"},
	} {
		_, err := raw.ExecContext(ctx, c.sql)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one about %s", c.sql, err, c.want)
		}
	}
	if got := mustActivity(t, s, Query{}); !reflect.DeepEqual(got, logBefore) {
		t.Errorf("activity changed: %+v", got)
	}
	// Removing an app takes its domains along (ON DELETE CASCADE).
	mustUpdate(t, s, func(st *config.State) error { st.Apps = st.Apps[1:]; return nil }) // drop blog
	var n int
	if err := raw.QueryRowContext(ctx, "SELECT count(*) FROM domains WHERE app = 'blog'").Scan(&n); err != nil || n != 0 {
		t.Errorf("blog's domains after removing it: %d, %v", n, err)
	}
	mustCheck(t, s)

	// Check notices a domains table that disagrees with the apps' JSON.
	if _, err := raw.ExecContext(ctx, "DELETE FROM domains WHERE domain = 'shop.example.com'"); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err == nil || !strings.Contains(err.Error(), "app shop") {
		t.Errorf("Check after removing a domain row: %v, want a complaint about app shop", err)
	}
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	version := func(t *testing.T, path string) int {
		t.Helper()
		db, err := sql.Open("sqlite", dsn(path))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v int
		if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	t.Run("empty file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.db")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		mustCheck(t, s)
		mustUpdate(t, s, addApp(app("shop", "shop.example.com")))
		s.Close()
		if v := version(t, path); v != len(migrations) {
			t.Errorf("user_version = %d, want %d", v, len(migrations))
		}
	})

	t.Run("older store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.db")
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		mustUpdate(t, s, addApp(app("shop", "shop.example.com")))
		s.Close()

		// A later moat with one more migration keeps the data and
		// migrates the store.
		later := append(migrations[:len(migrations):len(migrations)], "CREATE TABLE later (x TEXT) STRICT; INSERT INTO later VALUES ('migrated');")
		s, err = openSQLite(ctx, path, later)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var x string
		if err := s.db.QueryRowContext(ctx, "SELECT x FROM later").Scan(&x); err != nil || x != "migrated" {
			t.Errorf("later migration: %q, %v", x, err)
		}
		st, rev, err := s.State(ctx)
		if err != nil || rev != 1 || len(st.Apps) != 1 {
			t.Errorf("state after migration: revision %d, apps %+v, %v", rev, st.Apps, err)
		}
		mustCheck(t, s)
		if v := version(t, path); v != len(later) {
			t.Errorf("user_version = %d, want %d", v, len(later))
		}

		// And this moat, which knows one migration less, refuses it.
		_, err = OpenSQLite(ctx, path)
		want := fmt.Sprintf("store %s has schema version %d, this moat knows up to %d: upgrade moat", path, len(later), len(migrations))
		if err == nil || err.Error() != want {
			t.Errorf("opening a newer store: %v, want %q", err, want)
		}
	})

	t.Run("newer store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.db")
		db, err := sql.Open("sqlite", dsn(path))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "PRAGMA user_version = 99"); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err = OpenSQLite(ctx, path)
		if err == nil || !strings.Contains(err.Error(), "schema version 99, this moat knows up to") || !strings.Contains(err.Error(), "upgrade moat") {
			t.Errorf("opening a newer store: %v", err)
		}
		if v := version(t, path); v != 99 {
			t.Errorf("refused store was changed: user_version %d", v)
		}
	})

	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.db")
		if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenSQLite(ctx, path)
		if err == nil || !strings.HasPrefix(err.Error(), "store: open "+path+": ") {
			t.Errorf("opening garbage: %v, want an error that names the file", err)
		}
	})
}

// TestConcurrentHandles writes through two handles on one file, as the
// daemon and a CLI do: no update may be lost, and revisions must be unique
// and grow.
func TestConcurrentHandles(t *testing.T) {
	const perHandle = 50
	_, path := openTest(t)
	ctx := context.Background()
	handles := make([]*SQLite, 2)
	for i := range handles {
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		handles[i] = s
	}

	revs := make([][]int64, len(handles))
	errs := make(chan error, len(handles))
	var wg sync.WaitGroup
	for h, s := range handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perHandle {
				name := fmt.Sprintf("h%d-app%d", h, i)
				r, err := s.Update(ctx, Actor{Who: "handle " + strconv.Itoa(h), From: "unix"}, false, addApp(app(name, name+".example.com")))
				if err != nil {
					errs <- fmt.Errorf("handle %d, update %d: %w", h, i, err)
					return
				}
				revs[h] = append(revs[h], r.Revision)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	seen := map[int64]bool{}
	for h, rs := range revs {
		for i, r := range rs {
			if i > 0 && r <= rs[i-1] {
				t.Errorf("handle %d: revision %d after %d", h, r, rs[i-1])
			}
			if seen[r] {
				t.Errorf("revision %d given twice", r)
			}
			seen[r] = true
		}
	}
	st, rev, err := handles[0].State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total := 2 * perHandle; rev != int64(total) || len(st.Apps) != total || len(seen) != total {
		t.Errorf("revision %d, %d apps, %d revisions seen; want %d of each", rev, len(st.Apps), len(seen), total)
	}
	if n := len(mustActivity(t, handles[1], Query{Limit: 1000})); n != 2*perHandle {
		t.Errorf("%d activity entries, want %d", n, 2*perHandle)
	}
	mustCheck(t, handles[1])
}

// TestCrashSafety kills a writer with SIGKILL in the middle of its work,
// again and again; every time the store must open, pass Check, and hold
// exactly the state its activity log describes.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills child processes")
	}
	path := filepath.Join(t.TempDir(), "data", "moat.db")
	ctx := context.Background()
	var lastRev int64
	for run := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashRunEnv+"="+strconv.Itoa(run))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the child writes, then let it write for a while.
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "writing\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("run %d: child did not start writing (%q, %v): %s", run, line, err, stderr.String())
		}
		time.Sleep(300 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child ended with %v, not by SIGKILL: %s", run, err, stderr.String())
		}

		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatalf("run %d: reopen after SIGKILL: %v", run, err)
		}
		mustCheck(t, s)
		rev := checkStateMatchesLog(t, s)
		t.Logf("run %d: killed at revision %d (+%d)", run, rev, rev-lastRev)
		if rev <= lastRev {
			t.Errorf("run %d: revision %d, not past %d: the child made no progress", run, rev, lastRev)
		}
		lastRev = rev
		s.Close()
	}
}

// checkStateMatchesLog replays the activity log and compares the result with
// the stored state. It returns the revision.
func checkStateMatchesLog(t *testing.T, s *SQLite) int64 {
	t.Helper()
	ctx := context.Background()
	st, rev, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := mustActivity(t, s, Query{Limit: 1 << 30})
	replayed := map[string]json.RawMessage{}
	added := map[string]bool{}
	steps := int64(0)
	for i := len(log) - 1; i >= 0; i-- { // oldest first
		e := log[i]
		switch e.Action {
		case "app.add":
			added[e.Target] = true
			replayed[e.Target] = e.After
		case "app.change":
			replayed[e.Target] = e.After
		case "app.remove":
			delete(replayed, e.Target)
		default:
			continue
		}
		steps++
	}
	// The child makes one step per update.
	if steps != rev {
		t.Errorf("revision %d, but the log has %d state changes", rev, steps)
	}
	if len(st.Apps) != len(replayed) {
		t.Errorf("state has %d apps, the log %d", len(st.Apps), len(replayed))
	}
	for _, a := range st.Apps {
		if !added[a.Name] {
			t.Errorf("app %s is in the state without an app.add entry", a.Name)
		}
		want, _ := json.Marshal(a)
		if got := replayed[a.Name]; !bytes.Equal(got, want) {
			t.Errorf("app %s: state %s, log %s", a.Name, want, got)
		}
	}
	return rev
}

// crashChild writes to the store as fast as it can until it is killed: adds,
// changes and removes, each its own update, and an event now and then.
func crashChild(path, run string) error {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		return err
	}
	actor := Actor{Who: "crash child " + run, From: "unix"}
	name := func(i int) string { return fmt.Sprintf("r%s-app%d", run, i) }
	for i := 0; ; i++ {
		if _, err := s.Update(ctx, actor, false, addApp(app(name(i), name(i)+".example.com"))); err != nil {
			return err
		}
		if i == 0 {
			fmt.Println("writing")
		}
		if i%3 == 2 {
			if _, err := s.Update(ctx, actor, false, func(st *config.State) error {
				a, _ := st.App(name(i))
				a.Upstream = fmt.Sprintf("http://127.0.0.1:%d", 4000+i)
				a.Domains = append(a.Domains, "www."+name(i)+".example.com")
				return nil
			}); err != nil {
				return err
			}
		}
		if i%4 == 3 {
			if _, err := s.Update(ctx, actor, false, func(st *config.State) error {
				st.Apps = slicesDelete(st.Apps, name(i-2))
				return nil
			}); err != nil {
				return err
			}
		}
		if i%10 == 0 {
			if err := s.Record(ctx, Entry{Who: actor.Who, From: actor.From, Action: "login.ok", Target: "root"}); err != nil {
				return err
			}
		}
	}
}

func slicesDelete(apps []config.App, name string) []config.App {
	out := apps[:0]
	for _, a := range apps {
		if a.Name != name {
			out = append(out, a)
		}
	}
	return out
}

func TestFirewallIsStored(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	rules := []config.FirewallRule{{Port: "22/tcp", Comment: "ssh"}, {Port: "5432/tcp", From: []string{"203.0.113.0/24"}}}
	if _, err := s.Update(ctx, testActor, false, func(st *config.State) error {
		st.Firewall.Rules = rules
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st, _, err := s2.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Firewall.Rules) != 2 || st.Firewall.Rules[1].From[0] != "203.0.113.0/24" || st.Firewall.Rules[0].Comment != "ssh" {
		t.Errorf("firewall after reopening: %+v", st.Firewall)
	}
	entries, err := s2.Activity(ctx, Query{Target: "firewall"})
	if err != nil || len(entries) != 1 || entries[0].Action != "firewall.change" {
		t.Errorf("activity %+v, %v; want one firewall.change", entries, err)
	}
}

// TestActivityFilters: the log is filtered by who, what and when, and
// paged back by ID.
func TestActivityFilters(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	entries := []Entry{
		{At: base, Who: "owner@example.com", Action: "firewall.apply", Target: "firewall"},
		{At: base.Add(500 * time.Millisecond), Who: "token deploy (tk_1) of owner@example.com", Action: "app.change", Target: "gitea"},
		{At: base.Add(time.Hour), Who: "guard", Action: "guard.ban", Target: "203.0.113.7/32"},
		{At: base.Add(2 * time.Hour), Who: "admin@example.com", Action: "firewall.confirm", Target: "firewall"},
		{At: base.Add(3 * time.Hour), Who: "guard", Action: "firewalls.odd", Target: "x"},
	}
	for _, e := range entries {
		if err := s.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		q    Query
		want []string // actions, newest first
	}{
		{"all", Query{}, []string{"firewalls.odd", "firewall.confirm", "guard.ban", "app.change", "firewall.apply"}},
		{"who, any case", Query{Who: "OWNER@"}, []string{"app.change", "firewall.apply"}},
		{"an object's actions", Query{Action: "firewall"}, []string{"firewall.confirm", "firewall.apply"}},
		{"one action", Query{Action: "guard.ban"}, []string{"guard.ban"}},
		{"since, inclusive, across fractions", Query{Since: base.Add(500 * time.Millisecond)}, []string{"firewalls.odd", "firewall.confirm", "guard.ban", "app.change"}},
		{"until, exclusive", Query{Until: base.Add(time.Hour)}, []string{"app.change", "firewall.apply"}},
		{"a window and a page", Query{Since: base, Until: base.Add(3 * time.Hour), Limit: 2}, []string{"firewall.confirm", "guard.ban"}},
		{"like '%' is no wildcard", Query{Who: "%"}, nil},
	}
	for _, tt := range tests {
		es, err := s.Activity(ctx, tt.q)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got []string
		for _, e := range es {
			got = append(got, e.Action)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	page, _ := s.Activity(ctx, Query{Limit: 2})
	older, _ := s.Activity(ctx, Query{Limit: 2, Before: page[len(page)-1].ID})
	if len(older) != 2 || older[0].Action != "guard.ban" {
		t.Errorf("the page before %d: %+v", page[len(page)-1].ID, older)
	}
}

// TestAudits: the audits' history returns the newest first and keeps
// KeepAudits.
func TestAudits(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for i := range KeepAudits + 3 {
		if err := s.AddAudit(ctx, Audit{At: at.Add(time.Duration(i) * time.Hour), Score: i % 101, Report: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Audits(ctx, 2)
	if err != nil || len(got) != 2 || string(got[0].Report) != fmt.Sprintf(`{"n":%d}`, KeepAudits+2) || !got[0].At.Equal(at.Add(time.Duration(KeepAudits+2)*time.Hour)) {
		t.Fatalf("the newest two: %+v %v", got, err)
	}
	all, _ := s.Audits(ctx, 10*KeepAudits)
	if len(all) != KeepAudits || string(all[len(all)-1].Report) != `{"n":3}` {
		t.Errorf("kept %d, the oldest %s", len(all), all[len(all)-1].Report)
	}
	if err := s.AddAudit(ctx, Audit{At: at, Report: json.RawMessage(`not json`)}); err == nil {
		t.Error("a report that is not JSON was kept")
	}
}
