package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/guard"
	"moat/internal/store"
	"moat/internal/testenv"
)

// guardLab is a host namespace, where sshd listens and moat's firewall
// runs, and two clients: the attacker and a bystander.
type guardLab struct {
	host, attacker, other *testenv.Netns
	nft                   firewall.NFT
}

const (
	labHost     = "10.62.1.1"
	labAttacker = "10.62.1.2"
	labHost2    = "198.51.100.1"
	labOther    = "198.51.100.2"
)

func newGuardLab(t *testing.T) *guardLab {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("daemon: this test needs nft (Debian package nftables); make test installs it")
	}
	l := &guardLab{host: testenv.NewNetns(t), attacker: testenv.NewNetns(t), other: testenv.NewNetns(t)}
	pfx := netip.MustParsePrefix
	testenv.Link(t, l.host, []netip.Prefix{pfx(labHost + "/24")}, l.attacker, []netip.Prefix{pfx(labAttacker + "/24")})
	testenv.Link(t, l.host, []netip.Prefix{pfx(labHost2 + "/24")}, l.other, []netip.Prefix{pfx(labOther + "/24")})
	l.nft = firewall.NFT{Netns: l.host.Name}
	return l
}

// reaches reports whether a TCP connection from ns to addr:port is
// accepted within a short time (a dropped SYN times out).
func reaches(ns *testenv.Netns, addr string, port int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (e *env) guardStatus() api.GuardStatus {
	e.t.Helper()
	var st api.GuardStatus
	if err := e.client.Do(context.Background(), "GET", "/v1/guard", nil, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// banOf returns the ban in force for p, if any.
func (e *env) banOf(p string) (guard.Ban, bool) {
	for _, b := range e.guardStatus().Bans {
		if b.Prefix.String() == p {
			return b, true
		}
	}
	return guard.Ban{}, false
}

// TestSSHBruteForceBannedInTheKernel: a real ssh client that fails a
// password login 5 times against a real sshd is banned by the kernel:
// its next connection is dropped while another client still connects,
// and after the ban time it connects again. OpenSSH writes two lines for
// each attempt at an invalid user; the fourth attempt must not ban yet.
// The last attempt's user name names the other client's address, which
// must not be banned for it.
func TestSSHBruteForceBannedInTheKernel(t *testing.T) {
	l := newGuardLab(t)
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Netns: l.host, Config: []string{"PasswordAuthentication yes", "MaxStartups 100"}})
	e := startEnv(t, withFirewall(firewall.NewManager(l.nft)))
	ctx := context.Background()
	e.change(func(s *config.State) {
		s.Firewall.Rules = []config.FirewallRule{{Port: fmt.Sprintf("%d/tcp", sshd.Port)}}
		s.Guard.Jails = []config.Jail{{Name: config.JailSSHD, Log: sshd.Log, BanTime: "4s"}}
	})
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if !reaches(l.attacker, labHost, sshd.Port) || !reaches(l.other, labHost2, sshd.Port) {
		t.Fatal("before any failure, a client cannot reach sshd")
	}
	attempt := func(i int) {
		t.Helper()
		user := "nosuchuser"
		if i == 5 {
			// The user name is the client's: one that names another
			// address must not get that address banned.
			user = "x from " + labOther + " port 22"
		}
		if err := testenv.SSHPassword(l.attacker, labHost, sshd.Port, user, "wrong"); err == nil {
			t.Fatalf("attempt %d: a wrong password logged in", i)
		}
	}
	for i := 1; i <= 4; i++ {
		attempt(i)
	}
	// The lines reach the guard within its poll; give it ample time.
	time.Sleep(time.Second)
	if _, banned := e.banOf(labAttacker + "/32"); banned {
		t.Fatal("banned after 4 attempts: both lines of an invalid-user attempt were counted")
	}
	attempt(5)
	var ban guard.Ban
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, ok := e.banOf(labAttacker + "/32")
		if ok {
			ban = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ban 5s after the fifth failure; guard: %+v", e.guardStatus())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if bans := e.guardStatus().Bans; len(bans) != 1 {
		t.Errorf("bans %+v, want the attacker's only", bans)
	}
	if ban.Jail != config.JailSSHD || len(ban.Evidence) != 5 || ban.By != "guard" {
		t.Errorf("ban %+v: want jail sshd, by guard, with the 5 attempts as evidence", ban)
	}
	if reaches(l.attacker, labHost, sshd.Port) {
		t.Error("the banned client still connects")
	}
	if !reaches(l.other, labHost2, sshd.Port) {
		t.Error("another client no longer connects")
	}
	if err := testenv.SSHPassword(l.other, labHost2, sshd.Port, "nosuchuser", "wrong"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("another client's login: %v, want a refused password (it reaches sshd)", err)
	}
	var entries []store.Entry
	if err := e.client.Do(ctx, "GET", "/v1/activity?target="+labAttacker+"/32", nil, &entries); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(entries, func(x store.Entry) bool { return x.Action == "guard.ban" }) {
		t.Errorf("activity %+v: no guard.ban", entries)
	}
	// The kernel ends the ban by itself.
	deadline = ban.Expires.Add(3 * time.Second)
	for !reaches(l.attacker, labHost, sshd.Port) {
		if time.Now().After(deadline) {
			t.Fatalf("still dropped 3s after the ban expired at %s", ban.Expires.Format(time.TimeOnly))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := time.Until(ban.Expires); left > 500*time.Millisecond {
		t.Errorf("connected again %s before the ban expired", left)
	}
}

// TestBanSurvivesRestart: a ban in force when moat stops is back in the
// kernel after a restart, whether the kernel kept it or lost it (a
// reboot), with the time it had left, and it ends then; turning the
// firewall off and on keeps it too.
func TestBanSurvivesRestart(t *testing.T) {
	l := newGuardLab(t)
	port := testenv.FreePorts(t, 1)[0]
	l.host.Accepting(t, "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	e := startEnv(t, withFirewall(firewall.NewManager(l.nft)))
	ctx := context.Background()
	e.change(func(s *config.State) {
		s.Firewall.Rules = []config.FirewallRule{{Port: fmt.Sprintf("%d/tcp", port)}}
	})
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	var ban guard.Ban
	if err := e.client.Do(ctx, "POST", "/v1/guard/bans", api.BanRequest{Address: labAttacker, For: "8s", Reason: "test"}, &ban); err != nil {
		t.Fatal(err)
	}
	if reaches(l.attacker, labHost, port) {
		t.Fatal("the banned client connects")
	}
	// The firewall turned off and on again: the new table holds the ban.
	if err := e.client.Do(ctx, "POST", "/v1/firewall/off", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Do(ctx, "POST", "/v1/firewall/on", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if reaches(l.attacker, labHost, port) {
		t.Fatal("after the firewall was turned off and on, the banned client connects")
	}
	// A restart with the kernel's table still there.
	e.shutdown()
	e.firewall = firewall.NewManager(l.nft)
	e.start()
	if reaches(l.attacker, labHost, port) {
		t.Fatal("after a restart, the banned client connects")
	}
	if kernel, err := e.firewall.Bans(ctx); err != nil || len(kernel) != 1 {
		t.Errorf("after a restart the kernel has %+v (%v), want the one ban", kernel, err)
	}
	e.shutdown()
	// A reboot: the kernel forgets moat's table and its bans.
	if _, err := l.host.RunErr("nft", "delete", "table", "inet", firewall.Table); err != nil {
		t.Fatal(err)
	}
	if !reaches(l.attacker, labHost, port) {
		t.Fatal("with moat's table gone, the client should connect")
	}
	e.firewall = firewall.NewManager(l.nft)
	e.start()
	if reaches(l.attacker, labHost, port) {
		t.Error("after the restart the banned client connects")
	}
	if !reaches(l.other, labHost2, port) {
		t.Error("after the restart another client cannot connect")
	}
	after, ok := e.banOf(labAttacker + "/32")
	if !ok || !after.Expires.Equal(ban.Expires) || after.Reason != "test" {
		t.Errorf("after the restart the ban is %+v (%v), want %+v", after, ok, ban)
	}
	kernel, err := e.firewall.Bans(ctx)
	if err != nil || len(kernel) != 1 || kernel[0].Expires > time.Until(ban.Expires)+time.Second {
		t.Errorf("the kernel's bans %+v (%v): want the one ban with at most %s left", kernel, err, time.Until(ban.Expires))
	}
	deadline := ban.Expires.Add(3 * time.Second)
	for !reaches(l.attacker, labHost, port) {
		if time.Now().After(deadline) {
			t.Fatal("still dropped 3s after the ban expired")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSSHBruteForceFromTheJournal: the same, with sshd logging to syslog
// and the guard reading the systemd journal. It runs where journald runs.
func TestSSHBruteForceFromTheJournal(t *testing.T) {
	if err := (&guard.Journal{}).Available(); err != nil {
		t.Skipf("SKIPPED, the journal source is not tested here: %v", err)
	}
	l := newGuardLab(t)
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Netns: l.host, Syslog: true, Config: []string{"PasswordAuthentication yes", "SyslogFacility AUTH"}})
	e := startEnv(t, withFirewall(firewall.NewManager(l.nft)))
	ctx := context.Background()
	e.change(func(s *config.State) {
		s.Firewall.Rules = []config.FirewallRule{{Port: fmt.Sprintf("%d/tcp", sshd.Port)}}
		s.Guard.Jails = []config.Jail{{Name: config.JailSSHD, Log: config.Journal, BanTime: "1h"}}
	})
	if err := e.client.Do(ctx, "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if err := testenv.SSHPassword(l.attacker, labHost, sshd.Port, "nosuchuser", "wrong"); err == nil {
			t.Fatalf("attempt %d: a wrong password logged in", i)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := e.banOf(labAttacker + "/32"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ban 10s after the fifth failure; guard: %+v", e.guardStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if reaches(l.attacker, labHost, sshd.Port) {
		t.Error("the banned client still connects")
	}
	if !reaches(l.other, labHost2, sshd.Port) {
		t.Error("another client no longer connects")
	}
}

// TestAppLoginFailuresBanAtTheEdge: an app's answers with its guard
// statuses count as failed logins; a client behind a trusted proxy (whom
// the kernel cannot see) that gets too many is refused by the edge, and
// other clients are not.
func TestAppLoginFailuresBanAtTheEdge(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Path == "/login" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(app.Close)
	host := e.host("app")
	e.dns.Set(host, loopback)
	e.change(func(s *config.State) {
		s.Server.TrustedProxies = []string{"127.0.0.1"}
		s.Apps = append(s.Apps, config.App{Name: "app", Domains: []string{host}, Upstream: app.URL, GuardStatuses: []int{401}})
		s.Guard.Jails = append(s.Guard.Jails, config.Jail{Name: "app", MaxRetry: 3})
	})
	e.waitCert(host, 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())
	get := func(path, client string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+host+path, nil)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if code := get("/login", "203.0.113.7"); code != http.StatusUnauthorized {
			t.Fatalf("login %d: %d", i+1, code)
		}
	}
	if code := get("/", "203.0.113.7"); code != http.StatusForbidden {
		t.Errorf("after 3 failed logins: %d, want 403", code)
	}
	if code := get("/", "203.0.113.8"); code != http.StatusOK {
		t.Errorf("another client behind the same proxy: %d, want 200", code)
	}
	b, ok := e.banOf("203.0.113.7/32")
	if !ok || b.Jail != "app" || len(b.Evidence) != 3 || !strings.Contains(b.Evidence[0], "/login -> 401") {
		t.Errorf("ban %+v (%v)", b, ok)
	}
}

// TestKernelBansWithoutNft: where nft cannot run (not installed, no
// CAP_NET_ADMIN), the kernel holds no ban, so lifting one is no error:
// the owner must be able to lift an edge ban there.
func TestKernelBansWithoutNft(t *testing.T) {
	k := kernelBans{firewall.NewManager(firewall.NFT{Path: "/nonexistent/nft"})}
	ctx := context.Background()
	if err := k.Unban(ctx, netip.MustParsePrefix("203.0.113.7/32")); err != nil {
		t.Errorf("unban without nft: %v", err)
	}
	if err := k.Ban(ctx, netip.MustParsePrefix("203.0.113.7/32"), time.Minute); err == nil {
		t.Error("a ban without nft reports success")
	}
}
