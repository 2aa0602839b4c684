// Package guard is moat's brute-force guard: it reads what services log
// (sources), recognises failed logins in it (filters), counts them per
// address in a sliding window (detector), decides bans (decisions) and
// has them enforced (the firewall's kernel sets, the edge). The parts are
// kept apart so that each can be tested, and replaced, alone.
//
// This file holds the filters: a line in, a failed attempt out.
package guard

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Attempt is one failed login seen in a log line.
type Attempt struct {
	Addr netip.Addr
	// Port is the client's source port when the line has one; lines of
	// one connection (address and port) count as one attempt.
	Port uint16
	// Kind says what failed, like "password" or "invalid user".
	Kind string
	User string
}

// Filter recognises failed attempts in log lines.
type Filter interface {
	Match(line string) (Attempt, bool)
}

// message strips the prefix a line comes with: a syslog timestamp, host
// and program ("Nov 21 07:00:01 host sshd[123]: "), or an ISO 8601 one
// (rsyslog's high-precision format); a bare line (sshd -E, or the MESSAGE
// field of the journal) is returned as it is. program is the name before
// the "[pid]:" or ":" when there is one.
func message(line string) (msg, program string) {
	line = strings.TrimRight(line, "\r\n")
	rest, ok := skipTimestamp(line)
	if !ok {
		return line, ""
	}
	// "host program[pid]: message" or "host program: message"
	host, rest, ok := strings.Cut(rest, " ")
	if !ok || host == "" {
		return line, ""
	}
	prog, msg, ok := strings.Cut(rest, ": ")
	if !ok {
		return line, ""
	}
	if i := strings.IndexByte(prog, '['); i >= 0 && strings.HasSuffix(prog, "]") {
		prog = prog[:i]
	}
	if strings.ContainsAny(prog, " ") {
		return line, ""
	}
	return msg, prog
}

// skipTimestamp returns what follows a leading "Mmm dd hh:mm:ss " or
// "2006-01-02T15:04:05[.frac][zone] ".
func skipTimestamp(line string) (string, bool) {
	if len(line) > 16 && line[3] == ' ' && line[6] == ' ' && line[9] == ':' && line[12] == ':' && line[15] == ' ' && isMonth(line[:3]) {
		return line[16:], true
	}
	if len(line) > 20 && line[4] == '-' && line[7] == '-' && line[10] == 'T' && line[13] == ':' {
		if i := strings.IndexByte(line, ' '); i > 0 {
			return line[i+1:], true
		}
	}
	return "", false
}

func isMonth(s string) bool {
	switch s {
	case "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec":
		return true
	}
	return false
}

// SSHD is the built-in filter for OpenSSH 8.x and 9.x: failed passwords,
// invalid users, failed public keys, too many authentication failures,
// connections closed or reset during authentication, users not allowed,
// and the like. Lines from other programs (in a syslog file) are skipped;
// PAM's own lines, which repeat sshd's without the client's port, are not
// counted.
type SSHD struct{}

// sshdPattern is one message shape: a literal that the message must
// contain (checked first, and cheaply), and where the user and the
// address are.
type sshdPattern struct {
	kind    string
	literal string // the message contains it; the regexp runs only then
	re      *regexp.Regexp
}

