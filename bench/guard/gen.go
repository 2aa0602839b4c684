package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"time"
)

// A shape is one kind of line the generator writes, and what each side
// is expected to make of it. The generator counts the lines of each
// shape it writes; that count is the ground truth both matchers are
// checked against.
type shape struct {
	name string
	// moat is the Kind moat's SSHD filter gives the line, or "" when the
	// line is not a failed login to moat.
	moat string
	// f2b is a piece of the text of the one regex of fail2ban's stock
	// sshd filter (mode normal) that matches the line, or "" when none
	// does. f2bFails says whether fail2ban counts it as a failure; a line
	// that matches without being one (a <F-NOFAIL> helper, or an
	// "Accepted" that ends a multi-line failure) is "ignored" in its
	// summary.
	f2b      string
	f2bFails bool
	// f2bAlso is a second regex that matches the line as <F-NOFAIL>.
	// fail2ban-server stops at the first regex and counts a failure;
	// fail2ban-regex in its default mode (every regex on every line)
	// reports the line as ignored.
	f2bAlso string
}

// The shapes. The words are OpenSSH 8.x/9.x's and Debian's PAM's.
const (
	shInvalidUser = iota
	shFailedPasswordInvalid
	shFailedPassword
	shFailedKbdInt
	shFailedNoneInvalid
	shFailedPublickey
	shFailedPublickeyInvalid
	shMaxAuthTries
	shTooManyFailures
	shClosedAuthenticating
	shDisconnectedAuthenticating
	shNotAllowedUsers
	shNotAllowedGroups
	shPAMAuthFailure
	shPAMMoreFailures
	shPAMCheckPass
	shReceivedDisconnect
	shAccepted
	shSessionOpened
	shSessionClosed
	shDisconnectedUser
	shClosedPreauth
	shKexClosed
	shClosedNoPreauth
	shUnableToNegotiate
	shBannerExchange
	shTimeout
	shLogind
	shCron
	nShapes
)

// The fail2ban regexes, by a piece of their text.
const (
	f2bFailed    = "^Failed (?:<F-NOFAIL>publickey"
	f2bClosed    = "(Connection (?:closed|reset)|Disconnected)</F-MLFFORGET></F-NOFAIL> (?:by|from)"
	f2bReceived  = "Received <F-MLFFORGET>disconnect</F-MLFFORGET></F-NOFAIL> from"
	f2bPAMFailed = "(sshd:auth\\):\\s+authentication failure;"
)

