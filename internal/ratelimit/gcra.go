package ratelimit

import (
	"fmt"
	"time"
)

// Backend decides, for one request, whether a client is within its rule,
// and remembers that it came. Memory keeps the state in this process; a
// fleet shares it through a backend over Redis. Allow must be safe for
// concurrent use, and refuse every request under a rule that fails
// Rule.Validate.
type Backend interface {
	Allow(key Key, rule Rule, now time.Time) Decision
}

// Decision is a backend's verdict on one request, with what the response
// headers need to tell the client where it stands.
type Decision struct {
	// Allowed is whether the request may go on.
	Allowed bool
	// Limit is how many requests a full bucket holds: the rule's burst.
	Limit int
	// Remaining is how many more requests would be allowed right now,
	// after this one.
	Remaining int
	// RetryAfter is how long a refused client must wait before its next
	// request can pass; 0 when Allowed.
	RetryAfter time.Duration
	// Reset is how long until the bucket is full again (Remaining back
	// at Limit) if the client sends nothing more.
	Reset time.Duration
}

// String says why, for logs: "allowed, 149 of 150 left" or "limited, 0 of
// 150 left; retry in 400ms".
func (d Decision) String() string {
	if d.Allowed {
		return fmt.Sprintf("allowed, %d of %d left", d.Remaining, d.Limit)
	}
	if d.Limit == 0 {
		return "limited: invalid rule"
	}
	return fmt.Sprintf("limited, %d of %d left; retry in %v", d.Remaining, d.Limit, d.RetryAfter)
}

// decide is GCRA (the generic cell rate algorithm), shared by backends.
// tat is the client's theoretical arrival time: when its bucket would be
// full again, in nanoseconds on the backend's clock; a tat in the past (or
// none, found false) means a full bucket. A request is allowed when, after
// adding one interval for it, tat runs at most tolerance (Burst intervals)
// ahead of now. It returns the tat to store and the decision; a refusal
// leaves tat as it was, so refused requests do not push the client
// further out.
func decide(tat int64, found bool, now int64, rule Rule) (int64, Decision) {
	interval, tolerance, ok := rule.params()
	if !ok {
		return tat, Decision{}
	}
	if !found || tat < now {
		tat = now
	}
	next := tat + interval
	ahead := next - now
	limit := rule.burst()
	if ahead > tolerance {
		return tat, Decision{
			Limit:      limit,
			RetryAfter: time.Duration(ahead - tolerance),
			Reset:      time.Duration(tat - now),
		}
	}
	return next, Decision{
		Allowed:   true,
		Limit:     limit,
		Remaining: int((tolerance - ahead) / interval),
		Reset:     time.Duration(ahead),
	}
}
