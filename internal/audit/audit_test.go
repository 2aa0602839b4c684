package audit

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"moat/internal/certs"
	"moat/internal/firewall"
	"moat/internal/sshd"
	"moat/internal/updates"
)

var testNow = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func listener(addr, proto, process string) Listener {
	ap := netip.MustParseAddrPort(addr)
	return Listener{Proto: proto, Addr: ap, Scope: ScopeOf(ap.Addr()), Process: process}
}

var hardened = &[]sshd.Finding{}

func loose(keyword, have, want, who string) *[]sshd.Finding {
	return &[]sshd.Finding{{Keyword: keyword, For: who, Have: have, Want: want, Why: "because", Fix: "moat ssh harden"}}
}

var inForce = &firewall.Rule{Proto: "tcp", From: 443, To: 443}

func active(rules ...firewall.Rule) *Firewall {
	return &Firewall{Active: true, Rules: append([]firewall.Rule{*inForce, {Proto: "tcp", From: 22, To: 22}}, rules...)}
}

// TestChecks: each check passes on a host that is set safely and fails,
// with its finding and fix, on one that is not.
func TestChecks(t *testing.T) {
	own := map[string]string{"443/tcp": "moat's edge", "22/tcp": "sshd"}
	for _, tc := range []struct {
		name  string
		host  Host
		check string // the check that fails; empty: all pass
		has   []string
	}{
		{"a safe host", Host{Own: own, SSH: hardened, Firewall: active(),
			Listeners: []Listener{listener("0.0.0.0:443", "tcp", "moat"), listener("0.0.0.0:22", "tcp", "sshd"), listener("127.0.0.1:5432", "tcp", "postgres")}}, "", nil},
		{"postgres on every address, the firewall blocking it", Host{Own: own, SSH: hardened, Firewall: active(),
			Listeners: []Listener{listener("0.0.0.0:5432", "tcp", "postgres")}}, "listen.wildcard",
			[]string{"postgres listens on 0.0.0.0:5432", "the firewall blocks it today", "listen_addresses"}},
		{"redis open to the internet by a rule", Host{Own: own, SSH: hardened, Firewall: active(firewall.Rule{Proto: "tcp", From: 6379, To: 6379}),
			Listeners: []Listener{listener("[::]:6379", "tcp", "redis-server")}}, "listen.exposed",
			[]string{"redis-server listens on [::]:6379", "a firewall rule lets everyone reach it", "redis.conf"}},
		{"a process moat cannot name", Host{Own: own, SSH: hardened, Firewall: active(),
			Listeners: []Listener{listener("0.0.0.0:2024", "tcp", "")}}, "listen.wildcard",
			[]string{"a process moat cannot name listens on 0.0.0.0:2024", "ss -lnp 'sport = :2024'"}},
		{"a rule for some sources only", Host{Own: own, SSH: hardened, Firewall: active(firewall.Rule{Proto: "tcp", From: 6379, To: 6379, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}),
			Listeners: []Listener{listener("0.0.0.0:6379", "tcp", "redis-server")}}, "listen.wildcard", []string{"redis.conf"}},
		{"the firewall off", Host{Own: own, SSH: hardened, Firewall: &Firewall{Off: true}}, "firewall.off", []string{"moat firewall on"}},
		{"the firewall not in the kernel", Host{Own: own, SSH: hardened, Firewall: &Firewall{}}, "firewall.off", []string{"moat audit fix firewall.off"}},
		{"the firewall on trial", Host{Own: own, SSH: hardened, Firewall: func() *Firewall { f := active(); f.Pending = true; return f }()}, "firewall.trial", []string{"moat firewall confirm"}},
		{"a rule added by hand", Host{Own: own, SSH: hardened, Firewall: func() *Firewall { f := active(); f.Drift = []string{"added: tcp dport 6666 accept"}; return f }()},
			"firewall.drift", []string{"tcp dport 6666 accept", "moat audit fix firewall.drift"}},
		{"passwords", Host{Own: own, SSH: loose("PasswordAuthentication", "yes", "no", "")}, "ssh.passwordauthentication", []string{"PasswordAuthentication yes, not no", "moat ssh harden"}},
		{"passwords for one user", Host{Own: own, SSH: loose("PasswordAuthentication", "yes", "no", "alice")}, "ssh.passwordauthentication", []string{"PasswordAuthentication yes for alice (a Match block)"}},
		{"root by password", Host{Own: own, SSH: loose("PermitRootLogin", "yes", "prohibit-password", "")}, "ssh.permitrootlogin", []string{"PermitRootLogin yes"}},
		{"six tries", Host{Own: own, SSH: loose("MaxAuthTries", "6", "3", "")}, "ssh.maxauthtries", []string{"MaxAuthTries 6"}},
		{"a failing renewal", Host{Certificates: []certs.Status{{Domain: "git.example.com", State: certs.RenewalFailed, Message: "connection refused", NotAfter: testNow.Add(20 * 24 * time.Hour)}}},
			"cert.failing", []string{"git.example.com cannot renew", "connection refused"}},
		{"a certificate ending in 10 days", Host{Certificates: []certs.Status{{Domain: "git.example.com", State: certs.Valid, NotAfter: testNow.Add(10 * 24 * time.Hour)}}},
			"cert.expiring", []string{"ends on 17 Dec 2026", "in 10 days"}},
		{"certificates valid for weeks", Host{Certificates: []certs.Status{{Domain: "git.example.com", State: certs.Valid, NotAfter: testNow.Add(60 * 24 * time.Hour)}, {Domain: "new.example.com", State: certs.WaitingDNS}}}, "", nil},
		{"the guard off", Host{Guard: &Guard{Off: true}}, "guard.off", []string{"the brute-force guard is off", "guard.off"}},
		{"the sshd jail off", Host{Guard: &Guard{JailsOff: []string{"sshd"}}}, "guard.off", []string{"the guard's sshd jail is off"}},
		{"the guard on", Host{Guard: &Guard{}}, "", nil},
		{"no unattended-upgrades", Host{Updates: &updates.Status{}}, "updates.off", []string{"not installed", "moat updates enable --install"}},
		{"unattended-upgrades not run", Host{Updates: &updates.Status{Installed: true}}, "updates.off", []string{"apt does not run it", "moat updates enable"}},
		{"no security origin", Host{Updates: &updates.Status{Installed: true, Periodic: true}}, "updates.off", []string{"no security archive"}},
		{"a reboot pending", Host{Updates: &updates.Status{Installed: true, Periodic: true, Security: true, RebootRequired: true, RebootPackages: []string{"linux-image-6.1.0-28-amd64"}}},
			"reboot.required", []string{"linux-image-6.1.0-28-amd64 asked for it", "moat host reboot"}},
		{"an old kernel running", Host{Updates: &updates.Status{Installed: true, Periodic: true, Security: true, KernelRunning: "6.1.0-9-amd64", KernelInstalled: "6.1.0-28-amd64"}},
			"reboot.kernel", []string{"kernel 6.1.0-9-amd64 runs, but 6.1.0-28-amd64 is installed"}},
		{"security updates pending", Host{Updates: &updates.Status{Installed: true, Periodic: true, Security: true, SecurityPending: []string{"libc6 2.36-9+deb12u7 → 2.36-9+deb12u8"}}},
			"updates.pending", []string{"1 security updates are not installed: libc6", "apt-get upgrade"}},
		{"updates set up", Host{Updates: &updates.Status{Installed: true, Periodic: true, Security: true}}, "", nil},
		{"sshd's defaults beyond moat ssh harden", Host{SSHD: map[string][]string{"allowtcpforwarding": {"yes"}, "loglevel": {"VERBOSE"}, "maxsessions": {"2"}}},
			"ssh.extra", []string{"sshd has AllowTcpForwarding yes; no is stricter", "10-local.conf"}},
		{"sshd stricter than Lynis asks", Host{SSHD: map[string][]string{"allowtcpforwarding": {"no"}, "loglevel": {"VERBOSE"}, "maxsessions": {"1"}, "port": {"2222"}}}, "", nil},
		{"X11", Host{Own: own, SSH: loose("X11Forwarding", "yes", "no", "")}, "ssh.x11forwarding", []string{"X11Forwarding yes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Run(tc.host, testNow)
			if tc.check == "" {
				if len(r.Findings) != 0 || r.Score != 100 {
					t.Errorf("findings on a safe host (score %d): %+v", r.Score, r.Findings)
				}
				return
			}
			if len(r.Findings) != 1 || r.Findings[0].Check != tc.check {
				t.Fatalf("findings: %+v, want one of %s", r.Findings, tc.check)
			}
			f := r.Findings[0]
			text := f.Finding + " | " + f.Fix
			for _, h := range tc.has {
				if !strings.Contains(text, h) {
					t.Errorf("%q lacks %q", text, h)
				}
			}
			if f.Why == "" || f.Weight == 0 || r.Score != 100-f.Weight {
				t.Errorf("finding %+v, score %d", f, r.Score)
			}
		})
	}
}

