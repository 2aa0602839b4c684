package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/config"
)

// dialLane opens an HTTP/1.1 TLS connection to the edge's HTTPS side.
func (te *testEdge) dialLane(name string) (*tls.Conn, *bufio.Reader) {
	te.t.Helper()
	c, err := tls.Dial("tcp", te.httpsAddr, &tls.Config{ServerName: name, RootCAs: te.roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		te.t.Fatal(err)
	}
	te.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// answered is how many requests the HTTPS side's lane answered itself.
func (te *testEdge) answered() int64 {
	return te.lane.Load().answered.Load()
}

// TestLaneMatchesNetHTTP sends each request twice over HTTP/1.1: once as
// the lane takes it, once with "Connection: close", which the lane leaves
// to net/http. What the app is asked and what the client gets must be the
// same, but for the Connection header.
func TestLaneMatchesNetHTTP(t *testing.T) {
	app := &diffApp{seen: map[string][]seen{}}
	up := startApp(t, app)
	cached := config.App{Name: "cached", Domains: []string{"cached.localhost"}, Upstream: up, Cache: config.Cache{TTL: "1m"}}
	te := startEdge(t, state("", app_("diff", up, "diff.localhost"), cached))

	cases := []struct {
		name, host, line, head string
	}{
		{"plain", "diff.localhost", "GET /plain?a=1 HTTP/1.1", "User-Agent: t/1\r\nAccept: */*\r\n"},
		{"forwarding", "diff.localhost", "GET /proto HTTP/1.1", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: http\r\n"},
		{"chunked with trailers", "diff.localhost", "GET /chunked HTTP/1.1", "Te: trailers\r\n"},
		{"early hints", "diff.localhost", "GET /early HTTP/1.1", ""},
		{"event stream", "diff.localhost", "GET /events HTTP/1.1", ""},
		{"not found", "diff.localhost", "GET /missing HTTP/1.1", ""},
		{"redirect", "diff.localhost", "GET /redirect HTTP/1.1", ""},
		{"set-cookie and vary", "diff.localhost", "GET /cookie HTTP/1.1", ""},
		{"no content", "diff.localhost", "GET /empty HTTP/1.1", ""},
		{"leaky", "diff.localhost", "GET /leaky HTTP/1.1", ""},
		{"own headers", "diff.localhost", "GET /own-headers HTTP/1.1", ""},
		{"hop response", "diff.localhost", "GET /hop HTTP/1.1", ""},
		{"big", "diff.localhost", "GET /big HTTP/1.1", ""},
		{"untyped body is sniffed", "diff.localhost", "GET /raw-untyped HTTP/1.1", ""},
		{"body until close", "diff.localhost", "GET /raw-close HTTP/1.1", ""},
		{"cookie request", "diff.localhost", "GET /plain HTTP/1.1", "Cookie: a=b\r\n"},
		{"cache hit", "cached.localhost", "GET /plain?hit HTTP/1.1", ""},
		{"cache hit, untyped", "cached.localhost", "GET /raw-untyped HTTP/1.1", ""},
		{"cache bypass", "cached.localhost", "GET /cookie HTTP/1.1", ""}, // hit-for-pass after the warm-up
		{"cache 304", "cached.localhost", "GET /etag HTTP/1.1", "If-None-Match: \"v1\"\r\n"},
		{"big untyped body is sniffed", "diff.localhost", "GET /raw-untyped-big HTTP/1.1", ""},
		{"cache hit, big untyped", "cached.localhost", "GET /raw-untyped-big HTTP/1.1", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.host == "cached.localhost" {
				conn, br := te.dialLane(c.host) // store the answer, or learn it is uncacheable
				exchangeOn(t, conn, br, c.line+"\r\nHost: "+c.host+"\r\nX-Case: warm\r\n"+c.head+"\r\n")
			}
			var got [2]exchange
			for i, extra := range []string{"", "Connection: close\r\n"} {
				tag := fmt.Sprintf("%s-%d", c.name, i)
				conn, br := te.dialLane(c.host)
				before := te.answered()
				got[i] = exchangeOn(t, conn, br, c.line+"\r\nHost: "+c.host+"\r\nX-Case: "+tag+"\r\n"+extra+c.head+"\r\n")
				if n := te.answered() - before; n != int64(1-i) {
					t.Errorf("request %d: the lane answered %d, want %d", i, n, 1-i)
				}
				got[i].header.Del("Connection")
				got[i].header.Del("Age")
				app.mu.Lock()
				if s := app.seen[tag]; len(s) > 0 {
					got[i].seen = s[len(s)-1]
					got[i].seen.header.Del("X-Case")
				}
				app.mu.Unlock()
			}
			lane, ref := got[0], got[1]
			if lane.status != ref.status || lane.body != ref.body || lane.broken != ref.broken {
				t.Errorf("answer: lane %d %.40q %s, net/http %d %.40q %s", lane.status, lane.body, lane.broken, ref.status, ref.body, ref.broken)
			}
			if d := headerDiff(lane.header, ref.header); d != "" {
				t.Errorf("headers differ (lane, net/http):\n%s", d)
			}
			if d := headerDiff(lane.trailer, ref.trailer); d != "" {
				t.Errorf("trailers differ (lane, net/http):\n%s", d)
			}
			if fmt.Sprint(lane.early) != fmt.Sprint(ref.early) {
				t.Errorf("1xx: lane %v, net/http %v", lane.early, ref.early)
			}
			if c.host != "cached.localhost" || c.name == "cache bypass" {
				if lane.seen.line != ref.seen.line || lane.seen.host != ref.seen.host {
					t.Errorf("the app was asked %q (%s) by the lane, %q (%s) by net/http", lane.seen.line, lane.seen.host, ref.seen.line, ref.seen.host)
				}
				if d := headerDiff(lane.seen.header, ref.seen.header); d != "" {
					t.Errorf("headers the app got differ (lane, net/http):\n%s", d)
				}
			}
			switch c.name {
			case "forwarding":
				if lane.body != "https" {
					t.Errorf("X-Forwarded-Proto %q, want https", lane.body)
				}
			case "cache 304":
				if lane.status != http.StatusNotModified {
					t.Errorf("status %d, want 304", lane.status)
				}
			case "untyped body is sniffed", "big untyped body is sniffed", "cache hit, big untyped":
				if ct := lane.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("Content-Type %q, want the sniffed text/html", ct)
				}
			case "cache hit", "cache hit, untyped":
				if lane.header.Get("X-Cache") != "HIT" {
					t.Errorf("X-Cache %q, want HIT", lane.header.Get("X-Cache"))
				}
			case "cache bypass":
				if lane.header.Get("X-Cache") != "BYPASS" {
					t.Errorf("X-Cache %q, want BYPASS", lane.header.Get("X-Cache"))
				}
			case "big":
				if len(lane.body) != 128<<10 {
					t.Errorf("body of %d bytes, want %d", len(lane.body), 128<<10)
				}
			}
		})
	}
}

// app_ is app with its domains after the upstream.
func app_(name, up string, domains ...string) config.App {
	return app(name, up, nil, domains...)
}

// TestLaneBrokenAnswer: an app that sends less than it announced gets the
// visitor's connection closed, not a whole-looking answer.
func TestLaneBrokenAnswer(t *testing.T) {
	app := &diffApp{seen: map[string][]seen{}}
	te := startEdge(t, state("", app_("diff", startApp(t, app), "diff.localhost")))
	for _, extra := range []string{"", "Connection: close\r\n"} {
		conn, br := te.dialLane("diff.localhost")
		x := exchangeOn(t, conn, br, "GET /raw-short HTTP/1.1\r\nHost: diff.localhost\r\n"+extra+"\r\n")
		if x.broken == "" {
			t.Errorf("%q: got a whole answer %d %q from a body cut short", extra, x.status, x.body)
		}
	}
}

// TestLaneHandsOver: a request the lane does not take goes to net/http
// with the bytes behind it, and the connection stays there; net/http
// still knows it is TLS.
func TestLaneHandsOver(t *testing.T) {
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s proto=%s", r.Method, r.URL.Path, body, r.Header.Get("X-Forwarded-Proto"))
	}))
	te := startEdge(t, state("", app_("a", up, "a.localhost")))
	conn, br := te.dialLane("a.localhost")
	before := te.answered()
	pipelined := "GET /one HTTP/1.1\r\nHost: a.localhost\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\n\r\nbody" +
		"GET /three HTTP/1.1\r\nHost: a.localhost\r\n\r\n"
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, pipelined); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GET /one  proto=https", "POST /two body proto=https", "GET /three  proto=https"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer for %q: %v", want, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("answer %q, want %q", b, want)
		}
	}
	if n := te.answered() - before; n != 1 {
		t.Errorf("the lane answered %d requests, want 1 (then the POST sent the connection to net/http)", n)
	}
}

