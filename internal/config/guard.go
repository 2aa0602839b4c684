package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"moat/internal/firewall"
	"moat/internal/guard"
)

// Guard is the brute-force guard's desired state. With nothing set, the
// sshd jail and the moat jail (moat's own logins) run on the defaults: 5
// failures in 10 minutes ban for 10 minutes, repeat offenders longer.
type Guard struct {
	// Off stops the guard: no log is read and no ban is made. Bans in
	// force run out on their own.
	Off bool `yaml:"off,omitempty" json:"off,omitempty"`
	// Ignore lists addresses and CIDR prefixes that are never banned,
	// like your office or your VPN. Loopback never is.
	Ignore []string `yaml:"ignore,omitempty" json:"ignore,omitempty"`
	// Jails tune the built-in jails (sshd, moat) or add one for an app's
	// log.
	Jails []Jail `yaml:"jails,omitempty" json:"jails,omitempty"`
}

// Jail is one kind of failed login counted on its own.
type Jail struct {
	// Name is sshd, moat, or a name of your own for an app's log.
	Name string `yaml:"name" json:"name"`
	// Off turns the jail off.
	Off bool `yaml:"off,omitempty" json:"off,omitempty"`
	// Log is the file to follow, or "journal" for the systemd journal.
	// For sshd it defaults to /var/log/auth.log when that file exists,
	// and the journal when not. The moat jail has no log.
	Log string `yaml:"log,omitempty" json:"log,omitempty"`
	// Filter is a regular expression (Go's RE2 syntax) for a failed
	// login in the log, with the client's address as (?P<addr>...). The
	// sshd jail has its own.
	Filter string `yaml:"filter,omitempty" json:"filter,omitempty"`
	// Literal is a text every failure line contains; the expression
	// only runs on lines that contain it, which is much faster.
	Literal string `yaml:"literal,omitempty" json:"literal,omitempty"`
	// MaxRetry failures within FindTime ban for BanTime; each new ban of
	// the same address doubles it, up to MaxBanTime. Empty fields take
	// the defaults: 5, 10m, 10m, 168h.
	MaxRetry   int    `yaml:"max_retry,omitempty" json:"max_retry,omitempty"`
	FindTime   string `yaml:"find_time,omitempty" json:"find_time,omitempty"`
	BanTime    string `yaml:"ban_time,omitempty" json:"ban_time,omitempty"`
	MaxBanTime string `yaml:"max_ban_time,omitempty" json:"max_ban_time,omitempty"`
}

// The built-in jails, and the Log value that reads the journal.
const (
	JailSSHD = "sshd"
	JailMoat = "moat"
	// JailMail counts failed logins to the mail relay.
	JailMail = "mail"
	Journal  = "journal"
	// DefaultSSHDLog is where Debian's and Ubuntu's rsyslog puts sshd's
	// lines.
	DefaultSSHDLog = "/var/log/auth.log"
)

func (g Guard) clone() Guard {
	c := g
	c.Ignore = append([]string(nil), g.Ignore...)
	c.Jails = append([]Jail(nil), g.Jails...)
	return c
}

// GuardJails is every jail that runs: the built-in ones (tuned by their
// entries in Jails, if any) first, then the owner's. The state must be
// valid.
func (s State) GuardJails() []Jail {
	if s.Guard.Off {
		return nil
	}
	builtin := []Jail{{Name: JailSSHD}, {Name: JailMoat}, {Name: JailMail}}
	var out []Jail
	for _, b := range builtin {
		for _, j := range s.Guard.Jails {
			if j.Name == b.Name {
				b = j
			}
		}
		if !b.Off {
			out = append(out, b)
		}
	}
	for _, a := range s.Apps {
		if len(a.GuardStatuses) == 0 {
			continue
		}
		j := Jail{Name: a.Name}
		for _, t := range s.Guard.Jails {
			if t.Name == a.Name {
				j = t
			}
		}
		if !j.Off {
			out = append(out, j)
		}
	}
	for _, j := range s.Guard.Jails {
		if j.Name != JailSSHD && j.Name != JailMoat && j.Name != JailMail && !s.edgeJail(j.Name) && !j.Off {
			out = append(out, j)
		}
	}
	return out
}

