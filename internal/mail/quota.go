package mail

import (
	"sync"
	"time"
)

// quota counts each app's messages over the last hour, one per recipient.
// A recipient is held when RCPT is accepted and counted when the message
// is queued, so that sessions running at once cannot together exceed the
// limit; a held recipient whose message is not queued is released.
type quota struct {
	mu   sync.Mutex
	sent map[string][]stamp // per app, oldest first
	held map[string]int
}

type stamp struct {
	at time.Time
	n  int
}

const quotaWindow = time.Hour

func newQuota() *quota {
	return &quota{sent: map[string][]stamp{}, held: map[string]int{}}
}

// hold reserves one recipient for app, or says how long until one is
// free under limit.
func (q *quota) hold(app string, limit int, now time.Time) (wait time.Duration, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	stamps := q.expire(app, now)
	used := q.held[app]
	for _, s := range stamps {
		used += s.n
	}
	if used < limit {
		q.held[app]++
		return 0, true
	}
	// The oldest messages leave the window first; find when enough have.
	over := used - limit + 1
	for _, s := range stamps {
		over -= s.n
		if over <= 0 {
			return s.at.Add(quotaWindow).Sub(now), false
		}
	}
	// Held by sessions still sending: free when they finish or give up.
	return time.Minute, false
}

// release gives back n held recipients.
func (q *quota) release(app string, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held[app] = max(0, q.held[app]-n)
}

// commit turns n held recipients into sent ones.
func (q *quota) commit(app string, n int, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held[app] = max(0, q.held[app]-n)
	q.add(app, n, at)
}

// add counts n recipients sent at at, as after a restart.
func (q *quota) add(app string, n int, at time.Time) {
	s := q.sent[app]
	i := len(s)
	for i > 0 && s[i-1].at.After(at) {
		i--
	}
	s = append(s, stamp{})
	copy(s[i+1:], s[i:])
	s[i] = stamp{at: at, n: n}
	q.sent[app] = s
}

// expire drops what left the window and returns what is in it.
func (q *quota) expire(app string, now time.Time) []stamp {
	s := q.sent[app]
	i := 0
	for i < len(s) && !s[i].at.Add(quotaWindow).After(now) {
		i++
	}
	if i > 0 {
		s = append(s[:0], s[i:]...)
		q.sent[app] = s
	}
	return s
}
