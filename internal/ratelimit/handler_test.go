package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// clock is a fake time source the handler reads.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// peerPolicy limits by the request's RemoteAddr (what the edge's real-IP
// step hands over), except for the allowlist.
func peerPolicy(rule Rule, allow *Allowlist) Policy {
	return func(r *http.Request) (Rule, Key, bool) {
		ap := netip.MustParseAddrPort(r.RemoteAddr)
		if allow.Contains(ap.Addr()) {
			return Rule{}, Key{}, false
		}
		return rule, KeyFor(0, ap.Addr(), DefaultV6Prefix), true
	}
}

// limitedRecorder is a ResponseWriter like the edge's access-log writer.
type limitedRecorder struct {
	*httptest.ResponseRecorder
	limited bool
}

func (l *limitedRecorder) SetLimited() { l.limited = true }

func newLimiter(rule Rule, allow *Allowlist, c *clock) (*Handler, *int) {
	calls := new(int)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*calls++
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("app"))
	})
	h := Middleware(NewMemory(0), peerPolicy(rule, allow), next).(*Handler)
	h.Now = c.Now
	return h, calls
}

func get(h http.Handler, from string) *limitedRecorder {
	r := httptest.NewRequest("GET", "https://app.example.com/", nil)
	r.RemoteAddr = from
	w := &limitedRecorder{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(w, r)
	return w
}

func TestHandler(t *testing.T) {
	c := &clock{now: t0}
	h, calls := newLimiter(DefaultRule(), nil, c)
	const client = "203.0.113.7:40000"

	w := get(h, client)
	want := http.Header{
		"Ratelimit-Policy": {`"default";q=150;w=60`},
		"Ratelimit":        {`"default";r=149;t=1`},
		"Content-Type":     {"text/html"},
	}
	checkResponse(t, "first request", w, http.StatusOK, want, "app")
	for range 149 {
		if w := get(h, client); w.Code != http.StatusOK {
			t.Fatalf("request within the limit: %d", w.Code)
		}
	}
	if *calls != 150 {
		t.Fatalf("app saw %d requests, want 150", *calls)
	}

	w = get(h, client)
	want = http.Header{
		"Ratelimit-Policy": {`"default";q=150;w=60`},
		"Ratelimit":        {`"default";r=0;t=60`},
		"Retry-After":      {"1"},
		"Content-Type":     {"text/plain; charset=utf-8"},
		"Content-Length":   {"57"},
	}
	checkResponse(t, "151st request", w, http.StatusTooManyRequests, want,
		"429 Too Many Requests: slow down; try again in 1 second.\n")
	if !w.limited {
		t.Error("SetLimited was not called on refusal")
	}
	if *calls != 150 {
		t.Fatalf("app saw the refused request")
	}

	// Another client is not affected.
	if w := get(h, "198.51.100.9:5000"); w.Code != http.StatusOK || w.limited {
		t.Fatalf("other client: %d", w.Code)
	}

	// After 400ms one more passes, then it is refused again.
	c.now = t0.Add(400 * time.Millisecond)
	if w := get(h, client); w.Code != http.StatusOK || w.limited {
		t.Fatalf("after refill: %d", w.Code)
	}
	if w := get(h, client); w.Code != http.StatusTooManyRequests {
		t.Fatalf("after refill, second request: %d", w.Code)
	}
}

func TestHandlerRetryAfterSeconds(t *testing.T) {
	c := &clock{now: t0}
	h, _ := newLimiter(Rule{Requests: 1, Per: 90 * time.Second}, nil, c)
	get(h, "203.0.113.7:1")
	c.now = t0.Add(500 * time.Millisecond)
	w := get(h, "203.0.113.7:1")
	want := http.Header{
		"Ratelimit-Policy": {`"default";q=1;w=90`},
		"Ratelimit":        {`"default";r=0;t=90`},
		"Retry-After":      {"90"},
		"Content-Type":     {"text/plain; charset=utf-8"},
		"Content-Length":   {"59"},
	}
	checkResponse(t, "refused", w, http.StatusTooManyRequests, want,
		"429 Too Many Requests: slow down; try again in 90 seconds.\n")
}

func TestHandlerAllowlist(t *testing.T) {
	allow := NewAllowlist(netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32"))
	c := &clock{now: t0}
	h, calls := newLimiter(Rule{Requests: 1, Per: time.Hour}, allow, c)
	for _, from := range []string{"203.0.113.7:1", "[2001:db8::1]:1", "[::ffff:203.0.113.9]:1"} {
		for range 1000 {
			w := get(h, from)
			if w.Code != http.StatusOK || w.limited {
				t.Fatalf("allowlisted %s refused", from)
			}
			if len(w.Header()["Ratelimit"]) != 0 {
				t.Fatalf("allowlisted %s got RateLimit headers", from)
			}
		}
	}
	if *calls != 3000 {
		t.Fatalf("app saw %d requests", *calls)
	}
	if w := get(h, "198.51.100.1:1"); w.Code != http.StatusOK {
		t.Fatalf("first request from an outsider: %d", w.Code)
	}
	if w := get(h, "198.51.100.1:1"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("second request from an outsider: %d", w.Code)
	}
}

// TestPolicyHeader covers windows that are not whole seconds and the
// cache of the header value across rules.
func TestPolicyHeader(t *testing.T) {
	h := &Handler{}
	tests := []struct {
		rule Rule
		want string
	}{
		{DefaultRule(), `"default";q=150;w=60`},
		{Rule{Requests: 10, Per: time.Second, Burst: 20}, `"default";q=10;w=1`},
		{Rule{Requests: 5, Per: 500 * time.Millisecond}, `"default";q=10;w=1`},
		{Rule{Requests: 3, Per: 1500 * time.Millisecond}, `"default";q=4;w=2`},
		{DefaultRule(), `"default";q=150;w=60`},
		{Rule{}, `"default";q=0;w=1`},
	}
	for _, tt := range tests {
		if got := h.policyValue(tt.rule); len(got) != 1 || got[0] != tt.want {
			t.Errorf("%v: %q, want %q", tt.rule, got, tt.want)
		}
	}
}

func checkResponse(t *testing.T, what string, w *limitedRecorder, code int, header http.Header, body string) {
	t.Helper()
	if w.Code != code {
		t.Errorf("%s: status %d, want %d", what, w.Code, code)
	}
	got := w.Header()
	for k, v := range header {
		if len(got[k]) != 1 || got[k][0] != v[0] {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := header[k]; !ok {
			t.Errorf("%s: unexpected header %s: %q", what, k, got[k])
		}
	}
	if w.Body.String() != body {
		t.Errorf("%s: body %q, want %q", what, w.Body.String(), body)
	}
}

func TestMiddlewareAllocs(t *testing.T) {
	m := NewMemory(0)
	k := key("203.0.113.7")
	rule := Rule{Requests: 1 << 30, Per: time.Hour}
	policy := func(*http.Request) (Rule, Key, bool) { return rule, k, true }
	h := Middleware(m, policy, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	w := &discardWriter{h: make(http.Header)}
	allocs := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) })
	// The RateLimit value and its one-element slice.
	if allocs > 2 {
		t.Errorf("%v allocations per allowed request, want at most 2", allocs)
	}
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