func TestScoreAndRegressions(t *testing.T) {
	fs := []Finding{{Check: "a", Weight: 20}, {Check: "b", Weight: 8}, {Check: "c", Subject: "x", Weight: 3}}
	if got := Score(fs); got != 69 {
		t.Errorf("score %d, want 69", got)
	}
	if got := Score(append(append(append(fs, fs...), fs...), fs...)); got != 0 {
		t.Errorf("score %d, want 0 at the floor", got)
	}
	before := Report{Findings: fs[:2]}
	now := Report{Findings: []Finding{fs[1], fs[2], {Check: "a", Subject: "y"}}}
	got := Regressions(before, now)
	if len(got) != 2 || got[0].Check != "c" || got[1].Subject != "y" {
		t.Errorf("regressions: %+v", got)
	}
	for _, tc := range []struct {
		addr  string
		scope Scope
	}{{"0.0.0.0", Wildcard}, {"::", Wildcard}, {"127.0.0.53", Loopback}, {"::1", Loopback}, {"192.168.1.2", Private}, {"100.100.0.1", Private},
		{"fd7a::1", Private}, {"fe80::1", Private}, {"8.8.8.8", Public}, {"2a01:4f8::1", Public}, {"::ffff:127.0.0.1", Loopback}} {
		if got := ScopeOf(netip.MustParseAddr(tc.addr)); got != tc.scope {
			t.Errorf("ScopeOf(%s) = %s, want %s", tc.addr, got, tc.scope)
		}
	}
}

// TestSSHChecks: each of moat ssh harden's settings is a check of its
// own, failing on what sshd's audit found and passing without it.
func TestSSHChecks(t *testing.T) {
	for _, s := range sshd.Recommended {
		id := "ssh." + strings.ToLower(s.Keyword)
		r := Run(Host{SSH: loose(s.Keyword, "loose", s.Value, "")}, testNow)
		if len(r.Findings) != 1 || r.Findings[0].Check != id || !strings.Contains(r.Findings[0].Finding, s.Keyword+" loose") {
			t.Errorf("%s: %+v", id, r.Findings)
		}
		if r := Run(Host{SSH: hardened}, testNow); !slices.Contains(r.Passed, id) {
			t.Errorf("%s does not pass on a hardened sshd: %+v", id, r)
		}
	}
}