// TestLaneLeavesMalformedToNetHTTP: whatever net/http's server would
// refuse (or treat specially), the lane does not answer.
func TestLaneLeavesMalformedToNetHTTP(t *testing.T) {
	te := startEdge(t, state("", app_("a", startApp(t, text("ok")), "a.localhost")))
	cases := []struct {
		name, raw string
		status    int // what net/http answers
	}{
		{"two hosts", "GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a.localhost/x\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a.localhost\r\n\r\n", 400},
		{"bad field name", "GET / HTTP/1.1\r\nHost: a.localhost\r\nBad\x01Name: x\r\n\r\n", 400},
		{"bad version", "GET / HTTP/9.9\r\nHost: a.localhost\r\n\r\n", 505},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: a.localhost\r\n\r\n", 200},
		{"absolute form", "GET https://a.localhost/ HTTP/1.1\r\nHost: a.localhost\r\n\r\n", 200},
		{"chunked get", "GET / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200},
		{"zero length", "GET / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 0\r\n\r\n", 200},
		{"expect", "GET / HTTP/1.1\r\nHost: a.localhost\r\nExpect: 100-continue\r\n\r\n", 200},
		{"head", "HEAD / HTTP/1.1\r\nHost: a.localhost\r\n\r\n", 200},
		{"unknown host", "GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, br := te.dialLane("a.localhost")
			before := te.answered()
			x := exchangeOn(t, conn, br, c.raw)
			if n := te.answered() - before; n != 0 {
				t.Errorf("the lane answered it")
			}
			if x.status != c.status {
				t.Errorf("status %d (%s), want net/http's %d", x.status, x.broken, c.status)
			}
		})
	}
}

