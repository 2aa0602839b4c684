package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// origin is a counting upstream app.
type origin struct {
	n      atomic.Int64
	mu     sync.Mutex
	seen   []*http.Request // method and header of each request it got
	handle http.HandlerFunc
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.n.Add(1)
	o.mu.Lock()
	o.seen = append(o.seen, &http.Request{Method: r.Method, Header: r.Header.Clone(), URL: r.URL})
	o.mu.Unlock()
	o.handle(w, r)
}

func (o *origin) count() int64 { return o.n.Load() }

func (o *origin) last() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[len(o.seen)-1]
}

func newOrigin(h http.HandlerFunc) *origin { return &origin{handle: h} }

// stack runs, on loopback, the app o behind a reverse proxy behind the
// cache — the edge's chain — and returns the cache's URL and a client.
func stack(t testing.TB, c *Cache, cfg Config, o http.Handler) (string, *http.Client) {
	t.Helper()
	up := httptest.NewServer(o)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	proxy := httputil.NewSingleHostReverseProxy(u)
	pt := &http.Transport{MaxIdleConnsPerHost: 1024}
	t.Cleanup(pt.CloseIdleConnections)
	proxy.Transport = pt
	front := httptest.NewServer(c.Handler("app", cfg, proxy))
	t.Cleanup(front.Close)
	ct := &http.Transport{MaxIdleConnsPerHost: 2048, DisableCompression: true}
	t.Cleanup(ct.CloseIdleConnections)
	return front.URL, &http.Client{
		Transport:     ct,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type reply struct {
	code int
	h    http.Header
	body string
}

func (r reply) xcache() string { return r.h.Get("X-Cache") }

// get requests url with method and "Name: value" header lines.
func do(t testing.TB, cl *http.Client, method, url string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range hdr {
		k, v, _ := strings.Cut(kv, ": ")
		req.Header.Add(k, v)
	}
	res, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return reply{res.StatusCode, res.Header, string(b)}
}

func get(t testing.TB, cl *http.Client, url string, hdr ...string) reply {
	t.Helper()
	return do(t, cl, http.MethodGet, url, hdr...)
}

// waitFor polls until cond holds, rather than sleeping and hoping.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// text answers with a fixed body and header lines.
func text(body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, kv := range hdr {
			k, v, _ := strings.Cut(kv, ": ")
			w.Header().Add(k, v)
		}
		io.WriteString(w, body)
	}
}

// statusRecorder is a ResponseWriter that wants to know the cache status,
// like the edge's access log.
type statusRecorder struct {
	*httptest.ResponseRecorder
	status string
}

func (s *statusRecorder) SetCacheStatus(v string) { s.status = v }
