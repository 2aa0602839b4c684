package config

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestDiff(t *testing.T) {
	newApp := App{
		Name:     "wiki",
		Domains:  []string{"wiki.example.com", "docs.example.com"},
		Upstream: "http://127.0.0.1:4000",
		Headers:  map[string]string{"X-Frame-Options": "DENY"},
	}
	tests := []struct {
		name   string
		from   State
		mutate func(*State) // applied to a clone of from to make to
		want   Plan         // Before and After checked separately
	}{
		{"no change", fullState(), func(*State) {}, nil},
		{"zero states", State{}, func(*State) {}, nil},
		{"server fields changed", fullState(), func(s *State) {
			s.Server.Email = "ops@example.com"
			s.Server.Listen.HTTPS = ":8443"
		}, Plan{{Op: Change, Object: "server", Fields: []string{
			"email: admin@example.com -> ops@example.com",
			"listen.https: 127.0.0.1:8443 -> :8443",
		}}}},
		{"server field unset", fullState(), func(s *State) { s.Server.Resolver = "" },
			Plan{{Op: Change, Object: "server", Fields: []string{"resolver: 1.1.1.1:53 -> (unset)"}}}},
		{"numbers as written", State{}, func(s *State) {
			s.Server.RateLimit = RateLimit{Requests: 1000000, Per: "minute", Burst: 12345678}
			s.Server.TrustedProxies = []string{"10.0.0.0/8"}
		}, Plan{{Op: Change, Object: "server", Fields: []string{
			"rate_limit.burst: 12345678",
			"rate_limit.per: minute",
			"rate_limit.requests: 1000000",
			"trusted_proxies: 10.0.0.0/8",
		}}}},
		{"server field set", State{}, func(s *State) { s.Server.Domain = "moat.example.com" },
			Plan{{Op: Change, Object: "server", Fields: []string{"domain: moat.example.com"}}}},
		{"server list changed", fullState(), func(s *State) {
			s.Server.PublicIPs = s.Server.PublicIPs[:1]
			s.Server.ACME.Challenges = nil
		}, Plan{{Op: Change, Object: "server", Fields: []string{
			"acme.challenges: http-01, tls-alpn-01 -> (unset)",
			"public_ips: 203.0.113.7, 2001:db8::7 -> 203.0.113.7",
		}}}},
		{"app added", fullState(), func(s *State) { s.Apps = append(s.Apps, newApp) },
			Plan{{Op: Add, Object: "app wiki", Fields: []string{
				"domains: wiki.example.com, docs.example.com",
				"headers.X-Frame-Options: DENY",
				"name: wiki",
				"upstream: http://127.0.0.1:4000",
			}}}},
		{"app removed", fullState(), func(s *State) { s.Apps = s.Apps[:1] },
			Plan{{Op: Remove, Object: "app gitea"}}},
		{"app changed", fullState(), func(s *State) {
			s.Apps[1].Upstream = "http://127.0.0.1:3001"
			s.Apps[1].Domains = append(s.Apps[1].Domains, "gitea.example.com")
		}, Plan{{Op: Change, Object: "app gitea", Fields: []string{
			"domains: git.example.com -> git.example.com, gitea.example.com",
			"upstream: https://10.0.0.5:3000/ -> http://127.0.0.1:3001",
		}}}},
		{"header changed, removed and added", fullState(), func(s *State) {
			s.Apps[0].Headers = map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
		}, Plan{{Op: Change, Object: "app blog", Fields: []string{
			"headers.Referrer-Policy: no-referrer",
			"headers.X-Frame-Options: SAMEORIGIN -> DENY",
			`headers.X-Powered-By: "" -> (unset)`,
		}}}},
		// An empty header value removes the header from responses: setting
		// one is a change even though the value is empty.
		{"header set to empty", fullState(), func(s *State) {
			s.Apps[0].Headers["X-Frame-Options"] = ""
			s.Apps[1].Headers = map[string]string{"Server": ""}
		}, Plan{
			{Op: Change, Object: "app blog", Fields: []string{`headers.X-Frame-Options: SAMEORIGIN -> ""`}},
			{Op: Change, Object: "app gitea", Fields: []string{`headers.Server: ""`}},
		}},
		{"app renamed is an add and a remove", fullState(), func(s *State) { s.Apps[1].Name = "forgejo" },
			Plan{
				{Op: Add, Object: "app forgejo", Fields: []string{"domains: git.example.com", "name: forgejo", "upstream: https://10.0.0.5:3000/"}},
				{Op: Remove, Object: "app gitea"},
			}},
		{"server, then apps in order, then removals", fullState(), func(s *State) {
			s.Server.Domain = "edge.example.com"
			s.Apps = []App{newApp, s.Apps[0]}
			s.Apps[1].Upstream = "http://127.0.0.1:2369"
		}, Plan{
			{Op: Change, Object: "server", Fields: []string{"domain: moat.example.com -> edge.example.com"}},
			{Op: Add, Object: "app wiki", Fields: []string{
				"domains: wiki.example.com, docs.example.com",
				"headers.X-Frame-Options: DENY",
				"name: wiki",
				"upstream: http://127.0.0.1:4000",
			}},
			{Op: Change, Object: "app blog", Fields: []string{"upstream: http://127.0.0.1:2368 -> http://127.0.0.1:2369"}},
			{Op: Remove, Object: "app gitea"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := tt.from.Clone()
			tt.mutate(&to)
			got := Diff(tt.from, to)
			if len(got) != len(tt.want) {
				t.Fatalf("Diff = %d steps, want %d:\n%s", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Op != w.Op || g.Object != w.Object || !reflect.DeepEqual(g.Fields, w.Fields) {
					t.Errorf("step %d = %s %s %q\nwant %s %s %q", i, g.Op, g.Object, g.Fields, w.Op, w.Object, w.Fields)
				}
				checkSnapshots(t, g, tt.from, to)
			}
		})
	}
}

// checkSnapshots checks that a step carries the object before and after as
// JSON, and only where it exists.
func checkSnapshots(t *testing.T, st Step, from, to State) {
	t.Helper()
	snapshot := func(s State) any {
		if st.Object == "server" {
			return s.Server
		}
		if a, ok := s.App(st.Object[len("app "):]); ok {
			return *a
		}
		return nil
	}
	for _, c := range []struct {
		name string
		raw  json.RawMessage
		want any
	}{{"Before", st.Before, snapshot(from)}, {"After", st.After, snapshot(to)}} {
		if c.want == nil {
			if c.raw != nil {
				t.Errorf("%s %s: %s = %s, want none", st.Op, st.Object, c.name, c.raw)
			}
			continue
		}
		got := reflect.New(reflect.TypeOf(c.want))
		if err := json.Unmarshal(c.raw, got.Interface()); err != nil {
			t.Errorf("%s %s: %s %q: %v", st.Op, st.Object, c.name, c.raw, err)
			continue
		}
		if !reflect.DeepEqual(got.Elem().Interface(), c.want) {
			t.Errorf("%s %s: %s = %+v, want %+v", st.Op, st.Object, c.name, got.Elem().Interface(), c.want)
		}
	}
}

func TestPlanString(t *testing.T) {
	tests := []struct {
		name string
		p    Plan
		want string
	}{
		{"nil", nil, "No changes: the desired state is already as written.\n"},
		{"empty", Plan{}, "No changes: the desired state is already as written.\n"},
		{"one of each", Plan{
			{Op: Change, Object: "server", Fields: []string{"email: a@example.com -> b@example.com"}},
			{Op: Add, Object: "app wiki", Fields: []string{"name: wiki", "upstream: http://127.0.0.1:4000"}},
			{Op: Change, Object: "app blog", Fields: []string{"upstream: http://127.0.0.1:1 -> http://127.0.0.1:2"}},
			{Op: Remove, Object: "app gitea"},
		}, `~ change server
    email: a@example.com -> b@example.com
+ add app wiki
    name: wiki
    upstream: http://127.0.0.1:4000
~ change app blog
    upstream: http://127.0.0.1:1 -> http://127.0.0.1:2
- remove app gitea
Plan: 1 to add, 2 to change, 1 to remove.
`},
		{"adds only", Plan{{Op: Add, Object: "app a"}, {Op: Add, Object: "app b"}},
			"+ add app a\n+ add app b\nPlan: 2 to add, 0 to change, 0 to remove.\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.String(); got != tt.want {
				t.Errorf("String() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestDiffDoesNotModifyItsInputs(t *testing.T) {
	from, to := fullState(), fullState()
	to.Apps = to.Apps[:1]
	to.Server.Email = "x@example.com"
	Diff(from, to)
	if !reflect.DeepEqual(from, fullState()) {
		t.Errorf("Diff changed from: %+v", from)
	}
}