// TestLaneWatchesTheClient: a client that leaves while the app is slow
// cancels the app's request, as with net/http.
func TestLaneWatchesTheClient(t *testing.T) {
	var cancelled atomic.Bool
	started := make(chan struct{}, 1)
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled.Store(true)
		case <-time.After(20 * time.Second):
		}
	}))
	te := startEdge(t, state("", app_("slow", up, "slow.localhost")))
	conn, _ := te.dialLane("slow.localhost")
	before := te.answered()
	io.WriteString(conn, "GET /poll HTTP/1.1\r\nHost: slow.localhost\r\n\r\n")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the app")
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !cancelled.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !cancelled.Load() {
		t.Error("the app's request was not cancelled within 5 s of the client leaving")
	}
	if te.answered()-before != 1 {
		t.Error("the lane did not take the request")
	}
}

// TestLaneStreams: an event stream reaches the client event by event.
func TestLaneStreams(t *testing.T) {
	next := make(chan struct{})
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	}))
	te := startEdge(t, state("", app_("sse", up, "sse.localhost")))
	conn, br := te.dialLane("sse.localhost")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: sse.localhost\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event %q, %v (before the second was sent)", line, err)
	}
	close(next)
}

// TestLaneShutdown: connections waiting in the lane do not hold up a
// shutdown.
func TestLaneShutdown(t *testing.T) {
	certs, roots := testCertSource(t)
	e := New(Options{Certs: certs})
	if err := e.Load(state("", app_("a", startApp(t, text("ok")), "a.localhost"))); err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ServeListener(ctx, ln, true) }()
	te := &testEdge{Edge: e, t: t, httpsAddr: ln.Addr().String(), roots: roots}
	conn, br := te.dialLane("a.localhost")
	if x := exchangeOn(t, conn, br, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"); x.body != "ok" {
		t.Fatalf("answer %q %s", x.body, x.broken)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeListener did not return within 5 s with an idle connection in the lane")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("the idle connection is still open after the shutdown")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the idle connection is still open after the shutdown")
	}
}

