// Package ratelimit limits how many requests one client may send to the
// edge: by default 150 per minute per client IP, counted per /64 for IPv6,
// answered with 429 Too Many Requests beyond that.
//
// It holds one number per client (the GCRA "theoretical arrival time"),
// sharded so that cores do not fight over one lock, swept when idle and
// capped in count, so a flood from many addresses costs bounded memory.
// The Backend interface lets a shared store (Redis, for a fleet) replace
// the in-process Memory without touching the edge.
//
// What it is not for: it does not decide who the client is — the edge's
// real-IP step does, and hands the limiter an address it believes — and it
// does not ban anyone; repeat offenders are the guard's business. Which
// requests are limited at all (web traffic, not ACME challenges; not the
// allowlist) is the caller's policy, see Handler.
package ratelimit

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Rule is a rate: Requests per Per, of which Burst may come at once.
//
// "150 per minute" (Burst 0) lets 150 requests through at once; the 151st
// is refused until 60s/150 = 400ms have passed, and from then on one more
// is allowed every 400ms, so a client that keeps pushing gets exactly the
// rate and never more than Burst in a burst.
type Rule struct {
	// Requests is how many requests are allowed per Per. At least 1.
	Requests int `json:"requests" yaml:"requests"`
	// Per is the window the rate is expressed in, usually a second or a
	// minute; any positive duration works.
	Per time.Duration `json:"per" yaml:"per"`
	// Burst is how many requests may arrive at once, after the client has
	// been quiet long enough. 0 means Requests. It may be smaller than
	// Requests (smooth traffic only) or larger (tolerate spiky clients).
	Burst int `json:"burst,omitempty" yaml:"burst,omitempty"`
}

// DefaultRule is moat's limit when the config says nothing: 150 requests
// per minute per client.
func DefaultRule() Rule { return Rule{Requests: 150, Per: time.Minute} }

// maxWindow bounds Burst × (Per/Requests), the longest a client can be
// remembered, so that the nanosecond arithmetic can never overflow.
const maxWindow = 100 * 365 * 24 * time.Hour

// burst is the effective burst: Burst, or Requests when Burst is 0.
func (r Rule) burst() int {
	if r.Burst == 0 {
		return r.Requests
	}
	return r.Burst
}

// Validate says what is wrong with r, if anything, naming the value and
// the fix. Backends refuse every request under a rule that fails it.
func (r Rule) Validate() error {
	switch {
	case r.Requests < 1:
		return fmt.Errorf("rate limit: requests is %d; it must be at least 1 (for example 150 per minute)", r.Requests)
	case r.Per <= 0:
		return fmt.Errorf("rate limit: per is %v; it must be a positive duration such as 1s or 1m", r.Per)
	case r.Burst < 0:
		return fmt.Errorf("rate limit: burst is %d; it must be 0 (same as requests) or more", r.Burst)
	}
	if _, _, ok := r.params(); !ok {
		if int64(r.Per)/int64(r.Requests) < 1 {
			return fmt.Errorf("rate limit: %d requests per %v is more than one per nanosecond; lower requests or lengthen per", r.Requests, r.Per)
		}
		return fmt.Errorf("rate limit: burst %d at %d per %v would remember a client for over 100 years; lower burst or raise the rate", r.burst(), r.Requests, r.Per)
	}
	return nil
}

// params returns the GCRA emission interval (nanoseconds between two
// requests at the sustained rate) and the tolerance (how far ahead of now
// the theoretical arrival time may run: Burst intervals), or ok false when
// the rule is invalid.
func (r Rule) params() (interval, tolerance int64, ok bool) {
	if r.Requests < 1 || r.Per <= 0 || r.Burst < 0 {
		return 0, 0, false
	}
	interval = int64(r.Per) / int64(r.Requests)
	if interval < 1 {
		return 0, 0, false
	}
	hi, lo := bits.Mul64(uint64(interval), uint64(r.burst()))
	if hi != 0 || lo > uint64(maxWindow) {
		return 0, 0, false
	}
	return interval, int64(lo), true
}

// units are the spellings ParseRule accepts for a window, and String's
// choice when writing one back.
var units = []struct {
	names []string
	per   time.Duration
}{
	{[]string{"second", "s", "sec", "seconds"}, time.Second},
	{[]string{"minute", "m", "min", "minutes"}, time.Minute},
	{[]string{"hour", "h", "hr", "hours"}, time.Hour},
}

// ParseRule reads a rule as a person writes it in the config or on the
// command line: "150/minute", "10/s", "150 per minute", "5/30s" (any Go
// duration), optionally followed by "burst 20".
func ParseRule(s string) (Rule, error) {
	fail := func(problem, fix string) (Rule, error) {
		return Rule{}, fmt.Errorf("rate limit %q: %s; %s", s, problem, fix)
	}
	const form = `write it like "150/minute", "10/second burst 20" or "5/30s"`
	f := strings.Fields(strings.ToLower(strings.ReplaceAll(s, "/", " / ")))
	var r Rule
	if len(f) < 3 || (f[1] != "/" && f[1] != "per") {
		return fail("not a rate", form)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 {
		return fail(fmt.Sprintf("requests %q is not a whole number of at least 1", f[0]), form)
	}
	r.Requests = n
	r.Per = unitDuration(f[2])
	if r.Per == 0 {
		d, err := time.ParseDuration(f[2])
		if err != nil || d <= 0 {
			return fail(fmt.Sprintf("unknown window %q", f[2]), "use second, minute, hour or a duration like 30s")
		}
		r.Per = d
	}
	switch rest := f[3:]; {
	case len(rest) == 0:
	case len(rest) == 2 && rest[0] == "burst":
		b, err := strconv.Atoi(rest[1])
		if err != nil || b < 1 {
			return fail(fmt.Sprintf("burst %q is not a whole number of at least 1", rest[1]), form)
		}
		r.Burst = b
	default:
		return fail(fmt.Sprintf("unexpected %q", strings.Join(rest, " ")), form)
	}
	if err := r.Validate(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

func unitDuration(name string) time.Duration {
	for _, u := range units {
		for _, n := range u.names {
			if n == name {
				return u.per
			}
		}
	}
	return 0
}

// String writes r the way ParseRule reads it: "150/minute",
// "10/second burst 20", "5/30s".
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Requests))
	b.WriteByte('/')
	unit := r.Per.String()
	for _, u := range units {
		if u.per == r.Per {
			unit = u.names[0]
		}
	}
	b.WriteString(unit)
	if r.Burst != 0 {
		b.WriteString(" burst ")
		b.WriteString(strconv.Itoa(r.Burst))
	}
	return b.String()
}
