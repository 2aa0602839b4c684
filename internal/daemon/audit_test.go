package daemon

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/audit"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/testenv"
)

// TestAudit: the daemon's audit reads the sockets and moat's table of a
// namespace; a rule added to the table by hand is drift, alerted as a
// regression (webhook) and fixed by moat audit fix; the hourly audit
// (here every 200 ms) keeps the history.
func TestAudit(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("daemon: this test needs nft (Debian package nftables); make test installs it")
	}
	host := testenv.NewNetns(t)
	redis := host.Listen(t, "tcp4", "0.0.0.0:6379")
	defer redis.Close()

	nft := firewall.NFT{Netns: host.Name}
	ctx := context.Background()
	e := startEnv(t, withFirewall(firewall.NewManager(nft)), withProc(audit.Proc{NetPID: strconv.Itoa(host.Process(t))}), withAuditEvery(200*time.Millisecond))
	alerts := e.webhookAlerts()
	for _, port := range []string{"22/tcp", "443/tcp"} {
		if err := e.client.Do(ctx, "POST", "/v1/firewall/rules", config.FirewallRule{Port: port}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	run := func() audit.Report {
		t.Helper()
		var rep audit.Report
		if err := e.client.Do(ctx, "GET", "/v1/audit", nil, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	find := func(rep audit.Report, check string) *audit.Finding {
		for i := range rep.Findings {
			if rep.Findings[i].Check == check {
				return &rep.Findings[i]
			}
		}
		return nil
	}
	first := run()
	if f := find(first, "listen.wildcard"); f == nil || f.Subject != "0.0.0.0:6379/tcp" || !strings.Contains(f.Finding, "the firewall blocks it today") {
		t.Errorf("the listener on 6379: %+v in %+v", f, first.Findings)
	}
	for _, c := range []string{"firewall.off", "firewall.trial", "firewall.drift"} {
		if !slices.Contains(first.Passed, c) {
			t.Errorf("%s did not pass: %+v", c, first)
		}
	}

	host.Run(t, "nft", "insert", "rule", "inet", firewall.Table, "input", "tcp", "dport", "6379", "accept")
	drifted := run()
	f := find(drifted, "firewall.drift")
	if f == nil || !strings.Contains(f.Finding, "added: tcp dport 6379 accept") || !f.Fixable || drifted.Score >= first.Score {
		t.Fatalf("after a rule added by hand: %+v (score %d, was %d)", f, drifted.Score, first.Score)
	}
	if a := waitAlert(t, alerts, "audit.regression", 10*time.Second); !strings.Contains(a.Message, "tcp dport 6379 accept") || !strings.Contains(a.Message, "moat audit fix firewall.drift") {
		t.Errorf("the regression alert: %s", a.Message)
	}

	if err := e.client.Do(ctx, "POST", "/v1/audit/fix/firewall.drift", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if after := run(); find(after, "firewall.drift") != nil || after.Score != first.Score {
		t.Errorf("after moat audit fix: %+v", after)
	}
	// The table deleted by hand: not in the kernel, and fixed by moat.
	host.Run(t, "nft", "delete", "table", "inet", firewall.Table)
	gone := run()
	if f := find(gone, "firewall.off"); f == nil || !f.Fixable || !strings.Contains(f.Fix, "moat audit fix firewall.off") || find(gone, "firewall.drift") != nil {
		t.Errorf("with the table deleted by hand: %+v", gone.Findings)
	}
	if err := e.client.Do(ctx, "POST", "/v1/audit/fix/firewall.off", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if back := run(); find(back, "firewall.off") != nil || back.Score != first.Score {
		t.Errorf("after moat audit fix firewall.off: %+v", back.Findings)
	}
	if err := e.client.Do(ctx, "POST", "/v1/audit/fix/ssh.passwordauthentication", api.ApplyRequest{}, nil); err == nil || !strings.Contains(err.Error(), "is not a finding moat fixes itself") {
		t.Errorf("a fix moat does not make: %v", err)
	}
	time.Sleep(time.Second) // the hourly audit, every 200 ms here
	var history []api.AuditScore
	if err := e.client.Do(ctx, "GET", "/v1/audit/history", nil, &history); err != nil || len(history) < 5 {
		t.Errorf("the history: %d audits, %v", len(history), err)
	}
}
