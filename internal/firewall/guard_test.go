package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuard(t *testing.T) {
	office := netip.MustParseAddr("203.0.113.7")
	access := Access{Caller: office, SSHPort: 22, HTTP01Domains: []string{"a.example.com"}, HTTPPort: 80, EdgeServes: true, HTTPSPort: 443}
	cases := []struct {
		name    string
		rules   []Rule
		a       Access
		force   bool
		refuses []string // parts of the message; none for no refusal
		lockout bool
	}{
		{"all open", []Rule{rule("22/tcp"), rule("80/tcp"), rule("443/tcp")}, access, false, nil, false},
		{"ssh only from the caller", []Rule{rule("22/tcp", "203.0.113.0/24"), rule("80/tcp"), rule("443/tcp")}, access, false, nil, false},
		{"80 closed while HTTP-01 renews", []Rule{rule("22/tcp"), rule("443/tcp")}, access, false, []string{"close 80/tcp", "a.example.com renew over HTTP-01", "TLS-ALPN-01"}, false},
		{"443 open over IPv4 only", []Rule{rule("22/tcp"), rule("80/tcp"), rule("443/tcp", "0.0.0.0/0")}, access, false, []string{"close 443/tcp", "IPv6"}, false},
		{"80 open to some only", []Rule{rule("22/tcp"), rule("80/tcp", "198.51.100.0/24"), rule("443/tcp")}, access, false, []string{"close 80/tcp"}, false},
		{"80 closed without HTTP-01", []Rule{rule("22/tcp"), rule("443/tcp")}, Access{Caller: office, SSHPort: 22, HTTPPort: 80, EdgeServes: true, HTTPSPort: 443}, false, nil, false},
		{"443 closed while the edge serves", []Rule{rule("22/tcp"), rule("80/tcp")}, access, false, []string{"close 443/tcp", "apps would go offline"}, false},
		{"ssh cut off", []Rule{rule("22/tcp", "198.51.100.0/24"), rule("80/tcp"), rule("443/tcp")}, access, false, []string{"connected from 203.0.113.7 to port 22", "moat firewall allow 22/tcp from 203.0.113.7", "--confirm-within"}, true},
		{"ssh cut off, forced", []Rule{rule("80/tcp"), rule("443/tcp")}, access, true, nil, false},
		{"force does not open 443", []Rule{rule("80/tcp")}, access, true, []string{"close 443/tcp"}, false},
		{"not over ssh", []Rule{rule("80/tcp"), rule("443/tcp")}, Access{HTTPPort: 80, HTTPSPort: 443}, false, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Guard(c.rules, c.a, c.force)
			if len(c.refuses) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("not refused")
			}
			for _, part := range c.refuses {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("message lacks %q:\n%v", part, err)
				}
			}
			if errors.Is(err, ErrLockout) != c.lockout {
				t.Errorf("errors.Is(err, ErrLockout) = %v, want %v", !c.lockout, c.lockout)
			}
		})
	}
}

func TestSSHCaller(t *testing.T) {
	cases := []struct {
		in   string
		addr string
		port uint16
		ok   bool
	}{
		{"203.0.113.7 51234 198.51.100.1 22", "203.0.113.7", 22, true},
		{"2001:db8::7 51234 2001:db8::1 2222", "2001:db8::7", 2222, true},
		{"::ffff:203.0.113.7 1 10.0.0.1 22", "203.0.113.7", 22, true},
		{"", "", 0, false},
		{"nonsense", "", 0, false},
		{"203.0.113.7 1 10.0.0.1 0", "", 0, false},
	}
	for _, c := range cases {
		a, p, ok := SSHCaller(c.in)
		if ok != c.ok || (ok && (a.String() != c.addr || p != c.port)) {
			t.Errorf("SSHCaller(%q) = %v %d %v, want %s %d %v", c.in, a, p, ok, c.addr, c.port, c.ok)
		}
	}
}

func TestParseProcNetTCP(t *testing.T) {
	text := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100000A:0016 0700710B:C350 01 00000000:00000000 02:00000000 00000000     0        0 2 4 0000000000000000 20 4 30 10 -1
   2: 0100000A:1F90 0800710B:C351 01 00000000:00000000 02:00000000 00000000     0        0 3 4 0000000000000000 20 4 30 10 -1
   3: 0100000A:0016 0900710B:C352 06 00000000:00000000 02:00000000 00000000     0        0 4 4 0000000000000000 20 4 30 10 -1
`
	got := parseProcNetTCP(text, 22)
	if len(got) != 1 || got[0].String() != "11.113.0.7:50000" {
		t.Errorf("IPv4 peers on 22: %v, want [11.113.0.7:50000]", got)
	}
	text6 := `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0016 B80D0120000000000000000007000000:C350 01 00000000:00000000
   1: 00000000000000000000000001000000:0016 0000000000000000FFFF00000700710B:C351 01 00000000:00000000
`
	got = parseProcNetTCP(text6, 22)
	if len(got) != 2 || got[0].String() != "[2001:db8::7]:50000" || got[1].String() != "11.113.0.7:50001" {
		t.Errorf("IPv6 peers on 22: %v, want [[2001:db8::7]:50000 11.113.0.7:50001]", got)
	}
}

func TestGuardSessions(t *testing.T) {
	rules := []Rule{rule("22/tcp", "192.0.2.0/24")}
	a := Access{Sessions: []Session{{Peer: netip.MustParseAddr("203.0.113.7"), Port: 22}, {Peer: netip.MustParseAddr("127.0.0.1"), Port: 22}}}
	err := Guard(rules, a, false)
	if !errors.Is(err, ErrLockout) || !strings.Contains(err.Error(), "session is open from 203.0.113.7 to port 22") || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("Guard = %v, want a refusal naming the session from 203.0.113.7 only", err)
	}
	if err := Guard(rules, a, true); err != nil {
		t.Errorf("forced: %v", err)
	}
	if err := Guard([]Rule{rule("22/tcp")}, a, false); err != nil {
		t.Errorf("SSH open to all: %v", err)
	}
}

func TestSSHDPorts(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("sshd_config.d/a.conf", "Port=2222\n")
	cases := []struct {
		name, text, want string
	}{
		{"none", "PasswordAuthentication no\n", "[22]"},
		{"port", "Port 2200\n", "[2200]"},
		{"equals and include", "Include sshd_config.d/*.conf\nPort 22\n", "[2222 22]"},
		{"listen address", "ListenAddress 0.0.0.0:2022\nListenAddress [::]:2023\nListenAddress 10.0.0.1\n", "[2022 2023]"},
		{"match ends it", "Port 22\nMatch User x\n  Port 9999\n", "[22]"},
		{"comment", "# Port 1\n  port 23\n", "[23]"},
	}
	for _, c := range cases {
		got, note := SSHDPorts(write("sshd_config", c.text))
		if fmt.Sprint(got) != c.want || note != "" {
			t.Errorf("%s: %v %q, want %s", c.name, got, note, c.want)
		}
	}
	if got, note := SSHDPorts(filepath.Join(dir, "missing")); fmt.Sprint(got) != "[22]" || !strings.Contains(note, "assumed on port 22") {
		t.Errorf("missing file: %v %q", got, note)
	}
}
