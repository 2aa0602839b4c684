package ratelimit

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Policy says how one request is limited: under which rule and in which
// bucket. limited false means the request is not limited at all (an
// allowlisted client, an ACME challenge, an app with the limiter off).
// The edge writes it: it knows the app and the client's real address.
type Policy func(r *http.Request) (rule Rule, key Key, limited bool)

// Handler is the edge's rate-limit step. It asks Policy how a request is
// limited and Backend whether it may pass. A request within its rule goes
// on to Next with RateLimit-Policy and RateLimit headers (IETF httpapi
// draft) telling the client where it stands; one over it gets a small
// plain 429 Too Many Requests with Retry-After, and Next never sees it.
type Handler struct {
	// Backend counts requests: a *Memory, or a shared store for a fleet.
	Backend Backend
	// Policy picks the rule and bucket of each request; see Policy.
	Policy Policy
	// Next is the rest of the chain.
	Next http.Handler
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time

	// policyHeader caches the RateLimit-Policy value of the last rule
	// seen: most edges limit every app by one rule, so this is nearly
	// always a hit and spares an allocation per request.
	policyHeader atomic.Pointer[policyHeader]
}

type policyHeader struct {
	rule  Rule
	value []string
}

// Middleware returns a Handler that limits requests to next.
func Middleware(b Backend, policy Policy, next http.Handler) http.Handler {
	if b == nil || policy == nil || next == nil {
		panic("ratelimit.Middleware: nil backend, policy or next handler")
	}
	return &Handler{Backend: b, Policy: policy, Next: next}
}

// limitedMarker is what the edge's access-log writer implements to learn
// that the limiter refused the request.
type limitedMarker interface{ SetLimited() }

// The header names in canonical form, so they can be set without
// canonicalising on every request.
const (
	hdrPolicy     = "Ratelimit-Policy"
	hdrState      = "Ratelimit"
	hdrRetryAfter = "Retry-After"
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rule, key, limited := h.Policy(r)
	if !limited {
		h.Next.ServeHTTP(w, r)
		return
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	d := h.Backend.Allow(key, rule, now())
	hdr := w.Header()
	hdr[hdrPolicy] = h.policyValue(rule)
	hdr[hdrState] = []string{stateValue(d)}
	if d.Allowed {
		h.Next.ServeHTTP(w, r)
		return
	}
	if m, ok := w.(limitedMarker); ok {
		m.SetLimited()
	}
	ref := refusalAfter(max(1, ceilSeconds(d.RetryAfter)))
	hdr[hdrRetryAfter] = ref.retryAfter
	hdr["Content-Type"] = plainText
	hdr["Content-Length"] = ref.length
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write(ref.body)
}

// refusal is the part of a 429 response that depends only on how many
// seconds the client must wait. Under a flood most responses are
// refusals, so the common ones are made once; header values are shared
// between responses as one-element slices, which Header.Add copies
// rather than appends into, and nothing in the chain writes into them.
type refusal struct {
	retryAfter, length []string
	body               []byte
}

var (
	plainText = []string{"text/plain; charset=utf-8"}
	// refusals holds the refusal for every wait up to two minutes.
	refusals = func() (r [121]refusal) {
		for wait := range r {
			r[wait] = newRefusal(int64(wait))
		}
		return r
	}()
)

func refusalAfter(wait int64) refusal {
	if wait < int64(len(refusals)) {
		return refusals[wait]
	}
	return newRefusal(wait)
}

func newRefusal(wait int64) refusal {
	b := make([]byte, 0, 80)
	b = append(b, "429 Too Many Requests: slow down; try again in "...)
	b = strconv.AppendInt(b, wait, 10)
	if wait == 1 {
		b = append(b, " second.\n"...)
	} else {
		b = append(b, " seconds.\n"...)
	}
	return refusal{
		retryAfter: []string{strconv.FormatInt(wait, 10)},
		length:     []string{strconv.Itoa(len(b))},
		body:       b,
	}
}

// policyValue is the RateLimit-Policy header: `"default";q=150;w=60`, the
// quota q per window w seconds. A window that is not whole seconds is
// stretched to the next whole second with the quota scaled to match.
func (h *Handler) policyValue(rule Rule) []string {
	if c := h.policyHeader.Load(); c != nil && c.rule == rule {
		return c.value
	}
	q, w := int64(0), int64(1) // an invalid rule allows nothing
	if rule.Validate() == nil {
		q, w = int64(rule.Requests), max(1, ceilSeconds(rule.Per))
		if window := time.Duration(w) * time.Second; window != rule.Per {
			q = int64(float64(rule.Requests) * float64(window) / float64(rule.Per))
		}
	}
	b := make([]byte, 0, 48)
	b = append(b, `"default";q=`...)
	b = strconv.AppendInt(b, q, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, w, 10)
	// Shared between responses like the refusal headers below.
	v := []string{string(b)}
	h.policyHeader.Store(&policyHeader{rule: rule, value: v})
	return v
}

// stateValue is the RateLimit header: `"default";r=149;t=60`, requests
// remaining and seconds until the bucket is full again.
func stateValue(d Decision) string {
	var a [48]byte
	b := append(a[:0], `"default";r=`...)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(d.Reset), 10)
	return string(b)
}

// ceilSeconds rounds d up to whole seconds: a client told to come back in
// 0 seconds after 400ms would be refused again.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

var _ http.Handler = (*Handler)(nil)
