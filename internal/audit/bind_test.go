package audit

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"moat/internal/testenv"
)

// TestBindFixes: real PostgreSQL and Redis bound to every address in a
// namespace are found with their names and the file and setting that
// binds them; done as the fix says (the setting changed, the server
// restarted), they listen on loopback only and the check passes.
func TestBindFixes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the namespace and the databases need root")
	}
	ns := testenv.NewNetns(t)
	pg := testenv.StartPostgres(t, testenv.DatabaseOptions{Netns: ns, Listen: "*"})
	rd := testenv.StartRedis(t, testenv.DatabaseOptions{Netns: ns, Listen: "* -::*"})

	audit := func() (Report, []Listener) {
		t.Helper()
		ls, err := Sockets("/proc", strconv.Itoa(pg.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		return Run(Host{Listeners: ls, Firewall: active()}, testNow), ls
	}
	r, _ := audit()
	fixes := map[string]string{}
	for _, f := range r.Findings {
		if f.Check == "listen.wildcard" {
			fixes[f.Subject] = f.Finding + " — " + f.Fix
		}
	}
	for _, w := range []struct{ subject, has string }{
		{"0.0.0.0:5432/tcp", "postgres listens on 0.0.0.0:5432"},
		{"[::]:5432/tcp", "postgresql.conf (listen_addresses = 'localhost')"},
		{"0.0.0.0:6379/tcp", "redis-server listens on 0.0.0.0:6379"},
		{"[::]:6379/tcp", "redis.conf (bind 127.0.0.1 ::1)"},
	} {
		if !strings.Contains(fixes[w.subject], w.has) {
			t.Errorf("%s: %q, want it to say %q", w.subject, fixes[w.subject], w.has)
		}
	}
	if t.Failed() {
		t.Fatalf("findings: %+v", r.Findings)
	}

	// Done as the findings say.
	setting(t, pg.Config, regexp.MustCompile(`(?m)^listen_addresses = .*$`), "listen_addresses = 'localhost'")
	setting(t, rd.Config, regexp.MustCompile(`(?m)^bind .*$`), "bind 127.0.0.1 ::1")
	pg.Restart(t)
	rd.Restart(t)

	r, ls := audit()
	if !slices.Contains(r.Passed, "listen.wildcard") || !slices.Contains(r.Passed, "listen.exposed") {
		t.Errorf("after the fixes: findings %+v", r.Findings)
	}
	bound := map[uint16][]string{}
	for _, l := range ls {
		if l.Scope != Loopback {
			t.Errorf("after the fixes, %s listens on %s (%s)", l.Who(), l.Addr, l.Scope)
		}
		bound[l.Addr.Port()] = append(bound[l.Addr.Port()], l.Addr.String())
	}
	for _, port := range []uint16{5432, 6379} {
		if len(bound[port]) == 0 {
			t.Errorf("after the fixes, nothing listens on port %d", port)
		}
	}
}

// setting replaces what re matches in the file at path with line.
func setting(t *testing.T, path string, re *regexp.Regexp, line string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !re.Match(b) {
		t.Fatalf("%s has no %s", path, re)
	}
	if err := os.WriteFile(path, re.ReplaceAll(b, []byte(line)), 0o644); err != nil {
		t.Fatal(err)
	}
}
