package edge

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/config"
	"moat/internal/testenv"
)

// protected is a server with the edge's protective layers as configured,
// behind a trusted loopback proxy so that tests can speak for many client
// addresses through X-Forwarded-For.
func protected(rl config.RateLimit, apps ...config.App) config.State {
	return config.State{Server: config.Server{RateLimit: rl, TrustedProxies: []string{"127.0.0.1"}}, Apps: apps}
}

func getAs(t *testing.T, c *http.Client, url, client string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// The default limit, 150 a minute per client: the 151st is refused with
// Retry-After and the RateLimit headers and never reaches the app; other
// clients are counted apart, except within one IPv6 /64; allowlisted
// clients are never limited.
func TestRateLimitThroughTheEdge(t *testing.T) {
	var hits atomic.Int64
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "no-store")
	}))
	te := startEdge(t, protected(config.RateLimit{Allow: []string{"203.0.113.200"}}, config.App{Name: "app", Domains: []string{"app.localhost"}, Upstream: up}))
	c := te.client(false)
	url := "https://app.localhost/"
	for i := range 150 {
		if resp := getAs(t, c, url, "203.0.113.1"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
	}
	resp := getAs(t, c, url, "203.0.113.1")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(resp.Header.Get("RateLimit-Policy"), "q=150;w=60") || resp.Header.Get("RateLimit") == "" {
		t.Errorf("151st: %d, Retry-After %q, RateLimit-Policy %q, RateLimit %q", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"))
	}
	if hits.Load() != 150 {
		t.Errorf("the app saw %d requests, want 150", hits.Load())
	}
	time.Sleep(450 * time.Millisecond) // one request's worth refills: 60s/150
	if resp := getAs(t, c, url, "203.0.113.1"); resp.StatusCode != 200 {
		t.Errorf("after refill: %d", resp.StatusCode)
	}
	if resp := getAs(t, c, url, "203.0.113.2"); resp.StatusCode != 200 {
		t.Errorf("another client: %d, want its own bucket", resp.StatusCode)
	}
	for range 150 {
		getAs(t, c, url, "2001:db8:1:2::1")
	}
	if resp := getAs(t, c, url, "2001:db8:1:2::ffff"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("same /64: %d, want the shared bucket refused", resp.StatusCode)
	}
	if resp := getAs(t, c, url, "2001:db8:1:3::1"); resp.StatusCode != 200 {
		t.Errorf("next /64: %d, want its own bucket", resp.StatusCode)
	}
	for i := range 300 {
		if resp := getAs(t, c, url, "203.0.113.200"); resp.StatusCode != 200 {
			t.Fatalf("allowlisted request %d: %d", i+1, resp.StatusCode)
		}
	}
}

// A per-second limit for one app, and an app with the limit off.
func TestRateLimitPerApp(t *testing.T) {
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Cache-Control", "no-store") }))
	te := startEdge(t, protected(config.RateLimit{},
		config.App{Name: "fast", Domains: []string{"fast.localhost"}, Upstream: up, RateLimit: config.RateLimit{Requests: 5, Per: "second"}},
		config.App{Name: "open", Domains: []string{"open.localhost"}, Upstream: up, RateLimit: config.RateLimit{Off: true}},
	))
	c := te.client(false)
	for i := range 5 {
		if resp := getAs(t, c, "https://fast.localhost/", "203.0.113.1"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
	}
	if resp := getAs(t, c, "https://fast.localhost/", "203.0.113.1"); resp.StatusCode != 429 || !strings.Contains(resp.Header.Get("RateLimit-Policy"), "q=5;w=1") {
		t.Errorf("6th in a second: %d %q", resp.StatusCode, resp.Header.Get("RateLimit-Policy"))
	}
	time.Sleep(250 * time.Millisecond)
	if resp := getAs(t, c, "https://fast.localhost/", "203.0.113.1"); resp.StatusCode != 200 {
		t.Errorf("after 250ms: %d", resp.StatusCode)
	}
	for i := range 400 {
		if resp := getAs(t, c, "https://open.localhost/", "203.0.113.1"); resp.StatusCode != 200 {
			t.Fatalf("unlimited app, request %d: %d", i+1, resp.StatusCode)
		}
	}
}

// 1,000 concurrent GETs for a cold URL reach the app once; repeats within
// 3 s are hits; after 3 s, one refresh.
func TestCacheThroughTheEdge(t *testing.T) {
	var hits atomic.Int64
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		time.Sleep(50 * time.Millisecond)
		fmt.Fprint(w, "page")
	}))
	te := startEdge(t, protected(config.RateLimit{Off: true}, config.App{Name: "app", Domains: []string{"app.localhost"}, Upstream: up}))
	// Four HTTP/2 connections, not 1,000 handshakes, each set up before
	// the flood and carrying 250 streams (net/http's limit): a connection
	// opened mid-flood on a starved machine can miss net/http's 2 s
	// deadline for acknowledging the edge's SETTINGS, and the edge rightly
	// drops it with its streams.
	var clients [4]*http.Client
	for i := range clients {
		clients[i] = te.client(true)
		get(t, clients[i], "https://app.localhost/warm", "")
	}
	c := clients[0]
	hits.Store(0)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 1000 {
		wg.Add(1)
		c := clients[i%len(clients)]
		go func() {
			defer wg.Done()
			resp, err := c.Get("https://app.localhost/cold")
			if err != nil || resp.StatusCode != 200 {
				if bad.Add(1) < 4 {
					t.Logf("request: %v %v", err, resp)
				}
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of 1,000 requests failed", bad.Load())
	}
	if testenv.Race && hits.Load() != 1 {
		// Under the race detector 1,000 TLS streams on 2 cores can take
		// the leader past the cache's wait bound; make test runs this
		// test without it too, where the bound is what it is for.
		t.Skipf("under -race the app saw %d requests; the exact count is checked in the run without -race", hits.Load())
	}
	if hits.Load() != 1 {
		t.Fatalf("the app saw %d requests, want 1", hits.Load())
	}
	// Repeats within 3 s are hits, with the security headers; after 3 s,
	// one refresh. A URL of its own, so the flood's duration (long under
	// -race) does not count against its TTL.
	hits.Store(0)
	get(t, c, "https://app.localhost/again", "")
	resp, _ := get(t, c, "https://app.localhost/again", "")
	if resp.Header.Get("X-Cache") != "HIT" || hits.Load() != 1 {
		t.Errorf("repeat: X-Cache %q, app saw %d", resp.Header.Get("X-Cache"), hits.Load())
	}
	if resp.Header.Get("X-Frame-Options") != "SAMEORIGIN" {
		t.Errorf("a hit lacks the security headers: %v", resp.Header)
	}
	time.Sleep(3100 * time.Millisecond)
	for range 5 {
		get(t, c, "https://app.localhost/again", "")
	}
	if hits.Load() != 2 {
		t.Errorf("after 3 s the app saw %d requests, want 2 (one refresh)", hits.Load())
	}
}

// An uncacheable URL from a slow app is never serialised: 200 concurrent
// requests take about one app round trip, not 200.
func TestNoStoreIsNotSerialised(t *testing.T) {
	const n = 200
	var (
		mu       sync.Mutex
		hits     int
		waiting  int
		most     int
		release  = make(chan struct{})
		deadline = time.After(10 * time.Second)
	)
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		held := r.URL.Path == "/nostore" && hits > 1
		if held {
			waiting++
			most = max(most, waiting)
			if waiting == n-1 {
				close(release)
			}
		}
		mu.Unlock()
		if held { // the first one answers at once: it teaches the cache the page is not stored
			select {
			case <-release:
			case <-deadline:
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "private")
	}))
	te := startEdge(t, protected(config.RateLimit{Off: true}, config.App{Name: "app", Domains: []string{"app.localhost"}, Upstream: up}))
	c := te.client(true)
	get(t, c, "https://app.localhost/warm", "") // one HTTP/2 connection carries them all
	mu.Lock()
	hits = 0
	mu.Unlock()
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range n {
		wg.Go(func() {
			resp, err := c.Get("https://app.localhost/nostore")
			if err != nil || resp.StatusCode != 200 {
				bad.Add(1)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if bad.Load() > 0 || hits != n || most != n-1 {
		t.Errorf("%d failures, app saw %d (at most %d at once); want %d, the last %d side by side", bad.Load(), hits, most, n, n-1)
	}
}

// The app sees the real client: from an untrusted peer forwarding headers
// change nothing; from a trusted one (loopback here) they are believed.
func TestRealClientIPReachesTheApp(t *testing.T) {
	seen := make(chan string, 1)
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Forwarded-For")
	}))
	app := config.App{Name: "app", Domains: []string{"app.localhost"}, Upstream: up, Cache: config.Cache{TTL: "0s"}}
	tests := []struct {
		name    string
		server  config.Server
		headers map[string]string
		want    string
	}{
		{"untrusted XFF", config.Server{}, map[string]string{"X-Forwarded-For": "203.0.113.9"}, "127.0.0.1"},
		{"untrusted CF", config.Server{}, map[string]string{"CF-Connecting-IP": "203.0.113.9"}, "127.0.0.1"},
		{"CF mode, peer not Cloudflare", config.Server{Cloudflare: config.Cloudflare{Enabled: true}}, map[string]string{"CF-Connecting-IP": "203.0.113.9"}, "127.0.0.1"},
		{"trusted XFF", config.Server{TrustedProxies: []string{"127.0.0.1"}}, map[string]string{"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}, "203.0.113.9"},
		{"CF mode, peer in the ranges", config.Server{Cloudflare: config.Cloudflare{Enabled: true, Ranges: []string{"127.0.0.0/8"}}}, map[string]string{"CF-Connecting-IP": "203.0.113.9"}, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.server.RateLimit.Off = true
			te := startEdge(t, config.State{Server: tt.server, Apps: []config.App{app}})
			req, _ := http.NewRequest(http.MethodGet, "https://app.localhost/", nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := te.client(false).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := <-seen; got != tt.want {
				t.Errorf("app saw X-Forwarded-For %q, want %q", got, tt.want)
			}
		})
	}
}

// One JSON line per request with the real client, status, bytes, cache
// status and whether the limiter refused it.
func TestAccessLog(t *testing.T) {
	up := startApp(t, text("hello"))
	var buf testenv.SyncBuffer
	te := startEdgeOpts(t, protected(config.RateLimit{Requests: 1, Per: "minute"}, config.App{Name: "app", Domains: []string{"app.localhost"}, Upstream: up}),
		Options{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))})
	c := te.client(false)
	getAs(t, c, "https://app.localhost/a?x=1", "203.0.113.7")
	getAs(t, c, "https://app.localhost/a?x=1", "203.0.113.7")
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want 2:\n%s", len(lines), buf.String())
	}
	first, second := lines[0], lines[1]
	for k, want := range map[string]any{"client": "203.0.113.7", "host": "app.localhost", "method": "GET", "path": "/a", "status": 200.0, "bytes": 5.0, "cache": "MISS", "limited": false, "app": "app"} {
		if first[k] != want {
			t.Errorf("first line %s = %v, want %v", k, first[k], want)
		}
	}
	if second["status"] != 429.0 || second["limited"] != true {
		t.Errorf("second line: status %v limited %v, want 429 true", second["status"], second["limited"])
	}
	if _, ok := first["duration_ms"]; !ok {
		t.Error("no duration_ms")
	}
}
