package daemon

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/store"
	"moat/internal/testenv"
)

// TestFirewallOnStart: the stored rules are put in force when the daemon
// starts, and a firewall turned off stays off.
func TestFirewallOnStart(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("daemon: this test needs nft (Debian package nftables); make test installs it")
	}
	host := testenv.NewNetns(t)
	nft := firewall.NFT{Netns: host.Name}
	ctx := context.Background()
	e := startEnv(t, withFirewall(firewall.NewManager(nft)))
	for _, port := range []string{"22/tcp", "443/tcp"} {
		if err := e.client.Do(ctx, "POST", "/v1/firewall/rules", config.FirewallRule{Port: port}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if active, err := e.firewall.Active(ctx); err != nil || active {
		t.Fatalf("rules in force before apply or a restart (active %v, %v)", active, err)
	}
	e.shutdown()

	restart := func() *firewall.Manager {
		t.Helper()
		e.firewall = firewall.NewManager(nft)
		e.start()
		return e.firewall
	}
	m := restart()
	if active, err := m.Active(ctx); err != nil || !active {
		t.Fatalf("after a restart the table is not in force (active %v, %v)", active, err)
	}
	if rules, known := m.InForce(); !known || len(rules) != 2 {
		t.Errorf("in force after a restart: %v (known %v), want the two stored rules", rules, known)
	}
	if err := e.client.Do(ctx, "POST", "/v1/firewall/off", nil, &api.FirewallStatus{}); err != nil {
		t.Fatal(err)
	}
	e.shutdown()
	// Something puts a table back while moat is down; the next start
	// removes it, since the owner turned the firewall off.
	if err := firewall.NewManager(nft).Apply(ctx, []firewall.Rule{{Proto: "tcp", From: 22, To: 22}}); err != nil {
		t.Fatal(err)
	}
	m = restart()
	if active, err := m.Active(ctx); err != nil || active {
		t.Errorf("a firewall turned off came back on at start (active %v, %v)", active, err)
	}
}

// TestUnconfirmedRulesDoNotComeBackOnStart: rules applied with a
// confirmation window and never confirmed are not what a restart puts in
// force; the rules in force before them are.
func TestUnconfirmedRulesDoNotComeBackOnStart(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("daemon: this test needs nft (Debian package nftables); make test installs it")
	}
	nft := firewall.NFT{Netns: testenv.NewNetns(t).Name}
	ctx := context.Background()
	e := startEnv(t, withFirewall(firewall.NewManager(nft)))
	do := func(method, path string, body any) {
		t.Helper()
		if err := e.client.Do(ctx, method, path, body, nil); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	do("POST", "/v1/firewall/rules", config.FirewallRule{Port: "22/tcp"})
	do("POST", "/v1/firewall/apply", api.ApplyRequest{})
	do("POST", "/v1/firewall/rules", config.FirewallRule{Port: "8080/tcp"})
	do("DELETE", "/v1/firewall/rules", config.FirewallRule{Port: "22/tcp"})
	do("POST", "/v1/firewall/apply", api.ApplyRequest{ConfirmWithin: "60s", Force: true})
	if rules, _ := e.firewall.InForce(); len(rules) != 1 || rules[0].String() != "8080/tcp" {
		t.Fatalf("in force before the restart: %v", rules)
	}
	e.shutdown() // before the confirmation, and before the rollback
	e.firewall = firewall.NewManager(nft)
	e.start()
	if rules, _ := e.firewall.InForce(); len(rules) != 1 || rules[0].String() != "22/tcp" {
		t.Errorf("in force after the restart: %v, want 22/tcp, the last confirmed rules", rules)
	}
}

// TestRolledBackFirstRulesDoNotComeBack: with nothing in force before
// (no rules at the first start), rules applied with a window and never
// confirmed do not come back on the next start.
func TestRolledBackFirstRulesDoNotComeBack(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("daemon: this test needs nft (Debian package nftables); make test installs it")
	}
	nft := firewall.NFT{Netns: testenv.NewNetns(t).Name}
	ctx := context.Background()
	e := startEnv(t, withFirewall(firewall.NewManager(nft)))
	if err := e.client.Do(ctx, "POST", "/v1/firewall/rules", config.FirewallRule{Port: "8080/tcp"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{ConfirmWithin: "60s"}, nil); err != nil {
		t.Fatal(err)
	}
	e.shutdown()
	e.firewall = firewall.NewManager(nft)
	e.start()
	if active, err := e.firewall.Active(ctx); err != nil || active {
		t.Errorf("after a restart, unconfirmed first rules are in force (active %v, %v)", active, err)
	}
}

// TestFirstRulesSpareOpenSessions: the first start does not put in force
// rules that would cut an SSH session open at that moment.
func TestFirstRulesSpareOpenSessions(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("daemon: this test needs nft (Debian package nftables); make test installs it")
	}
	nft := firewall.NFT{Netns: testenv.NewNetns(t).Name}
	ctx := context.Background()
	e := startEnv(t)
	if err := e.client.Do(ctx, "POST", "/v1/firewall/rules", config.FirewallRule{Port: "22/tcp", From: []string{"192.0.2.0/24"}}, nil); err != nil {
		t.Fatal(err)
	}
	e.shutdown()
	e.firewall = firewall.NewManager(nft)
	e.sessions = func(port uint16) []netip.Addr {
		if port == 22 {
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}
		}
		return nil
	}
	e.start()
	if active, err := e.firewall.Active(ctx); err != nil || active {
		t.Errorf("rules that cut an open session were put in force (active %v, %v)", active, err)
	}
	var entries []store.Entry
	if err := e.client.Do(ctx, "GET", "/v1/activity?target=firewall", nil, &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || !strings.Contains(entries[0].Detail, "session is open from 203.0.113.7") {
		t.Errorf("activity %+v, want the refusal with its reason", entries)
	}
}
