package guard

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSSHDFilter(t *testing.T) {
	cases := []struct {
		line       string
		addr, kind string
		port       uint16
		user       string
	}{
		// syslog-prefixed (auth.log)
		{"Nov 21 07:00:01 vps sshd[1234]: Failed password for root from 203.0.113.7 port 50122 ssh2", "203.0.113.7", "password", 50122, "root"},
		{"Nov  1 07:00:01 vps sshd[1234]: Failed password for invalid user admin from 203.0.113.7 port 50123 ssh2", "203.0.113.7", "invalid user", 50123, "admin"},
		{"Nov 21 07:00:01 vps sshd[1234]: Invalid user admin from 203.0.113.7 port 50123", "203.0.113.7", "invalid user", 50123, "admin"},
		{"2026-11-21T07:00:01.123456+00:00 vps sshd[99]: Failed password for alice from 2001:db8::7 port 40000 ssh2", "2001:db8::7", "password", 40000, "alice"},
		{"Nov 21 07:00:01 vps sshd-session[1234]: Failed publickey for git from 198.51.100.4 port 2222 ssh2: ED25519 SHA256:abc", "198.51.100.4", "publickey", 2222, "git"},
		// bare (sshd -E, or the journal's MESSAGE)
		{"Failed password for invalid user user name from 198.51.100.9 port 1 ssh2", "198.51.100.9", "invalid user", 1, "user name"},
		{"Failed none for invalid user oracle from 198.51.100.9 port 2 ssh2", "198.51.100.9", "invalid user", 2, "oracle"},
		{"error: maximum authentication attempts exceeded for root from 192.0.2.1 port 3 ssh2 [preauth]", "192.0.2.1", "too many failures", 3, "root"},
		{"maximum authentication attempts exceeded for invalid user x from 192.0.2.1 port 4 ssh2 [preauth]", "192.0.2.1", "too many failures", 4, "x"},
		{"Disconnecting authenticating user root 192.0.2.2 port 5: Too many authentication failures [preauth]", "192.0.2.2", "too many failures", 5, "root"},
		{"Disconnecting invalid user test 192.0.2.2 port 6: Too many authentication failures [preauth]", "192.0.2.2", "too many failures", 6, "test"},
		{"Connection closed by authenticating user root 192.0.2.3 port 7 [preauth]", "192.0.2.3", "closed during authentication", 7, "root"},
		{"Connection closed by invalid user admin 192.0.2.3 port 8 [preauth]", "192.0.2.3", "closed during authentication", 8, "admin"},
		{"Disconnected from authenticating user root 192.0.2.3 port 9 [preauth]", "192.0.2.3", "closed during authentication", 9, "root"},
		{"Connection reset by invalid user ubnt 192.0.2.3 port 10 [preauth]", "192.0.2.3", "closed during authentication", 10, "ubnt"},
		{"Failed keyboard-interactive/pam for invalid user pi from ::ffff:192.0.2.4 port 11 ssh2", "192.0.2.4", "keyboard-interactive", 11, "pi"},
		{"Failed publickey for invalid user x from 192.0.2.6 port 12 ssh2: ED25519-CERT SHA256:abc ID y (serial 0) CA ED25519 SHA256:def", "192.0.2.6", "publickey", 12, "x"},
		// The user name is the client's: the address is sshd's, at the end.
		{"Invalid user x from 10.9.9.9 port 7 from 192.0.2.7 port 40870", "192.0.2.7", "invalid user", 40870, "x from 10.9.9.9 port 7"},
		{"Failed password for invalid user x from 10.9.9.9 port 7 ssh2 from 192.0.2.7 port 40870 ssh2", "192.0.2.7", "invalid user", 40870, "x from 10.9.9.9 port 7 ssh2"},
		{"Connection closed by invalid user x 10.9.9.9 port 7 [preauth] 192.0.2.7 port 40870 [preauth]", "192.0.2.7", "closed during authentication", 40870, "x 10.9.9.9 port 7 [preauth]"},
		{"Disconnecting invalid user a 10.9.9.9 port 1: Too many authentication failures [preauth] 192.0.2.7 port 2: Too many authentication failures [preauth]", "192.0.2.7", "too many failures", 2, "a 10.9.9.9 port 1: Too many authentication failures [preauth]"},
		{"Failed publickey for x from 10.9.9.9 port 7 ssh2 from 192.0.2.7 port 40870 ssh2: RSA SHA256:abc", "192.0.2.7", "publickey", 40870, "x from 10.9.9.9 port 7 ssh2"},
	}
	for _, c := range cases {
		a, ok := SSHD{}.Match(c.line)
		if !ok {
			t.Errorf("no match: %q", c.line)
			continue
		}
		if a.Addr.String() != c.addr || a.Kind != c.kind || a.Port != c.port || a.User != c.user {
			t.Errorf("%q:\n got %s %q port %d user %q\nwant %s %q port %d user %q", c.line, a.Addr, a.Kind, a.Port, a.User, c.addr, c.kind, c.port, c.user)
		}
	}
	for _, line := range []string{
		"Nov 21 07:00:01 vps sshd[1234]: Accepted publickey for alice from 203.0.113.7 port 50122 ssh2: ED25519 SHA256:abc",
		"Nov 21 07:00:01 vps sshd[1234]: Accepted password for alice from 203.0.113.7 port 50122 ssh2",
		"Nov 21 07:00:01 vps sshd[1234]: Connection closed by 203.0.113.7 port 50122",
		"Nov 21 07:00:01 vps sshd[1234]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  user=root",
		"Nov 21 07:00:01 vps sshd[1234]: Received disconnect from 203.0.113.7 port 50122:11: disconnected by user",
		"Nov 21 07:00:01 vps CRON[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
		"Nov 21 07:00:01 vps sshd[1234]: Server listening on 0.0.0.0 port 22.",
		"Failed password for root from not-an-address port 1 ssh2",
		// Always followed by a line of the same attempt with the port.
		"User bob from 192.0.2.5 not allowed because not listed in AllowUsers",
		// Read two ways (the user's and the key's parts both look like
		// sshd's): not counted; the connection's closing line counts.
		"Failed publickey for x from 10.9.9.9 port 7 ssh2: y from 192.0.2.7 port 40870 ssh2: RSA SHA256:abc",
		"Failed password for root from 203.0.113.7 port 99999 ssh2",
		"Failed password for root from 203.0.113.7 port  ssh2",
		"",
	} {
		if a, ok := (SSHD{}).Match(line); ok {
			t.Errorf("matched what is no failed login: %q -> %+v", line, a)
		}
	}
}