var shapes = [nShapes]shape{
	shInvalidUser:                {"Invalid user U from A port P", "invalid user", "^[iI](?:llegal|nvalid) user", true, ""},
	shFailedPasswordInvalid:      {"Failed password for invalid user U from A port P ssh2", "invalid user", f2bFailed, true, ""},
	shFailedPassword:             {"Failed password for U from A port P ssh2", "password", f2bFailed, true, ""},
	shFailedKbdInt:               {"Failed keyboard-interactive/pam for [invalid user] U from A ...", "keyboard-interactive", f2bFailed, true, ""},
	shFailedNoneInvalid:          {"Failed none for invalid user U from A port P ssh2", "invalid user", f2bFailed, true, ""},
	shFailedPublickey:            {"Failed publickey for U from A port P ssh2: KEY", "publickey", f2bFailed, false, ""},
	shFailedPublickeyInvalid:     {"Failed publickey for invalid user U from A ...", "publickey", "^Failed publickey for invalid user", true, f2bFailed},
	shMaxAuthTries:               {"error: maximum authentication attempts exceeded for U from A ...", "too many failures", "^maximum authentication attempts exceeded", true, ""},
	shTooManyFailures:            {"Disconnecting authenticating user U A port P: Too many authentication failures", "too many failures", "", false, ""},
	shClosedAuthenticating:       {"Connection closed by authenticating/invalid user U A port P [preauth]", "closed during authentication", f2bClosed, false, ""},
	shDisconnectedAuthenticating: {"Disconnected from authenticating/invalid user U A port P [preauth]", "closed during authentication", f2bClosed, false, ""},
	shNotAllowedUsers:            {"User U from A not allowed because not listed in AllowUsers", "", "not allowed because not listed in AllowUsers", true, ""},
	shNotAllowedGroups:           {"User U from A not allowed because none of user's groups are listed in AllowGroups", "", "not allowed because none of user's groups", true, ""},
	shPAMAuthFailure:             {"pam_unix(sshd:auth): authentication failure; ... rhost=A", "", f2bPAMFailed, false, ""},
	shPAMMoreFailures:            {"PAM 2 more authentication failures; ... rhost=A", "", "", false, ""},
	shPAMCheckPass:               {"pam_unix(sshd:auth): check pass; user unknown", "", "", false, ""},
	shReceivedDisconnect:         {"Received disconnect from A port P:11: ...", "", f2bReceived, false, ""},
	shAccepted:                   {"Accepted publickey/password for U from A port P ssh2", "", "Accepted \\w+", false, ""},
	shSessionOpened:              {"pam_unix(sshd:session): session opened for user U", "", "", false, ""},
	shSessionClosed:              {"pam_unix(sshd:session): session closed for user U", "", "", false, ""},
	shDisconnectedUser:           {"Disconnected from user U A port P", "", "", false, ""},
	shClosedPreauth:              {"Connection closed by A port P [preauth]", "", f2bClosed, false, ""},
	shKexClosed:                  {"kex_exchange_identification: Connection closed by remote host", "", "", false, ""},
	shClosedNoPreauth:            {"Connection closed by A port P", "", f2bClosed, false, ""},
	shUnableToNegotiate:          {"Unable to negotiate with A port P: no matching key exchange method found", "", "", false, ""},
	shBannerExchange:             {"banner exchange: Connection from A port P: invalid format", "", "", false, ""},
	shTimeout:                    {"Timeout before authentication for A port P", "", "", false, ""},
	shLogind:                     {"systemd-logind: New session N of user U.", "", "", false, ""},
	shCron:                       {"CRON: pam_unix(cron:session) / CMD", "", "", false, ""},
}

// line is one generated line and its shape.
type line struct {
	text  string
	shape int
}

// session is the lines of one connection (or one cron run), written in
// order but interleaved with the other sessions under way, as a busy
// server's log is.
type session struct {
	prog  string // "sshd" or "CRON"
	pid   int
	lines []line
	// failed is set once a line of the session that moat counts has been
	// written: the session is then one failed connection.
	failed bool
}

// generator writes a log from a fixed seed: the same seed and size give
// the same file.
type generator struct {
	r      *rand.Rand
	bots   []netip.Addr // attackers, the first ones the busiest
	users  []netip.Addr // the owner's own addresses
	pid    int
	logind int // systemd-logind's session number
}

// Invalid users bots try, most common first.
var botUsers = []string{"admin", "test", "user", "ubuntu", "oracle", "postgres", "git", "ftpuser", "guest", "support",
	"pi", "deploy", "jenkins", "hadoop", "mysql", "test1", "administrator", "debian", "centos", "minecraft",
	"steam", "ts3", "nagios", "zabbix", "www", "web", "dev", "student", "sftp", "backup", "odoo", "es", "teamspeak", "vagrant", ""}

