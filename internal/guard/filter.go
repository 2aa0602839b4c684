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
	"slices"
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
// connections closed or reset during authentication, and the like. Lines
// from other programs (in a syslog file) are skipped. Not counted: PAM's
// own lines, which repeat sshd's without the client's port, and "User X
// from A not allowed because ...", which is always followed by a line of
// the same attempt that has the port (a failed password or a closed
// connection of an "invalid user").
//
// The address is read from where sshd writes it, at the end of the line:
// the user name before it is the client's to choose, and a name like
// "x from 192.0.2.1 port 22" must not get 192.0.2.1 banned. So each shape
// is parsed from its fixed ending backwards, not with a regular
// expression from the front; and a line that could be read two ways
// (the key details after a failed public key are partly the client's too)
// is not counted, since the connection's closing line counts it.
type SSHD struct{}

// sshdShape is one message shape: what it starts with, what comes before
// the address (" from " or " "), and what ends it after the port.
type sshdShape struct {
	kind   string
	prefix string
	lead   string
	// end follows the port: exactly, or, with keyInfo, followed by
	// ": " and the key's details.
	end     string
	keyInfo bool
}

// sshdShapes, by the first byte of the message. Each prefix ends where the
// user name begins (after "invalid user " where sshd writes it).
var sshdShapes = map[byte][]sshdShape{
	'F': {
		{kind: "invalid user", prefix: "Failed password for invalid user ", lead: " from ", end: " ssh2"},
		{kind: "password", prefix: "Failed password for ", lead: " from ", end: " ssh2"},
		{kind: "invalid user", prefix: "Failed none for invalid user ", lead: " from ", end: " ssh2"},
		{kind: "publickey", prefix: "Failed publickey for invalid user ", lead: " from ", end: " ssh2", keyInfo: true},
		{kind: "publickey", prefix: "Failed publickey for ", lead: " from ", end: " ssh2", keyInfo: true},
		{kind: "keyboard-interactive", prefix: "Failed keyboard-interactive/pam for invalid user ", lead: " from ", end: " ssh2"},
		{kind: "keyboard-interactive", prefix: "Failed keyboard-interactive/pam for ", lead: " from ", end: " ssh2"},
	},
	'I': {
		{kind: "invalid user", prefix: "Invalid user ", lead: " from "},
	},
	'm': {
		{kind: "too many failures", prefix: "maximum authentication attempts exceeded for invalid user ", lead: " from ", end: " ssh2 [preauth]"},
		{kind: "too many failures", prefix: "maximum authentication attempts exceeded for ", lead: " from ", end: " ssh2 [preauth]"},
	},
	'D': {
		{kind: "too many failures", prefix: "Disconnecting authenticating user ", lead: " ", end: ": Too many authentication failures [preauth]"},
		{kind: "too many failures", prefix: "Disconnecting invalid user ", lead: " ", end: ": Too many authentication failures [preauth]"},
		{kind: "closed during authentication", prefix: "Disconnected from authenticating user ", lead: " ", end: " [preauth]"},
		{kind: "closed during authentication", prefix: "Disconnected from invalid user ", lead: " ", end: " [preauth]"},
	},
	'C': {
		{kind: "closed during authentication", prefix: "Connection closed by authenticating user ", lead: " ", end: " [preauth]"},
		{kind: "closed during authentication", prefix: "Connection closed by invalid user ", lead: " ", end: " [preauth]"},
		{kind: "closed during authentication", prefix: "Connection reset by authenticating user ", lead: " ", end: " [preauth]"},
		{kind: "closed during authentication", prefix: "Connection reset by invalid user ", lead: " ", end: " [preauth]"},
	},
}