// TestLaneNeverSwallowsARequest: however a head ends (bare LF lines are
// legal for net/http's parser), every pipelined request gets its answer.
func TestLaneNeverSwallowsARequest(t *testing.T) {
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.URL.Path) }))
	te := startEdge(t, state("", app_("a", up, "a.localhost")))
	cases := map[string]string{
		"bare LF blank line, then CRLF": "GET /one HTTP/1.1\r\nHost: a.localhost\r\n\nGET /two HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
		"bare LF throughout":            "GET /one HTTP/1.1\nHost: a.localhost\n\nGET /two HTTP/1.1\nHost: a.localhost\n\n",
		"CRLF, then bare LF":            "GET /one HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET /two HTTP/1.1\nHost: a.localhost\n\n",
		// A head that ends in a bare LF, then a request whose body looks
		// like a request: it must stay a body, as net/http reads it.
		"body that looks like a request": "GET /one HTTP/1.1\r\nHost: a.localhost\r\n\n" +
			"POST /two HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 45\r\n\r\n" +
			"GET /smuggled HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
		"the same, the POST without a Host line": "GET /one HTTP/1.1\r\nHost: a.localhost\r\n\n" +
			"POST http://a.localhost/two HTTP/1.0\r\nContent-Length: 45\r\n\r\n" +
			"GET /smuggled HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
	}
	for name, pipelined := range cases {
		t.Run(name, func(t *testing.T) {
			conn, br := te.dialLane("a.localhost")
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, pipelined); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"/one", "/two"} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer for %s: %v", want, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != want {
					t.Errorf("answer %q, want %q", b, want)
				}
			}
			conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if extra, err := br.Peek(1); err == nil {
				t.Errorf("a third answer came: %q…", extra)
			}
		})
	}
}

// TestLaneLeaderLeaves: a client that leaves while its GET fetches a
// cacheable page neither cancels the fetch for the others nor leaves an
// empty page in the cache.
func TestLaneLeaderLeaves(t *testing.T) {
	var fetches atomic.Int32
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "the whole page")
	}))
	cached := config.App{Name: "c", Domains: []string{"c.localhost"}, Upstream: up, Cache: config.Cache{TTL: "1m"}}
	te := startEdge(t, state("", cached))
	conn, _ := te.dialLane("c.localhost")
	before := te.answered()
	io.WriteString(conn, "GET /page HTTP/1.1\r\nHost: c.localhost\r\n\r\n")
	deadline := time.Now().Add(5 * time.Second)
	for fetches.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	conn.Close() // leaves while the app works on it
	if te.answered()-before != 1 {
		t.Fatal("the lane did not take the request")
	}
	for i := range 2 {
		resp, body := get(t, te.client(false), "https://c.localhost/page", "")
		if resp.StatusCode != 200 || body != "the whole page" {
			t.Fatalf("request %d after the leader left: %d %q (X-Cache %s), want the whole page", i, resp.StatusCode, body, resp.Header.Get("X-Cache"))
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("the app was asked %d times, want 1: the fetch should have gone on for the others", n)
	}
}

// TestLaneKeepsUpstreamConnections: a visitor's Connection: close is
// about the visitor's connection; the one to the app is kept.
func TestLaneKeepsUpstreamConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(text("ok"))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	te := startEdge(t, state("", app_("a", srv.URL, "a.localhost")))
	for range 3 {
		conn, br := te.dialLane("a.localhost")
		if x := exchangeOn(t, conn, br, "GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"); x.body != "ok" {
			t.Fatalf("answer %q %s", x.body, x.broken)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the app saw %d connections, want 1", n)
	}
}

// TestPlainHTTPToTheHTTPSPort gets net/http's explanation.
func TestPlainHTTPToTheHTTPSPort(t *testing.T) {
	te := startEdge(t, state("", app_("a", startApp(t, text("ok")), "a.localhost")))
	c, err := net.Dial("tcp", te.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.0 400 Bad Request") || !strings.Contains(string(b), "HTTP request to an HTTPS server") {
		t.Errorf("answer %q", b)
	}
}

// TestInvalidTargetIsTheVisitors: a request the app cannot be sent is a
// 400, not a 502 that blames the app.
func TestInvalidTargetIsTheVisitors(t *testing.T) {
	e := New(Options{})
	if err := e.Load(state("", app_("a", startApp(t, text("ok")), "a.localhost"))); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "https://a.localhost/", nil)
	r.URL.RawQuery = "q=with space" // what an HTTP/2 :path may hold; it would break the request line
	w := httptest.NewRecorder()
	e.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("status %d, want 400", w.Code)
	}
}