func newGenerator(seed uint64) *generator {
	g := &generator{r: rand.New(rand.NewPCG(seed, 0x6d6f6174)), pid: 1000}
	// 60,000 IPv4 attackers and 12,000 IPv6 ones; a third of the IPv6
	// ones share a /64 with another (one host rotating its addresses).
	for range 60_000 {
		g.bots = append(g.bots, g.publicIPv4())
	}
	for i := range 12_000 {
		var b [16]byte
		if i%3 == 2 {
			b = g.bots[len(g.bots)-1].As16()
		} else {
			copy(b[:2], []byte{0x20 | byte(g.r.IntN(16)), byte(g.r.IntN(256))})
			for j := 2; j < 8; j++ {
				b[j] = byte(g.r.IntN(256))
			}
		}
		for j := 8; j < 16; j++ {
			b[j] = byte(g.r.IntN(256))
		}
		g.bots = append(g.bots, netip.AddrFrom16(b))
	}
	g.r.Shuffle(len(g.bots), func(i, j int) { g.bots[i], g.bots[j] = g.bots[j], g.bots[i] })
	for range 8 {
		g.users = append(g.users, g.publicIPv4())
	}
	g.users = append(g.users, netip.MustParseAddr("2001:db8:4b1:7::12"), netip.MustParseAddr("2a02:8108:1dc0:4e00::3"))
	return g
}

// publicIPv4 is a random address outside the private and reserved ranges.
func (g *generator) publicIPv4() netip.Addr {
	for {
		a := netip.AddrFrom4([4]byte{byte(1 + g.r.IntN(223)), byte(g.r.IntN(256)), byte(g.r.IntN(256)), byte(1 + g.r.IntN(254))})
		if a.IsGlobalUnicast() && !a.IsPrivate() && a.As4()[0] != 100 {
			return a
		}
	}
}

// bot picks an attacker: a few are busy, most are seen a few times (a
// Zipf-like spread, as on a server on the internet).
func (g *generator) bot() netip.Addr {
	u := g.r.Float64()
	return g.bots[int(u*u*u*float64(len(g.bots)))]
}

func (g *generator) port() int { return 1024 + g.r.IntN(64511) }

func (g *generator) botUser() string {
	if g.r.IntN(4) == 0 {
		return fmt.Sprintf("%s%d", botUsers[g.r.IntN(len(botUsers)-1)], g.r.IntN(1000))
	}
	u := g.r.Float64()
	return botUsers[int(u*u*float64(len(botUsers)))]
}

func (g *generator) key() string {
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var sb strings.Builder
	for range 43 {
		sb.WriteByte(b64[g.r.IntN(64)])
	}
	return sb.String()
}

func (g *generator) nextPID() int {
	g.pid += 1 + g.r.IntN(40)
	if g.pid > 4_194_304 {
		g.pid = 1000
	}
	return g.pid
}

