package config

import (
	"strconv"
	"strings"
	"time"
)

// Auth sets how people sign in to the dashboard and the HTTPS API.
type Auth struct {
	// PasswordPolicy is "length" (the default: at least 12 characters) or
	// "composition" (8 to 256 characters with an upper-case letter, a
	// digit and a symbol). Both refuse the most common leaked passwords
	// and passwords that contain the account's email or name.
	PasswordPolicy string `yaml:"password_policy,omitempty" json:"password_policy,omitempty"`
	// SessionIdle ends a session unused this long; 30m by default.
	SessionIdle string `yaml:"session_idle,omitempty" json:"session_idle,omitempty"`
	// SessionMax ends a session this long after its sign-in, used or not;
	// 12h by default.
	SessionMax string `yaml:"session_max,omitempty" json:"session_max,omitempty"`
}

// The password policies.
const (
	PolicyLength      = "length"
	PolicyComposition = "composition"
)

// Defaults of the sign-in.
const (
	DefaultSessionIdle = 30 * time.Minute
	DefaultSessionMax  = 12 * time.Hour
)

// Policy is auth.password_policy with its default.
func (a Auth) Policy() string { return or(a.PasswordPolicy, PolicyLength) }

// Idle is auth.session_idle with its default.
func (a Auth) Idle() time.Duration { return durationOr(a.SessionIdle, DefaultSessionIdle) }

// Max is auth.session_max with its default.
func (a Auth) Max() time.Duration { return durationOr(a.SessionMax, DefaultSessionMax) }

func durationOr(s string, d time.Duration) time.Duration {
	if v, err := time.ParseDuration(s); err == nil && v > 0 {
		return v
	}
	return d
}

// AdminHost is the host name the dashboard and the HTTPS API answer on:
// server.admin_domain, else moat.<server domain>; empty when there is
// neither, or when it is "off". An app that has the default name keeps
// it (Validate refuses only an explicit admin_domain that an app has).
func (s Server) AdminHost() string {
	switch {
	case s.AdminDomain == "off":
		return ""
	case s.AdminDomain != "":
		return s.AdminDomain
	case s.Domain != "":
		return "moat." + s.Domain
	}
	return ""
}

func (s *State) normalizeAuth() {
	if s.Server.AdminDomain != "off" {
		s.Server.AdminDomain = normalHost(s.Server.AdminDomain)
	}
	s.Auth.PasswordPolicy = strings.ToLower(strings.TrimSpace(s.Auth.PasswordPolicy))
}

func (s State) validateAuth(add func(field, value, problem, fix string)) {
	a := s.Auth
	switch a.PasswordPolicy {
	case "", PolicyLength, PolicyComposition:
	default:
		add("auth.password_policy", a.PasswordPolicy, "is not a password policy", "write length (at least 12 characters) or composition (8 to 256 with an upper-case letter, a digit and a symbol)")
	}
	for _, d := range []struct {
		field, value string
		min, max     time.Duration
	}{
		{"auth.session_idle", a.SessionIdle, time.Minute, 24 * time.Hour},
		{"auth.session_max", a.SessionMax, 5 * time.Minute, 30 * 24 * time.Hour},
	} {
		if d.value == "" {
			continue
		}
		if v, err := time.ParseDuration(d.value); err != nil || v < d.min || v > d.max {
			add(d.field, d.value, "is not a duration from "+FormatDuration(d.min)+" to "+FormatDuration(d.max), "write how long, like 30m or 12h")
		}
	}
	if a.Idle() > a.Max() {
		add("auth.session_idle", a.SessionIdle, "is longer than auth.session_max ("+FormatDuration(a.Max())+")", "make the idle timeout shorter than the longest a session may last")
	}
	if h := s.Server.AdminDomain; h != "" && h != "off" {
		if p, fix := CheckHostname(h); p != "" {
			add("server.admin_domain", h, p, fix)
		}
		for i, app := range s.Apps {
			for _, d := range app.Domains {
				if d == h {
					add("server.admin_domain", h, "is also a domain of app "+app.Name+" (apps["+strconv.Itoa(i)+"])", "give moat's dashboard a name of its own, like moat."+s.Server.Domain)
				}
			}
		}
	}
}

// FormatDuration writes a duration as moat.yaml has it, without its
// zero units: 30m and 1h30m, not 30m0s and 1h30m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
