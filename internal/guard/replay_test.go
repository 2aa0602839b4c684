package guard

import (
	"testing"
	"time"
)

func TestLooksFailed(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{"pam_unix(sshd:auth): authentication failure; rhost=198.51.100.9 user=root", true},
		{"Login FAILED for bob from [2001:db8::9]:51000", true},
		{"denied access to ::ffff:192.0.2.1", true},
		{"Invalid password for bob (client 10.0.0.1,)", true},
		{"authentication failure; logname= uid=0 euid=0 tty=ssh", false},  // no address
		{"Accepted publickey for owner from 192.0.2.1 port 51000", false}, // no failure
		{"failed to read version 1.2.3", false},                           // not an address
		{"failed at 12:34:56", false},
	} {
		if got := looksFailed(c.line); got != c.want {
			t.Errorf("looksFailed(%q) = %v", c.line, got)
		}
	}
}

func TestLineTime(t *testing.T) {
	for _, c := range []struct {
		line string
		want string // RFC 3339 in UTC; empty: none
	}{
		{"Nov 21 07:00:05 vps sshd[1]: x", "2026-11-21T07:00:05Z"},
		{"Feb  3 23:59:59 vps sshd[1]: x", "2026-02-03T23:59:59Z"},
		{"2026-11-21T07:00:01.5+01:00 vps sshd[1]: x", "2026-11-21T06:00:01Z"},
		{"Failed password for root from 192.0.2.1", ""},
	} {
		at, ok := lineTime(c.line, 2026)
		got := ""
		if ok {
			got = time.Date(at.Year(), at.Month(), at.Day(), at.Hour(), at.Minute(), at.Second(), 0, time.UTC).Format(time.RFC3339)
			if at.Location() != time.Local {
				got = at.UTC().Truncate(time.Second).Format(time.RFC3339)
			}
		}
		if got != c.want {
			t.Errorf("lineTime(%q) = %q, want %q", c.line, got, c.want)
		}
	}
}

func TestLooksFailedCases(t *testing.T) {
	for _, line := range []string{
		"INCORRECT password from 192.0.2.7", "Unauthorized: 192.0.2.7", "wrong PIN from 192.0.2.7",
		"BAD PASSWORD 192.0.2.7", "refused connect from 192.0.2.7", "Denied 192.0.2.7",
	} {
		if !looksFailed(line) {
			t.Errorf("looksFailed(%q) = false", line)
		}
	}
	for _, line := range []string{"index 192.0.2.7", "in from 192.0.2.7", "bad request 192.0.2.7", "fai 192.0.2.7"} {
		if looksFailed(line) {
			t.Errorf("looksFailed(%q) = true", line)
		}
	}
}