// newSession is one connection, picked by how often each kind shows up
// on an internet-facing sshd: mostly bots guessing passwords, some
// scanners, a few real logins, cron in between.
func (g *generator) newSession() session {
	s := session{prog: "sshd", pid: g.nextPID()}
	add := func(sh int, format string, args ...any) {
		s.lines = append(s.lines, line{fmt.Sprintf(format, args...), sh})
	}
	a, p := g.bot(), g.port()
	// end is how a bot's connection ends after its last failure.
	end := func(user string, invalid bool) {
		who := "authenticating user"
		if invalid {
			who = "invalid user"
		}
		switch n := g.r.IntN(10); {
		case n < 6:
			add(shReceivedDisconnect, "Received disconnect from %s port %d:11: Bye Bye [preauth]", a, p)
			add(shDisconnectedAuthenticating, "Disconnected from %s %s %s port %d [preauth]", who, user, a, p)
		case n < 9:
			add(shClosedAuthenticating, "Connection closed by %s %s %s port %d [preauth]", who, user, a, p)
		default:
			add(shDisconnectedAuthenticating, "Disconnected from %s %s %s port %d [preauth]", who, user, a, p)
		}
	}
	switch n := g.r.IntN(1000); {
	case n < 330: // an invalid user and a password: the two-line pair
		u := g.botUser()
		add(shInvalidUser, "Invalid user %s from %s port %d", u, a, p)
		add(shPAMCheckPass, "pam_unix(sshd:auth): check pass; user unknown")
		add(shPAMAuthFailure, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s", a)
		add(shFailedPasswordInvalid, "Failed password for invalid user %s from %s port %d ssh2", u, a, p)
		end(u, true)
	case n < 380: // an invalid user, and the bot hangs up before a password
		u := g.botUser()
		add(shInvalidUser, "Invalid user %s from %s port %d", u, a, p)
		add(shClosedAuthenticating, "Connection closed by invalid user %s %s port %d [preauth]", u, a, p)
	case n < 590: // root's password, once or a few times on one connection
		u := "root"
		if g.r.IntN(8) == 0 {
			u = []string{"ubuntu", "www-data", "mail", "backup"}[g.r.IntN(4)]
		}
		tries := 1
		if g.r.IntN(4) == 0 {
			tries = 2 + g.r.IntN(5)
		}
		add(shPAMAuthFailure, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s  user=%s", a, u)
		for range min(tries, 6) {
			add(shFailedPassword, "Failed password for %s from %s port %d ssh2", u, a, p)
		}
		if tries >= 6 {
			add(shMaxAuthTries, "error: maximum authentication attempts exceeded for %s from %s port %d ssh2 [preauth]", u, a, p)
			add(shTooManyFailures, "Disconnecting authenticating user %s %s port %d: Too many authentication failures [preauth]", u, a, p)
			add(shPAMMoreFailures, "PAM %d more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s  user=%s", tries-1, a, u)
		} else {
			if tries > 1 {
				add(shPAMMoreFailures, "PAM %d more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s  user=%s", tries-1, a, u)
			}
			end(u, false)
		}
	case n < 620: // keyboard-interactive, for an invalid user or root
		if g.r.IntN(2) == 0 {
			u := g.botUser()
			add(shInvalidUser, "Invalid user %s from %s port %d", u, a, p)
			add(shFailedKbdInt, "Failed keyboard-interactive/pam for invalid user %s from %s port %d ssh2", u, a, p)
			end(u, true)
		} else {
			add(shFailedKbdInt, "Failed keyboard-interactive/pam for root from %s port %d ssh2", a, p)
			end("root", false)
		}
	case n < 630: // "none" first, as some scanners do
		u := g.botUser()
		add(shInvalidUser, "Invalid user %s from %s port %d", u, a, p)
		add(shFailedNoneInvalid, "Failed none for invalid user %s from %s port %d ssh2", u, a, p)
		end(u, true)
	case n < 650: // a client offering key after key: too many failures
		u := []string{"root", "git", "ubuntu"}[g.r.IntN(3)]
		invalid := u != "root"
		who, pre := "authenticating user", ""
		if invalid {
			who, pre = "invalid user", "invalid user "
			add(shInvalidUser, "Invalid user %s from %s port %d", u, a, p)
		}
		for range 3 {
			sh := shFailedPublickey
			if invalid {
				sh = shFailedPublickeyInvalid
			}
			add(sh, "Failed publickey for %s%s from %s port %d ssh2: ED25519 SHA256:%s", pre, u, a, p, g.key())
		}
		add(shMaxAuthTries, "error: maximum authentication attempts exceeded for %s%s from %s port %d ssh2 [preauth]", pre, u, a, p)
		add(shTooManyFailures, "Disconnecting %s %s %s port %d: Too many authentication failures [preauth]", who, u, a, p)
	case n < 670: // a system user that AllowUsers/AllowGroups leaves out
		u := []string{"postgres", "mysql", "www-data", "nobody", "mail"}[g.r.IntN(5)]
		if g.r.IntN(3) == 0 {
			add(shNotAllowedGroups, "User %s from %s not allowed because none of user's groups are listed in AllowGroups", u, a)
		} else {
			add(shNotAllowedUsers, "User %s from %s not allowed because not listed in AllowUsers", u, a)
		}
		add(shFailedPasswordInvalid, "Failed password for invalid user %s from %s port %d ssh2", u, a, p)
		end(u, true)
	case n < 760: // a scanner: connects, says nothing useful, leaves
		switch g.r.IntN(5) {
		case 0, 1:
			add(shClosedPreauth, "Connection closed by %s port %d [preauth]", a, p)
		case 2:
			add(shKexClosed, "error: kex_exchange_identification: Connection closed by remote host")
			add(shClosedNoPreauth, "Connection closed by %s port %d", a, p)
		case 3:
			add(shUnableToNegotiate, "Unable to negotiate with %s port %d: no matching key exchange method found. Their offer: diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1,diffie-hellman-group1-sha1 [preauth]", a, p)
		default:
			if g.r.IntN(2) == 0 {
				add(shBannerExchange, "banner exchange: Connection from %s port %d: invalid format", a, p)
			} else {
				add(shTimeout, "Timeout before authentication for %s port %d", a, p)
			}
		}
	case n < 820: // the owner: a key or a password, a session, goodbye
		a = g.users[g.r.IntN(len(g.users))]
		u := []string{"alice", "bob", "deploy"}[g.r.IntN(3)]
		uid := map[string]int{"alice": 1000, "bob": 1001, "deploy": 1002}[u]
		if g.r.IntN(5) == 0 {
			add(shAccepted, "Accepted password for %s from %s port %d ssh2", u, a, p)
		} else {
			add(shAccepted, "Accepted publickey for %s from %s port %d ssh2: ED25519 SHA256:%s", u, a, p, g.key())
		}
		add(shSessionOpened, "pam_unix(sshd:session): session opened for user %s(uid=%d) by (uid=0)", u, uid)
		g.logind++
		s.lines = append(s.lines, line{fmt.Sprintf("systemd-logind[612]: New session %d of user %s.", g.logind, u), shLogind})
		add(shReceivedDisconnect, "Received disconnect from %s port %d:11: disconnected by user", a, p)
		add(shDisconnectedUser, "Disconnected from user %s %s port %d", u, a, p)
		add(shSessionClosed, "pam_unix(sshd:session): session closed for user %s", u)
	default: // cron, every few minutes
		s.prog = "CRON"
		s.lines = append(s.lines,
			line{"pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", shCron},
			line{"(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)", shCron},
			line{"pam_unix(cron:session): session closed for user root", shCron})
	}
	return s
}

// truth is what the generator wrote: how many lines of each shape, and
// how many connections failed to log in (at least one of their lines
// is a failure).
type truth struct {
	lines       int
	shapes      [nShapes]int
	failedConns int
}

// write writes n lines to path, and returns the truth and the shape of
// each line.
func (g *generator) write(path string, n int) (t truth, perLine []uint8, err error) {
	f, err := os.Create(path)
	if err != nil {
		return t, nil, err
	}
	perLine = make([]uint8, 0, n)
	w := bufio.NewWriterSize(f, 1<<20)
	now := time.Date(2025, time.November, 21, 0, 0, 0, 0, time.UTC)
	var open []session
	for written := 0; written < n; written++ {
		// Up to 6 connections at once, each line from one of them.
		for len(open) < 1+g.r.IntN(6) {
			open = append(open, g.newSession())
		}
		i := g.r.IntN(len(open))
		s := &open[i]
		l := s.lines[0]
		s.lines = s.lines[1:]
		now = now.Add(time.Duration(g.r.ExpFloat64() * float64(800*time.Millisecond)))
		if l.shape == shLogind {
			// systemd-logind's line carries its own program and pid.
			fmt.Fprintf(w, "%s vps %s\n", now.Format(time.Stamp), l.text)
		} else {
			fmt.Fprintf(w, "%s vps %s[%d]: %s\n", now.Format(time.Stamp), s.prog, s.pid, l.text)
		}
		t.lines++
		t.shapes[l.shape]++
		perLine = append(perLine, uint8(l.shape))
		if shapes[l.shape].moat != "" && !s.failed {
			s.failed = true
			t.failedConns++
		}
		if len(s.lines) == 0 {
			open = append(open[:i], open[i+1:]...)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return t, nil, err
	}
	return t, perLine, f.Close()
}
