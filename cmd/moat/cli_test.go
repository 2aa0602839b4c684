package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cli runs moat commands in this process against a store in a temp dir.
// The socket path names a file that does not exist, so no daemon answers
// and every command runs the API handlers on the store directly.
type cli struct {
	t    *testing.T
	dir  string
	sock string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	dir := t.TempDir()
	return &cli{t: t, dir: dir, sock: filepath.Join(dir, "no-daemon.sock")}
}

// run executes one command with stdin and returns what it printed and its
// error, the text main prints after "moat: ".
func (c *cli) run(stdin string, args ...string) (string, error) {
	c.t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--data-dir", c.dir, "--socket", c.sock}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String() + errOut.String(), err
}

// ok runs a command that must succeed.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, err := c.run("", args...)
	if err != nil {
		c.t.Fatalf("moat %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// refused runs a command that must fail with an error holding each of
// want.
func (c *cli) refused(args []string, want ...string) {
	c.t.Helper()
	out, err := c.run("", args...)
	if err == nil {
		c.t.Errorf("moat %s succeeded:\n%s", strings.Join(args, " "), out)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			c.t.Errorf("moat %s: %v\nlacks %q", strings.Join(args, " "), err, w)
		}
	}
}

// file writes a file in the temp dir and returns its path.
func (c *cli) file(name, content string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func TestBadInputIsRefusedWithItsFix(t *testing.T) {
	type tc struct {
		name  string
		stdin string
		args  func(c *cli) []string
		want  []string // in the error: the field, the value, the problem, the fix
	}
	args := func(a ...string) func(*cli) []string { return func(*cli) []string { return a } }
	applyFile := func(content string) func(*cli) []string {
		return func(c *cli) []string { return []string{"apply", "-f", c.file("moat.yaml", content)} }
	}
	up := "http://127.0.0.1:8080"
	cases := []tc{
		{
			name: "app add: bad host name",
			args: args("app", "add", "web", "--domain", "bad_host.example.com", "--upstream", up),
			want: []string{"domains[0]", `"bad_host.example.com"`, "is not a valid host name", "use a name like app.example.com"},
		},
		{
			name: "app add: IP address as domain",
			args: args("app", "add", "web", "--domain", "192.0.2.10", "--upstream", up),
			want: []string{"domains[0]", `"192.0.2.10"`, "is an IP address", "use a domain name that resolves to this server"},
		},
		{
			name: "app add: wildcard",
			args: args("app", "add", "web", "--domain", "*.example.com", "--upstream", up),
			want: []string{"domains[0]", `"*.example.com"`, "is a wildcard", "list each name"},
		},
		{
			name: "app add: upstream without scheme",
			args: args("app", "add", "web", "--domain", "web.example.com", "--upstream", "127.0.0.1:8080"),
			want: []string{"upstream", `"127.0.0.1:8080"`, "add the scheme: http://127.0.0.1:8080"},
		},
		{
			name: "app add: upstream host:port without scheme",
			args: args("app", "add", "web", "--domain", "web.example.com", "--upstream", "localhost:8080"),
			want: []string{"upstream", `"localhost:8080"`, "does not start with http://", "add the scheme: http://localhost:8080"},
		},
		{
			// "aaa" sorts before "gitea": the refusal must still be about
			// the new app's domain, naming the app that has it.
			name: "app add: domain of an existing app, new app sorts first",
			args: args("app", "add", "aaa", "--domain", "git.example.com", "--upstream", up),
			want: []string{"domains[0]", `"git.example.com"`, "is already used by app gitea", "take it from gitea first"},
		},
		{
			name: "app add: domain of an existing app, new app sorts last",
			args: args("app", "add", "zzz", "--domain", "git.example.com", "--upstream", up),
			want: []string{"domains[0]", `"git.example.com"`, "is already used by app gitea", "take it from gitea first"},
		},
		{
			name: "app add: domain of an existing app, spelt differently",
			args: args("app", "add", "web", "--domain", "Git.Example.COM.", "--upstream", up),
			want: []string{"domains[0]", `"git.example.com"`, "is already used by app gitea", "take it from gitea first"},
		},
		{
			name: "app add: domain of the server",
			args: args("app", "add", "web", "--domain", "moat.example.com", "--upstream", up),
			want: []string{"domains[0]", `"moat.example.com"`, "is already used by server.domain", "routes to one app only"},
		},
		{
			name: "app set: domain of another app",
			args: args("app", "set", "grafana", "--domain", "git.example.com"),
			want: []string{"domains[0]", `"git.example.com"`, "is already used by app gitea", "take it from gitea first"},
		},
		{
			name: "app add: name taken",
			args: args("app", "add", "gitea", "--domain", "new.example.com", "--upstream", up),
			want: []string{"name", `"gitea"`, "is already an app", "moat app set gitea"},
		},
		{
			name: "app add: bad name",
			args: args("app", "add", "Bad_Name", "--domain", "web.example.com", "--upstream", up),
			want: []string{"name", `"Bad_Name"`, "is not a valid app name", "lowercase letters, digits and hyphens"},
		},
		{
			name: "app add: no domain",
			args: args("app", "add", "web", "--upstream", up),
			want: []string{"domains", `""`, "is empty", "--domain app.example.com"},
		},
		{
			name: "app add: header without =",
			args: args("app", "add", "web", "--domain", "web.example.com", "--upstream", up, "--header", "X-Frame-Options"),
			want: []string{"--header", `"X-Frame-Options"`, "NAME=VALUE", "X-Frame-Options=DENY"},
		},
		{
			name: "app set: header without =",
			args: args("app", "set", "gitea", "--header", "DENY"),
			want: []string{"--header", `"DENY"`, "NAME=VALUE"},
		},
		{
			name: "app set: unknown app",
			args: args("app", "set", "nope", "--upstream", up),
			want: []string{`"nope"`, "no app named", "moat app list"},
		},
		{
			name: "app set: bad upstream",
			args: args("app", "set", "gitea", "--upstream", "ftp://127.0.0.1:21"),
			want: []string{"upstream", `"ftp://127.0.0.1:21"`, "does not start with http://", "like http://127.0.0.1:3000"},
		},
		{
			name:  "app remove: the name typed back wrong",
			args:  args("app", "remove", "gitea"),
			stdin: "gitee\n",
			want:  []string{`"gitee" is not the app's name, gitea`},
		},
		{
			name: "app remove: --confirm with another name",
			args: args("app", "remove", "gitea", "--confirm", "grafana"),
			want: []string{`"grafana" is not the app's name, gitea`},
		},
		{
			name: "init: bad email",
			args: args("init", "--email", "not-an-email"),
			want: []string{"server.email", `"not-an-email"`, "is not an email address", "admin@example.com"},
		},
		{
			name: "init: no flags",
			args: args("init"),
			want: []string{"--domain", "--email", "moat init --domain moat.example.com"},
		},
		{
			name: "apply: unknown key",
			args: applyFile("server:\n  domain: moat.example.com\napps:\n  - name: gitea\n    domains: [git.example.com]\n    upstrem: http://127.0.0.1:3000\n"),
			want: []string{"moat.yaml: refused, nothing was changed", "apps[0].upstrem", `"upstrem"`, "line 6", "correct its spelling", "upstream"},
		},
		{
			name: "apply: bad YAML",
			args: applyFile("apps:\n  - name: gitea\n\tdomains: [git.example.com]\n"),
			want: []string{"moat.yaml: refused, nothing was changed", "line 2", "tab character", "fix the YAML syntax"},
		},
		{
			name: "apply: duplicate domains",
			args: applyFile("apps:\n  - name: web\n    domains: [www.example.com]\n    upstream: http://127.0.0.1:1\n  - name: api\n    domains: [api.example.com, WWW.example.com]\n    upstream: http://127.0.0.1:2\n"),
			want: []string{"apps[1].domains[1]", `"www.example.com"`, "is already used by app web", "remove it from one of them"},
		},
		{
			name: "apply: every problem at once",
			args: applyFile("server:\n  email: nope\napps:\n  - name: web\n    domains: ['*.example.com']\n    upstream: 127.0.0.1:1\n"),
			want: []string{"server.email", `"nope"`, "apps[0].domains[0]", `"*.example.com"`, "apps[0].upstream", "http://127.0.0.1:1"},
		},
		{
			name:  "apply: empty standard input",
			stdin: "\n",
			args:  args("apply", "-f", "-"),
			want:  []string{"standard input is empty", "nothing was changed", "server: {}"},
		},
		{
			name: "apply: no file",
			args: args("apply"),
			want: []string{"moat apply -f moat.yaml", "-f -"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t)
			c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
			c.ok("app", "add", "gitea", "--domain", "git.example.com", "--upstream", "http://127.0.0.1:3000")
			c.ok("app", "add", "grafana", "--domain", "grafana.example.com", "--upstream", "http://127.0.0.1:3001")
			before := c.ok("export")
			activity := c.ok("activity", "--limit", "1000")

			a := tc.args(c)
			out, err := c.run(tc.stdin, a...)
			if err == nil {
				t.Fatalf("moat %s: no error; printed:\n%s", strings.Join(a, " "), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("moat %s: error lacks %q:\n%v", strings.Join(a, " "), w, err)
				}
			}
			if after := c.ok("export"); after != before {
				t.Errorf("the refused command changed the state:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if after := c.ok("activity", "--limit", "1000"); after != activity {
				t.Errorf("the refused command wrote the activity log:\nbefore:\n%s\nafter:\n%s", activity, after)
			}
		})
	}
}

func TestExportApplyRoundTrip(t *testing.T) {
	c := newCLI(t)
	c.ok("init", "--domain", "moat.example.com", "--email", "admin@example.com")
	c.ok("app", "add", "gitea", "--domain", "git.example.com", "--upstream", "http://127.0.0.1:3000",
		"--header", "X-Frame-Options=DENY", "--header", "content-security-policy=default-src 'self'; img-src 'self' data:")
	c.ok("app", "add", "grafana", "--domain", "grafana.example.com", "--domain", "metrics.example.com",
		"--upstream", "http://127.0.0.1:3001", "--header", "X-Frame-Options=", "--header", "X-Robots-Tag=noindex, nofollow")
	exported := c.ok("export")
	// Header names come back canonical, an empty value (remove the
	// default) stays distinct from an absent one.
	for _, w := range []string{"Content-Security-Policy: 'default-src ''self''; img-src ''self'' data:'", `X-Frame-Options: ""`, "X-Robots-Tag: noindex, nofollow", "metrics.example.com"} {
		if !strings.Contains(exported, w) {
			t.Errorf("export lacks %q:\n%s", w, exported)
		}
	}
	activity := c.ok("activity", "--limit", "1000")

	out, err := c.run(exported, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("moat export | moat apply -f -: %v\n%s", err, out)
	}
	if !strings.Contains(out, "No changes") {
		t.Errorf("applying the export is not a no-op; printed:\n%s", out)
	}
	if got := c.ok("export"); got != exported {
		t.Errorf("export after applying the export differs:\nbefore:\n%s\nafter:\n%s", exported, got)
	}
	if got := c.ok("activity", "--limit", "1000"); got != activity {
		t.Errorf("a no-op apply wrote the activity log:\n%s", got)
	}

	// A changed file: the dry run shows every step and changes nothing.
	changed := strings.Replace(exported, "http://127.0.0.1:3001", "http://127.0.0.1:3002", 1)
	changed = strings.Replace(changed, "X-Frame-Options: DENY", "X-Frame-Options: SAMEORIGIN", 1)
	changed = strings.Replace(changed, "apps:\n", "apps:\n  - name: wiki\n    domains:\n      - wiki.example.com\n    upstream: http://127.0.0.1:3003\n", 1)
	if changed == exported {
		t.Fatal("the edit did not change the file")
	}
	path := c.file("changed.yaml", changed)
	out = c.ok("apply", "-f", path, "--dry-run")
	for _, w := range []string{
		"~ change app gitea", "headers.X-Frame-Options: DENY -> SAMEORIGIN",
		"~ change app grafana", "upstream: http://127.0.0.1:3001 -> http://127.0.0.1:3002",
		"+ add app wiki", "Plan: 1 to add, 2 to change, 0 to remove.", "Dry run: nothing was changed.",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("dry run output lacks %q:\n%s", w, out)
		}
	}
	if got := c.ok("export"); got != exported {
		t.Errorf("a dry run changed the state:\n%s", got)
	}
	if got := c.ok("activity", "--limit", "1000"); got != activity {
		t.Errorf("a dry run wrote the activity log:\n%s", got)
	}

	// Applied for real, the file is the new state and exports as itself.
	out = c.ok("apply", "-f", path)
	if strings.Contains(out, "Dry run") || !strings.Contains(out, "Plan: 1 to add, 2 to change, 0 to remove.") {
		t.Errorf("apply printed:\n%s", out)
	}
	now := c.ok("export")
	out, err = c.run(now, "apply", "-f", "-")
	if err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("applying the new export again: %v\n%s", err, out)
	}
	if !strings.Contains(now, "wiki.example.com") || !strings.Contains(now, "http://127.0.0.1:3002") {
		t.Errorf("export after apply:\n%s", now)
	}
}

func TestParseRateLimit(t *testing.T) {
	tests := []struct {
		in       string
		requests int
		per      string
		off, bad bool
	}{
		{in: "20/second", requests: 20, per: "second"},
		{in: "600/minute", requests: 600, per: "minute"},
		{in: "off", off: true},
		{in: "server"},
		{in: "20", bad: true},
		{in: "20/hour", bad: true},
		{in: "x/second", bad: true},
	}
	for _, tt := range tests {
		rl, err := parseRateLimit(tt.in)
		if tt.bad {
			if err == nil || !strings.Contains(err.Error(), "--rate-limit") {
				t.Errorf("%q: %v, want a refusal naming --rate-limit", tt.in, err)
			}
			continue
		}
		if err != nil || rl.Requests != tt.requests || rl.Per != tt.per || rl.Off != tt.off {
			t.Errorf("%q: %+v %v", tt.in, rl, err)
		}
	}
}