func TestUserFilter(t *testing.T) {
	cases := []struct {
		expr, literal, problem string
	}{
		{`^Login failed for .* from (?P<addr>\S+)$`, "Login failed", ""},
		{`from (?P<addr>\S+)`, "", ""},
		{`Login failed for .* from (\S+)`, "", "no group named addr"},
		{`(?P<addr>\S*)`, "", "matches an empty line"},
		{`.*`, "", "no group named addr"},
		{`failed from (?P<address>\S+)`, "", "has no group named addr (it has (?P<address>...))"},
		{`Login (?P<addr>[`, "", "does not compile"},
		{`^Login failed from (?P<addr>\S+)`, "Denied", "does not contain its literal"},
	}
	for _, c := range cases {
		f, err := NewUserFilter("app", c.expr, c.literal)
		if c.problem == "" {
			if err != nil {
				t.Errorf("%q refused: %v", c.expr, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.problem) || f != nil {
			t.Errorf("%q: %v, want a refusal saying %q", c.expr, err, c.problem)
		}
	}
	if f, err := NewUserFilter("app", `failed for (?P<addr>\S+) as (?P<usr>\S+)`, ""); err != nil || UnreadGroups(f) != "(?P<usr>...)" {
		t.Errorf("a group moat does not read: %v %q", err, UnreadGroups(f))
	}
	f, err := NewUserFilter("gitea", `Failed authentication attempt for (?P<user>\S+) from (?P<addr>[^:\s]+|\[[^\]]+\]):(?P<port>\d+)`, "Failed authentication attempt")
	if err != nil {
		t.Fatal(err)
	}
	a, ok := f.Match("2026/11/21 07:00:01 ...rs/web/auth.go:207:SignInPost() [I] Failed authentication attempt for bob from [2001:db8::9]:51000: invalid credentials")
	if !ok || a.Addr != netip.MustParseAddr("2001:db8::9") || a.User != "bob" || a.Port != 51000 {
		t.Errorf("gitea line: %+v %v", a, ok)
	}
	if _, ok := f.Match("2026/11/21 07:00:01 Successful login for bob"); ok {
		t.Error("matched a successful login")
	}
}

func FuzzSSHDFilter(f *testing.F) {
	for _, s := range []string{
		"Nov 21 07:00:01 vps sshd[1234]: Failed password for root from 203.0.113.7 port 50122 ssh2",
		"Failed password for invalid user a from 2001:db8::1 port 1 ssh2",
		"Connection closed by invalid user admin 192.0.2.3 port 8 [preauth]",
		"2026-11-21T07:00:01.1+00:00 h sshd[1]: Invalid user x from 1.2.3.4 port 5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		a, ok := SSHD{}.Match(line)
		if !ok {
			return
		}
		if !a.Addr.IsValid() || a.Addr.Zone() != "" || a.Addr.Is4In6() {
			t.Fatalf("match with a bad address: %q -> %+v", line, a)
		}
		if !strings.Contains(line, a.Addr.String()) && !strings.Contains(strings.ToLower(line), strings.ToLower(a.Addr.String())) && !strings.Contains(line, "::") {
			t.Fatalf("address %s is not in the line %q", a.Addr, line)
		}
	})
}

func FuzzUserFilter(f *testing.F) {
	f.Add(`from (?P<addr>\S+)`, "", "x from 1.2.3.4")
	f.Add(`(?P<addr>\S*)`, "", "")
	f.Add(`Login failed (?P<addr>[0-9.]+)`, "Login failed", "Login failed 10.0.0.1")
	f.Fuzz(func(t *testing.T, expr, literal, line string) {
		uf, err := NewUserFilter("fuzz", expr, literal)
		if err != nil {
			return
		}
		if uf.re.MatchString("") || uf.re.SubexpIndex("addr") < 0 {
			t.Fatalf("accepted a filter that matches an empty line or has no addr group: %q", expr)
		}
		if a, ok := uf.Match(line); ok && (!a.Addr.IsValid() || a.Addr.Is4In6()) {
			t.Fatalf("match with a bad address: %+v", a)
		}
	})
}
