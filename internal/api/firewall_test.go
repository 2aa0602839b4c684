package api

import (
	"context"
	"errors"
	"log/slog"
	"moat/internal/notify"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/store"
	"moat/internal/testenv"
)

// fwRuntime is a daemon whose only part is a firewall.
type fwRuntime struct{ fw *firewall.Manager }

func (fwRuntime) Check(context.Context, config.State) error    { return nil }
func (fwRuntime) Apply(context.Context, config.State) error    { return nil }
func (fwRuntime) Certificates() []certs.Status                 { return nil }
func (r fwRuntime) Firewall() Firewall                         { return r.fw }
func (r fwRuntime) Guard() Guard                               { return nil }
func (r fwRuntime) SSH() SSH                                   { return nil }
func (r fwRuntime) Mail() Mail                                 { return nil }
func (r fwRuntime) Notify(context.Context, notify.Alert) error { return nil }

// reaches reports whether a TCP connection from client to addr is
// accepted soon (a dropped SYN times out).
func reaches(client *testenv.Netns, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func TestFirewallThroughTheAPI(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("api: the firewall tests need nft (Debian package nftables); make test installs it")
	}
	host, client := testenv.NewNetns(t), testenv.NewNetns(t)
	testenv.Link(t, host, []netip.Prefix{netip.MustParsePrefix("10.62.1.1/24")}, client, []netip.Prefix{netip.MustParsePrefix("10.62.1.2/24")})
	for _, port := range []string{"22", "80", "443", "5432"} {
		host.Accepting(t, "tcp4", "0.0.0.0:"+port)
	}
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	// The SSH sessions open to port 22, as /proc/net/tcp would list them
	// (the host's own are none of this test's business).
	var sessions []netip.Addr
	srv := &Server{Store: st, Runtime: fwRuntime{firewall.NewManager(firewall.NFT{Netns: host.Name})}, Log: slog.New(slog.DiscardHandler),
		Sessions: func(port uint16) []netip.Addr {
			if port == 22 {
				return sessions
			}
			return nil
		}}
	c := Local(srv.Handler(), store.Actor{Who: "test", From: "test"})
	// An app whose certificate renews over HTTP-01, served on 443.
	if err := c.Do(ctx, "POST", "/v1/apps", config.App{Name: "a", Domains: []string{"a.example.com"}, Upstream: "http://127.0.0.1:3000"}, nil); err != nil {
		t.Fatal(err)
	}
	sshFromClient := "10.62.1.2 50000 10.62.1.1 22"
	status := func() FirewallStatus {
		var s FirewallStatus
		if err := c.Do(ctx, "GET", "/v1/firewall", nil, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	refused := func(err error, code int, parts ...string) {
		t.Helper()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != code {
			t.Fatalf("got %v, want a %d", err, code)
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("refusal lacks %q: %v", p, err)
			}
		}
	}
	allow := func(port string, from ...string) error {
		return c.Do(ctx, "POST", "/v1/firewall/rules", config.FirewallRule{Port: port, From: from}, nil)
	}

	// Nothing to apply yet.
	refused(c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{}, nil), 400, "no rules", "moat firewall allow 22/tcp")

	for _, r := range [][]string{{"22/tcp"}, {"5432/tcp", "10.62.1.2"}} {
		if err := allow(r[0], r[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	refused(allow("22"), 400, "firewall.rules[2]", "remove one of the two")
	if s := status(); !s.Managed || s.Active || !s.Plan.Unknown || len(s.Plan.Add) != 2 {
		t.Errorf("before any apply: %+v", s)
	}

	// The guards: 80 and 443 must stay open.
	refused(c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{SSHConnection: sshFromClient}, nil), 409, "close 80/tcp", "a.example.com", "close 443/tcp")
	if reaches(client, "10.62.1.1:5432") != true {
		t.Error("a refused apply changed the kernel")
	}
	for _, p := range []string{"80/tcp", "443/tcp"} {
		if err := allow(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{SSHConnection: sshFromClient}, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(); !s.Active || s.Plan.Unknown || len(s.Plan.Add)+len(s.Plan.Remove) != 0 {
		t.Errorf("after apply: %+v", s)
	}

	// SSH from elsewhere only: the caller would be cut off.
	if err := c.Do(ctx, "DELETE", "/v1/firewall/rules", config.FirewallRule{Port: "22/tcp"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := allow("22/tcp", "192.0.2.0/24"); err != nil {
		t.Fatal(err)
	}
	if s := status(); len(s.Plan.Add) != 1 || len(s.Plan.Remove) != 1 {
		t.Errorf("plan %+v, want 22/tcp from 192.0.2.0/24 added and 22/tcp removed", s.Plan)
	}
	refused(c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{SSHConnection: sshFromClient}, nil), 409, "connected from 10.62.1.2 to port 22", "--force")
	// Through sudo, SSH_CONNECTION is gone; the open session still counts.
	sessions = []netip.Addr{netip.MustParseAddr("10.62.1.2")}
	refused(c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{SSHPorts: []uint16{22}}, nil), 409, "session is open from 10.62.1.2 to port 22")
	sessions = nil
	if !reaches(client, "10.62.1.1:22") {
		t.Error("a refused apply cut SSH")
	}
	// Forced, with a confirmation window that passes: the old rules come back.
	if err := c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{SSHConnection: sshFromClient, Force: true, ConfirmWithin: "5s"}, nil); err != nil {
		t.Fatal(err)
	}
	if reaches(client, "10.62.1.1:22") {
		t.Error("the forced rules are not in force")
	}
	deadline := time.Now().Add(15 * time.Second)
	for !reaches(client, "10.62.1.1:22") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !reaches(client, "10.62.1.1:22") {
		t.Fatal("no rollback 15 s after a 5 s window")
	}
	entries, err := st.Activity(ctx, store.Query{Target: "firewall"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Action)
	}
	if !strings.Contains(strings.Join(actions, " "), "firewall.rollback") {
		t.Errorf("activity %v lacks the rollback", actions)
	}
	refused(c.Do(ctx, "POST", "/v1/firewall/confirm", nil, nil), 400, "no change is waiting")

	// Off opens everything the other tables allow; on closes it again.
	if err := c.Do(ctx, "DELETE", "/v1/firewall/rules", config.FirewallRule{Port: "22/tcp", From: []string{"192.0.2.0/24"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := allow("22/tcp"); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/rules", config.FirewallRule{Port: "5432/tcp"}, nil); err == nil {
		t.Error("a rule covering another was accepted")
	}
	blocked := "10.62.1.1:5432"
	if err := c.Do(ctx, "DELETE", "/v1/firewall/rules", config.FirewallRule{Port: "5432/tcp", From: []string{"10.62.1.2/32"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/apply", ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if reaches(client, blocked) {
		t.Error("5432 open without a rule")
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/off", nil, nil); err != nil {
		t.Fatal(err)
	}
	if !reaches(client, blocked) {
		t.Error("5432 still blocked with the firewall off")
	}
	if s := status(); !s.Off || s.Active || len(s.Rules) != 3 {
		t.Errorf("off: %+v, want the rules kept and no table", s)
	}
	if err := c.Do(ctx, "POST", "/v1/firewall/on", ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if reaches(client, blocked) {
		t.Error("5432 open after on")
	}
}