// edgeJail reports whether name is the jail of an app's answers.
func (s State) edgeJail(name string) bool {
	a, ok := s.App(name)
	return ok && len(a.GuardStatuses) > 0
}

// GuardIgnore is the ignore list as prefixes. The state must be valid.
func (s State) GuardIgnore() []netip.Prefix {
	var out []netip.Prefix
	for _, src := range s.Guard.Ignore {
		if p, err := firewall.ParseSource(src); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Policy is the jail's counting and banning rule, defaults filled in. The
// jail must be valid.
func (j Jail) Policy(v6Prefix int) guard.Policy {
	p := guard.DefaultPolicy()
	if j.MaxRetry > 0 {
		p.MaxRetry = j.MaxRetry
	}
	for _, f := range []struct {
		s string
		d *time.Duration
	}{{j.FindTime, &p.FindTime}, {j.BanTime, &p.BanTime}, {j.MaxBanTime, &p.MaxBanTime}} {
		if d, err := time.ParseDuration(f.s); err == nil {
			*f.d = d
		}
	}
	if p.MaxBanTime < p.BanTime {
		p.MaxBanTime = p.BanTime
	}
	if v6Prefix > 0 {
		p.V6Prefix = v6Prefix
	}
	return p
}

// Matcher is the jail's filter: the built-in one for sshd, the owner's
// for the others, nil for the jails fed by events (moat's own logins, an
// app's answers). The jail must be valid.
func (j Jail) Matcher() guard.Filter {
	switch {
	case j.Name == JailSSHD && j.Filter == "":
		return guard.SSHD{}
	case j.Filter == "":
		return nil
	}
	f, err := guard.NewUserFilter(j.Name, j.Filter, j.Literal)
	if err != nil {
		return nil
	}
	return f
}

var jailName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

func (s *State) normalizeGuard() {
	normalSources(s.Guard.Ignore)
	for i := range s.Guard.Jails {
		j := &s.Guard.Jails[i]
		j.Name = strings.ToLower(strings.TrimSpace(j.Name))
		j.Log = strings.TrimSpace(j.Log)
	}
}

// validateGuard checks the ignore list, each jail, and the apps' guard
// statuses.
func (s State) validateGuard(add func(field, value, problem, fix string)) {
	for i, a := range s.Apps {
		seen := map[int]bool{}
		for j, st := range a.GuardStatuses {
			at := fmt.Sprintf("apps[%d].guard_statuses[%d]", i, j)
			switch {
			case st < 400 || st > 499 || st == 429:
				// 429 is the rate limiter's, 5xx an app that is down:
				// counting them would ban every client.
				add(at, fmt.Sprint(st), "is not a client error status from 400 to 499 other than 429", "list the statuses of a failed login, like [401, 403]")
			case seen[st]:
				add(at, fmt.Sprint(st), "is listed twice", "list each status once")
			}
			seen[st] = true
		}
		if len(a.GuardStatuses) > 0 && (a.Name == JailSSHD || a.Name == JailMoat || a.Name == JailMail) {
			add(fmt.Sprintf("apps[%d].guard_statuses", i), fmt.Sprint(a.GuardStatuses), "would make a jail named "+a.Name+", the name of a built-in jail", "rename the app to count its answers")
		}
	}
	for i, src := range s.Guard.Ignore {
		if _, err := firewall.ParseSource(src); err != nil {
			add(fmt.Sprintf("guard.ignore[%d]", i), src, "is not an address or CIDR prefix", "write an address like 203.0.113.7 or a prefix like 203.0.113.0/24")
		}
	}
	seen := map[string]int{}
	for i, j := range s.Guard.Jails {
		at := fmt.Sprintf("guard.jails[%d]", i)
		if !jailName.MatchString(j.Name) {
			add(at+".name", j.Name, "is not a jail name", "use sshd, moat, mail, or a short name of lower-case letters, digits and hyphens, like nextcloud")
		} else if first, dup := seen[j.Name]; dup {
			add(at+".name", j.Name, fmt.Sprintf("is the name of guard.jails[%d] too", first), "tune each jail in one entry")
		} else {
			seen[j.Name] = i
		}
		switch {
		case j.Name == JailMoat || j.Name == JailMail:
			if j.Log != "" || j.Filter != "" || j.Literal != "" {
				add(at+".log", j.Log, "is set for the "+j.Name+" jail, which counts moat's own failed logins and reads no log", "remove log, filter and literal from the "+j.Name+" jail")
			}
		case s.edgeJail(j.Name):
			if j.Log != "" || j.Filter != "" || j.Literal != "" {
				add(at+".log", j.Log, "is set for the jail of app "+j.Name+", which counts the app's answers with its guard_statuses and reads no log", "remove log, filter and literal, or give the jail another name")
			}
		case j.Name == JailSSHD:
			if j.Filter != "" {
				checkFilter(at, j, add)
			}
		default:
			if j.Log == "" {
				add(at+".log", "", "is missing", "give the log file to follow, like /var/log/nextcloud.log, or journal")
			}
			if j.Filter == "" {
				add(at+".filter", "", "is missing", `give a regular expression for a failed login with the address as (?P<addr>...), like ^Login failed: .* from (?P<addr>\S+)`)
			} else {
				checkFilter(at, j, add)
			}
		}
		if j.Log != "" && j.Log != Journal && !strings.HasPrefix(j.Log, "/") {
			add(at+".log", j.Log, "is not an absolute path", "write the full path, like /var/log/auth.log, or journal")
		}
		if j.MaxRetry < 0 || j.MaxRetry > 1000 {
			add(at+".max_retry", fmt.Sprint(j.MaxRetry), "is not a count from 1 to 1000", "write how many failures ban, like 5")
		}
		durations := []struct {
			field, value string
			min, max     time.Duration
		}{
			{"find_time", j.FindTime, time.Second, 7 * 24 * time.Hour},
			{"ban_time", j.BanTime, time.Second, 365 * 24 * time.Hour},
			{"max_ban_time", j.MaxBanTime, time.Second, 365 * 24 * time.Hour},
		}
		for _, d := range durations {
			if d.value == "" {
				continue
			}
			if v, err := time.ParseDuration(d.value); err != nil || v < d.min || v > d.max {
				add(at+"."+d.field, d.value, fmt.Sprintf("is not a duration from %s to %s", d.min, d.max), "write a duration like 10m or 24h")
			}
		}
		if j.BanTime != "" && j.MaxBanTime != "" {
			b, err1 := time.ParseDuration(j.BanTime)
			m, err2 := time.ParseDuration(j.MaxBanTime)
			if err1 == nil && err2 == nil && m < b {
				add(at+".max_ban_time", j.MaxBanTime, "is shorter than ban_time "+j.BanTime, "make max_ban_time at least ban_time, or leave it out")
			}
		}
	}
}

// checkFilter refuses a jail's filter that would not work, with guard's
// reason.
func checkFilter(at string, j Jail, add func(field, value, problem, fix string)) {
	_, err := guard.NewUserFilter(j.Name, j.Filter, j.Literal)
	var fe *guard.FilterError
	switch {
	case err == nil:
	case errors.As(err, &fe):
		add(at+".filter", j.Filter, fe.Problem, fe.Fix)
	default:
		add(at+".filter", j.Filter, "is refused ("+err.Error()+")", "fix the expression")
	}
}