var sshdPatterns = func() []sshdPattern {
	const addr = `(?P<addr>[0-9A-Fa-f:.]+(?:%[^ ]+)?)`
	const port = ` port (?P<port>\d+)`
	const user = `(?P<user>.*?)`
	p := func(kind, literal, expr string) sshdPattern {
		return sshdPattern{kind: kind, literal: literal, re: regexp.MustCompile(`^` + expr)}
	}
	return []sshdPattern{
		// The order matters only for speed: the common lines first.
		p("invalid user", "Failed password for invalid user ", `Failed password for invalid user `+user+` from `+addr+port),
		p("password", "Failed password for ", `Failed password for `+user+` from `+addr+port),
		p("invalid user", "Invalid user ", `Invalid user `+user+` from `+addr+port),
		p("invalid user", "Failed none for invalid user ", `Failed none for invalid user `+user+` from `+addr+port),
		p("publickey", "Failed publickey for ", `Failed publickey for (?:invalid user )?`+user+` from `+addr+port),
		p("keyboard-interactive", "Failed keyboard-interactive", `Failed keyboard-interactive/pam for (?:invalid user )?`+user+` from `+addr+port),
		p("too many failures", "maximum authentication attempts exceeded for ", `(?:error: )?maximum authentication attempts exceeded for (?:invalid user )?`+user+` from `+addr+port),
		p("too many failures", "Too many authentication failures", `Disconnecting (?:authenticating|invalid) user `+user+` `+addr+port+`: Too many authentication failures`),
		p("closed during authentication", " [preauth]", `(?:Connection closed|Connection reset|Disconnected from) (?:by |from )?(?:authenticating|invalid) user `+user+` `+addr+port+` \[preauth\]`),
		p("not allowed", " not allowed because ", `User `+user+` from `+addr+` not allowed because `),
	}
}()

// Match implements Filter.
func (SSHD) Match(line string) (Attempt, bool) {
	msg, prog := message(line)
	if prog != "" && prog != "sshd" && prog != "sshd-session" {
		return Attempt{}, false
	}
	for i := range sshdPatterns {
		pat := &sshdPatterns[i]
		if !strings.Contains(msg, pat.literal) {
			continue
		}
		if m := pat.re.FindStringSubmatch(msg); m != nil {
			return attemptFrom(pat.re, m, pat.kind)
		}
	}
	return Attempt{}, false
}

// attemptFrom reads the groups addr, port and user of a match of re.
func attemptFrom(re *regexp.Regexp, m []string, kind string) (Attempt, bool) {
	a := Attempt{Kind: kind}
	for j, name := range re.SubexpNames() {
		switch name {
		case "addr":
			addr, err := netip.ParseAddr(strings.Trim(m[j], "[]"))
			if err != nil {
				return Attempt{}, false
			}
			a.Addr = addr.WithZone("").Unmap()
		case "port":
			n, _ := strconv.ParseUint(m[j], 10, 16)
			a.Port = uint16(n)
		case "user":
			a.User = m[j]
		}
	}
	return a, a.Addr.IsValid()
}

// UserFilter is a filter the owner defines for an app's log: a regular
// expression with a named group "addr" for the client's address (and
// optionally "user" and "port"), and an optional literal that a line must
// contain before the expression runs.
type UserFilter struct {
	Name    string
	Literal string
	re      *regexp.Regexp
}

// NewUserFilter checks and compiles a user's filter: the expression must
// compile, have an "addr" group, and not match an empty line (which would
// count every line as a failure).
func NewUserFilter(name, expr, literal string) (*UserFilter, error) {
	bad := func(problem, fix string) error {
		return fmt.Errorf("filter %s: regex %q %s; %s", name, expr, problem, fix)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, bad("does not compile ("+err.Error()+")", "fix the expression (Go's RE2 syntax: no backreferences or lookarounds)")
	}
	if re.SubexpIndex("addr") < 0 {
		return nil, bad("has no group named addr", `capture the client's address as (?P<addr>\S+)`)
	}
	if re.MatchString("") {
		return nil, bad("matches an empty line, so it would count every line as a failed login", "anchor it to the words of the failure message, like ^Login failed for .* from (?P<addr>\\S+)")
	}
	if literal != "" && !strings.Contains(expr, regexp.QuoteMeta(literal)) && !strings.Contains(expr, literal) {
		return nil, bad("does not contain its literal "+strconv.Quote(literal), "give a literal the expression itself requires, or none")
	}
	return &UserFilter{Name: name, Literal: literal, re: re}, nil
}

// Match implements Filter.
func (f *UserFilter) Match(line string) (Attempt, bool) {
	if f.Literal != "" && !strings.Contains(line, f.Literal) {
		return Attempt{}, false
	}
	m := f.re.FindStringSubmatch(line)
	if m == nil {
		return Attempt{}, false
	}
	return attemptFrom(f.re, m, f.Name)
}