// Match implements Filter.
func (SSHD) Match(line string) (Attempt, bool) {
	msg, prog := message(line)
	if prog != "" && prog != "sshd" && prog != "sshd-session" {
		return Attempt{}, false
	}
	msg = strings.TrimPrefix(msg, "error: ")
	if msg == "" {
		return Attempt{}, false
	}
	for i := range sshdShapes[msg[0]] {
		sh := &sshdShapes[msg[0]][i]
		rest, ok := strings.CutPrefix(msg, sh.prefix)
		if !ok {
			continue
		}
		if sh.keyInfo {
			return sh.matchKeyInfo(rest)
		}
		rest, ok = strings.CutSuffix(rest, sh.end)
		if !ok {
			return Attempt{}, false
		}
		i := strings.LastIndex(rest, " port ")
		if i < 0 {
			return Attempt{}, false
		}
		return sh.attempt(rest[:i], rest[i+len(" port "):])
	}
	return Attempt{}, false
}

// matchKeyInfo reads "USER from ADDR port PORT ssh2[: KEY DETAILS]",
// where both the user and the details are partly the client's: it counts
// only a line that reads one way.
func (sh *sshdShape) matchKeyInfo(rest string) (Attempt, bool) {
	var found Attempt
	n := 0
	for off := 0; ; {
		i := strings.Index(rest[off:], " port ")
		if i < 0 {
			break
		}
		i += off
		off = i + 1
		after := rest[i+len(" port "):]
		digits := 0
		for digits < len(after) && digits < 6 && after[digits] >= '0' && after[digits] <= '9' {
			digits++
		}
		tail := after[digits:]
		if tail != sh.end && !strings.HasPrefix(tail, sh.end+": ") {
			continue
		}
		if a, ok := sh.attempt(rest[:i], after[:digits]); ok {
			found = a
			n++
		}
	}
	return found, n == 1
}

// attempt reads "USER<lead>ADDR" and the port's digits.
func (sh *sshdShape) attempt(userAddr, port string) (Attempt, bool) {
	if len(port) == 0 || len(port) > 5 {
		return Attempt{}, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return Attempt{}, false
	}
	j := strings.LastIndex(userAddr, sh.lead)
	if j < 0 {
		return Attempt{}, false
	}
	addr, err := netip.ParseAddr(userAddr[j+len(sh.lead):])
	if err != nil {
		return Attempt{}, false
	}
	return Attempt{Addr: addr.WithZone("").Unmap(), Port: uint16(p), Kind: sh.kind, User: userAddr[:j]}, true
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
		return &FilterError{Name: name, Expr: expr, Problem: problem, Fix: fix}
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, bad("does not compile ("+err.Error()+")", "fix the expression (Go's RE2 syntax: no backreferences or lookarounds)")
	}
	var others []string
	for _, g := range re.SubexpNames() {
		switch g {
		case "", "addr", "user", "port":
		default:
			if !slices.Contains(others, g) {
				others = append(others, g)
			}
		}
	}
	if re.SubexpIndex("addr") < 0 {
		if len(others) > 0 {
			return nil, bad("has no group named addr (it has "+groups(others)+")", `name the group of the client's address addr: (?P<addr>\S+)`)
		}
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

// UnreadGroups are the named groups of a filter's expression that moat
// does not read (it reads addr, user and port), written as in the
// expression: a misspelt group that counts nothing. moat guard test
// refuses them; a jail of moat.yaml keeps working with them.
func UnreadGroups(f *UserFilter) string {
	var others []string
	for _, g := range f.re.SubexpNames() {
		switch g {
		case "", "addr", "user", "port":
		default:
			if !slices.Contains(others, g) {
				others = append(others, g)
			}
		}
	}
	if len(others) == 0 {
		return ""
	}
	return groups(others)
}

// groups writes named groups as they are written in an expression.
func groups(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "(?P<" + n + ">...)"
	}
	return strings.Join(out, ", ")
}

// FilterError is a user's filter refused: what is wrong with it, and the
// fix.
type FilterError struct {
	Name, Expr   string
	Problem, Fix string
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("filter %s: regex %q %s; %s", e.Name, e.Expr, e.Problem, e.Fix)
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
