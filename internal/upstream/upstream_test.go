package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingFallback passes requests on to next and counts them: the
// requests that the lean path handed over.
type countingFallback struct {
	next http.RoundTripper
	n    atomic.Int32
}

func (f *countingFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	f.n.Add(1)
	return f.next.RoundTrip(r)
}

// refusingFallback fails the test: for tests whose requests all belong to
// the lean path.
type refusingFallback struct{ t *testing.T }

func (f refusingFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("%s %s went to the fallback, want the lean path", r.Method, r.URL)
	return nil, errors.New("refusingFallback: not for the lean path")
}

// newTransport returns a Transport that is closed when the test ends. A
// missing Fallback is one that fails the test.
func newTransport(t *testing.T, o Options) *Transport {
	t.Helper()
	if o.Fallback == nil {
		o.Fallback = refusingFallback{t}
	}
	tr := New(o)
	t.Cleanup(tr.Close)
	return tr
}

// server is an httptest.Server that counts the connections it opens and
// closes.
type server struct {
	*httptest.Server
	opened atomic.Int32
	closed atomic.Int32
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.opened.Add(1)
		case http.StateClosed:
			s.closed.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *server) addr() string { return s.Listener.Addr().String() }

// newStallServer answers /stall with the head of a 100-byte body and its
// first 10 bytes, then nothing until the client goes away or the test
// ends; any other path gets "ok".
func newStallServer(t *testing.T) *server {
	t.Helper()
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stall" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // before s.Close, which waits for the handler
	return s
}

// rawServer hands each connection to serve, for the answers net/http's
// server will not give: the request's bytes as they came, connections
// closed at the wrong moment, framing it would not choose.
type rawServer struct {
	ln       net.Listener
	accepted atomic.Int32
	finished atomic.Int32 // connections serve is done with, and closed
	wg       sync.WaitGroup

	mu      sync.Mutex
	conns   []net.Conn
	stopped bool
}

func newRawServer(t *testing.T, serve func(c net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			if s.stopped {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns = append(s.conns, c)
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				serve(c)
				c.Close()
				s.finished.Add(1)
			}()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }
func (s *rawServer) url() string  { return "http://" + s.addr() }

// stop closes the listener and every connection, and waits for serve to
// return on each.
func (s *rawServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	s.stopped = true
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// readHead reads a request's head and returns its lines, the request
// line first, without line ends.
func readHead(br *bufio.Reader) ([]string, error) {
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return lines, err
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			return lines, nil
		}
		lines = append(lines, line)
	}
}

// answerEach gives the answers in turn, one for each request read on c,
// and then closes c.
func answerEach(answers ...string) func(c net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		for _, a := range answers {
			if _, err := readHead(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, a); err != nil {
				return
			}
		}
	}
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func newRequest(t *testing.T, ctx context.Context, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// roundTrip sends req through tr and returns its answer's status and
// body, read whole and closed.
func roundTrip(t *testing.T, tr *Transport, req *http.Request) (int, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, string(b)
}

func get(t *testing.T, tr *Transport, url string) (int, string) {
	t.Helper()
	return roundTrip(t, tr, newRequest(t, context.Background(), http.MethodGet, url))
}

// waitFor polls until cond holds, rather than sleeping and hoping.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// within runs f and fails the test if f has not returned after d: for
// calls that hang when the behaviour under test breaks.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v", what, d)
	}
}

func TestLeanPathReusesOneConnection(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			})
			fb := &countingFallback{next: http.DefaultTransport}
			tr := newTransport(t, Options{Fallback: fb})
			wantBody := "hello"
			if method == http.MethodHead {
				wantBody = ""
			}
			for i := range 3 {
				resp, err := tr.RoundTrip(newRequest(t, context.Background(), method, srv.URL+"/x"))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("request %d: reading body: %v", i, err)
				}
				if resp.StatusCode != http.StatusOK || string(b) != wantBody || resp.ContentLength != 5 {
					t.Errorf("request %d: %d %q, Content-Length %d; want 200 %q, 5", i, resp.StatusCode, b, resp.ContentLength, wantBody)
				}
				if n := tr.idleCount(srv.addr()); n != 1 {
					t.Errorf("request %d: %d idle connections after it, want 1", i, n)
				}
			}
			if n := fb.n.Load(); n != 0 {
				t.Errorf("fallback carried %d requests, want 0", n)
			}
			if n := srv.opened.Load(); n != 1 {
				t.Errorf("server saw %d connections, want 1 for all three requests", n)
			}
		})
	}
}

func TestFallbackCarriesTheRest(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+string(b))
	}
	srv := newServer(t, echo)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(echo))
	t.Cleanup(tlsSrv.Close)

	tests := []struct {
		name   string
		method string
		url    string
		body   string
		header http.Header
		want   string
	}{
		{name: "POST with a body", method: http.MethodPost, url: srv.URL, body: "form", want: "POST form"},
		{name: "GET with a body", method: http.MethodGet, url: srv.URL, body: "odd", want: "GET odd"},
		{name: "upgrade", method: http.MethodGet, url: srv.URL, header: http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, want: "GET "},
		{name: "https", method: http.MethodGet, url: tlsSrv.URL, want: "GET "},
		{name: "PUT", method: http.MethodPut, url: srv.URL, want: "PUT "},
		{name: "DELETE", method: http.MethodDelete, url: srv.URL, want: "DELETE "},
		{name: "OPTIONS", method: http.MethodOptions, url: srv.URL, want: "OPTIONS "},
		{name: "POST without a body", method: http.MethodPost, url: srv.URL, want: "POST "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, err := http.NewRequest(tt.method, tt.url, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			next := http.DefaultTransport
			if strings.HasPrefix(tt.url, "https:") {
				next = tlsSrv.Client().Transport
			}
			fb := &countingFallback{next: next}
			tr := newTransport(t, Options{Fallback: fb})
			code, got := roundTrip(t, tr, req)
			if code != http.StatusOK || got != tt.want {
				t.Errorf("answer %d %q, want 200 %q", code, got, tt.want)
			}
			if n := fb.n.Load(); n != 1 {
				t.Errorf("fallback carried %d requests, want 1", n)
			}
			if n := tr.idleCount(srv.addr()); n != 0 {
				t.Errorf("%d connections in the lean path's pool, want 0", n)
			}
		})
	}
}

func TestWrittenRequest(t *testing.T) {
	tests := []struct {
		name   string
		method string
		target string // path and query of the URL
		setup  func(r *http.Request)
		line   string
		host   string // of the Host line; the server's address when empty
		fields []string
	}{
		{
			name:   "path and query",
			target: "/a/b%2Fc?x=1&y=%20z",
			line:   "GET /a/b%2Fc?x=1&y=%20z HTTP/1.1",
		},
		{
			name:   "HEAD",
			method: http.MethodHead,
			target: "/",
			line:   "HEAD / HTTP/1.1",
		},
		{
			name:   "Host from the request's Host",
			target: "/",
			setup:  func(r *http.Request) { r.Host = "app.example" },
			line:   "GET / HTTP/1.1",
			host:   "app.example",
		},
		{
			name:   "a Host header field is not written",
			target: "/",
			setup:  func(r *http.Request) { r.Header.Set("Host", "evil.example") },
			line:   "GET / HTTP/1.1",
		},
		{
			name:   "header fields passed through",
			target: "/p",
			setup: func(r *http.Request) {
				r.Header.Set("X-One", "1")
				r.Header["X-Multi"] = []string{"a", "b"}
				r.Header.Set("User-Agent", "curl/8.5")
				r.Header.Set("Accept", "text/html, */*;q=0.8")
			},
			line:   "GET /p HTTP/1.1",
			fields: []string{"X-One: 1", "X-Multi: a", "X-Multi: b", "User-Agent: curl/8.5", "Accept: text/html, */*;q=0.8"},
		},
		{
			name:   "Close asks for Connection: close",
			target: "/",
			setup:  func(r *http.Request) { r.Close = true },
			line:   "GET / HTTP/1.1",
			fields: []string{"Connection: close"},
		},
		{
			name:   "the request's Connection field is not written",
			target: "/",
			setup:  func(r *http.Request) { r.Header.Set("Connection", "keep-alive") },
			line:   "GET / HTTP/1.1",
		},
		{
			name:   "no User-Agent for ReverseProxy's empty marker",
			target: "/",
			setup:  func(r *http.Request) { r.Header["User-Agent"] = []string{""} },
			line:   "GET / HTTP/1.1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heads := make(chan []string, 1)
			srv := newRawServer(t, func(c net.Conn) {
				head, err := readHead(bufio.NewReader(c))
				if err != nil {
					return
				}
				heads <- head
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			})
			tr := newTransport(t, Options{})
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req := newRequest(t, context.Background(), method, srv.url()+tt.target)
			if tt.setup != nil {
				tt.setup(req)
			}
			if code, _ := roundTrip(t, tr, req); code != http.StatusNoContent {
				t.Fatalf("answer %d, want 204", code)
			}
			head := <-heads
			if head[0] != tt.line {
				t.Errorf("request line %q, want %q", head[0], tt.line)
			}
			host := tt.host
			if host == "" {
				host = srv.addr()
			}
			// No User-Agent or Accept-Encoding made up, no Content-Length
			// for a request without a body: nothing but these.
			want := append([]string{"Host: " + host}, tt.fields...)
			got := head[1:]
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("header lines\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func TestInvalidRequestSendsNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *http.Request)
	}{
		{"space in a field name", func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} }},
		{"colon in a field name", func(r *http.Request) { r.Header["X-A:b"] = []string{"x"} }},
		{"empty field name", func(r *http.Request) { r.Header[""] = []string{"x"} }},
		{"CRLF in a value", func(r *http.Request) { r.Header.Set("X-A", "a\r\nX-Injected: 1") }},
		{"LF in a value", func(r *http.Request) { r.Header.Set("X-A", "a\nX-Injected: 1") }},
		{"NUL in a value", func(r *http.Request) { r.Header.Set("X-A", "a\x00b") }},
		{"CRLF in a second value", func(r *http.Request) { r.Header["X-A"] = []string{"fine", "a\r\nb"} }},
		{"CRLF in User-Agent", func(r *http.Request) { r.Header.Set("User-Agent", "a\r\nb") }},
		{"CRLF in Host", func(r *http.Request) { r.Host = "app.example\r\nX-Injected: 1" }},
		{"space in the target", func(r *http.Request) { r.URL.Opaque = "/a b" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			received := make(chan int64, 4)
			srv := newRawServer(t, func(c net.Conn) {
				n, _ := io.Copy(io.Discard, c)
				received <- n
			})
			var dials atomic.Int32
			tr := newTransport(t, Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}})
			// Should the request go out, the server does not answer it:
			// the timeout ends the wait.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req := newRequest(t, ctx, http.MethodGet, srv.url()+"/")
			tt.setup(req)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip sent it, want an error")
			}
			// Every connection the transport opened is closed by now: the
			// server sees its end.
			for range dials.Load() {
				select {
				case n := <-received:
					if n != 0 {
						t.Errorf("server received %d bytes, want none", n)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a connection the transport opened is still open")
				}
			}
		})
	}
}

func TestFraming(t *testing.T) {
	hijack := func(answer string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, bw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			bw.WriteString(answer)
			bw.Flush()
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		body    string
		length  int64 // resp.ContentLength
		reuse   bool
	}{
		{
			name: "Content-Length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			},
			body: "hello", length: 5, reuse: true,
		},
		{
			name: "chunked",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hel")
				w.(http.Flusher).Flush()
				io.WriteString(w, "lo")
			},
			body: "hello", length: -1, reuse: true,
		},
		{
			name: "chunked with a trailer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "X-Sum")
				io.WriteString(w, "hel")
				w.(http.Flusher).Flush()
				io.WriteString(w, "lo")
				w.Header().Set("X-Sum", "5")
			},
			body: "hello", length: -1, reuse: true,
		},
		{
			name:    "204 No Content",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
			length:  0, reuse: true,
		},
		{
			name: "Connection: close",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				io.WriteString(w, "hello")
			},
			body: "hello", length: 5, reuse: false,
		},
		{
			name:    "read until close",
			handler: hijack("HTTP/1.1 200 OK\r\n\r\nhello"),
			body:    "hello", length: -1, reuse: false,
		},
		{
			name:    "HTTP/1.0",
			handler: hijack("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
			body:    "hello", length: 5, reuse: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.handler)
			tr := newTransport(t, Options{})
			wantIdle, wantConns := 1, int32(1)
			if !tt.reuse {
				wantIdle, wantConns = 0, 2
			}
			for i := range 2 {
				resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("request %d: reading body: %v", i, err)
				}
				if string(b) != tt.body || resp.ContentLength != tt.length {
					t.Errorf("request %d: body %q, Content-Length %d; want %q, %d", i, b, resp.ContentLength, tt.body, tt.length)
				}
				if n := tr.idleCount(srv.addr()); n != wantIdle {
					t.Errorf("request %d: %d idle connections after it, want %d", i, n, wantIdle)
				}
			}
			if n := srv.opened.Load(); n != wantConns {
				t.Errorf("server saw %d connections, want %d", n, wantConns)
			}
		})
	}
}

func TestTrailerAfterBody(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "hello")
		w.Header().Set("X-Sum", "5")
	})
	tr := newTransport(t, Options{})
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Sum"); got != "5" {
		t.Errorf("trailer X-Sum %q, want 5", got)
	}
}

func TestBodyClosedEarly(t *testing.T) {
	srv := newStallServer(t)
	tr := newTransport(t, Options{})
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL+"/stall"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	// The rest of the body may never come (a stream, a stalled app):
	// closing must not wait for it.
	within(t, time.Second, "closing the body before its end", func() { resp.Body.Close() })
	if n := tr.idleCount(srv.addr()); n != 0 {
		t.Errorf("%d idle connections, want 0: the connection is mid-answer", n)
	}
	waitFor(t, "the server sees the connection closed", func() bool { return srv.closed.Load() == 1 })
	if code, body := get(t, tr, srv.URL+"/"); code != http.StatusOK || body != "ok" {
		t.Errorf("next request: %d %q, want 200 ok", code, body)
	}
	if n := srv.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
}

func TestRetry(t *testing.T) {
	tests := []struct {
		name     string
		answers  []string // on each connection, in turn; then it is closed
		ok       bool     // the second request succeeds
		accepted int32
	}{
		{
			// The app closed the pooled connection while it was idle:
			// the request goes again, on a new connection.
			name:    "pooled connection closed by the app",
			answers: []string{okAnswer},
			ok:      true, accepted: 2,
		},
		{
			// Part of an answer came: the app may have acted on the
			// request, so it is not sent again.
			name:    "pooled connection breaks mid-answer",
			answers: []string{okAnswer, "HTTP/1.1 200 OK\r\nContent-Le"},
			ok:      false, accepted: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, answerEach(tt.answers...))
			tr := newTransport(t, Options{})
			if code, body := get(t, tr, srv.url()); code != http.StatusOK || body != "ok" {
				t.Fatalf("first request: %d %q, want 200 ok", code, body)
			}
			if n := tr.idleCount(srv.addr()); n != 1 {
				t.Fatalf("%d idle connections after the first request, want 1", n)
			}
			if len(tt.answers) == 1 {
				waitFor(t, "the server has closed the connection", func() bool { return srv.finished.Load() == 1 })
			}
			resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.url()))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "ok" {
					t.Errorf("second request: body %q, want ok", b)
				}
			}
			if ok := err == nil; ok != tt.ok {
				t.Errorf("second request: error %v, want success %v", err, tt.ok)
			}
			if n := srv.accepted.Load(); n != tt.accepted {
				t.Errorf("server accepted %d connections, want %d", n, tt.accepted)
			}
		})
	}
}

// After a restart of the app every pooled connection is stale; the retry
// must not take another of them.
func TestRetryAfterEveryPooledConnectionWentStale(t *testing.T) {
	srv := newRawServer(t, answerEach(okAnswer))
	tr := newTransport(t, Options{})
	// Two answers open at once: two connections, both pooled.
	var resps []*http.Response
	for range 2 {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.url()))
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, resp := range resps {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if n := tr.idleCount(srv.addr()); n != 2 {
		t.Fatalf("%d idle connections, want 2", n)
	}
	waitFor(t, "the server has closed both connections", func() bool { return srv.finished.Load() == 2 })
	if code, body := get(t, tr, srv.url()); code != http.StatusOK || body != "ok" {
		t.Errorf("request after the app closed the pooled connections: %d %q, want 200 ok", code, body)
	}
	if n := srv.accepted.Load(); n != 3 {
		t.Errorf("server accepted %d connections, want 3", n)
	}
}

func TestNoRetryOnAFreshConnection(t *testing.T) {
	tests := []struct {
		name  string
		serve func(c net.Conn)
	}{
		{"closed after reading the request", answerEach("")},
		{"closed at once", func(net.Conn) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, tt.serve)
			tr := newTransport(t, Options{})
			resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.url()))
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded, want an error")
			}
			if n := srv.accepted.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1", n)
			}
		})
	}
}

func TestCancelWhileWaitingForTheAnswer(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		io.WriteString(w, "late")
	})
	tr := newTransport(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	resp, err := tr.RoundTrip(newRequest(t, ctx, http.MethodGet, srv.URL))
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip succeeded, want an error")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("RoundTrip returned %v after the request began, want soon after the cancellation at 100ms", d)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if n := tr.idleCount(srv.addr()); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
	waitFor(t, "the server sees the connection closed", func() bool { return srv.closed.Load() == 1 })
}

func TestCancelWhileReadingTheBody(t *testing.T) {
	srv := newStallServer(t)
	tr := newTransport(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, http.MethodGet, srv.URL+"/stall"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	within(t, time.Second, "reading the body after the cancellation at 100ms", func() {
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("reading the rest of the body succeeded, want an error")
		}
	})
	resp.Body.Close()
	if n := tr.idleCount(srv.addr()); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
	waitFor(t, "the server sees the connection closed", func() bool { return srv.closed.Load() == 1 })
}

func TestEarlyHints(t *testing.T) {
	const link = "</style.css>; rel=preload; as=style"
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", link)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	})
	type hint struct {
		code int
		link string
	}
	check := func(t *testing.T, resp *http.Response, err error, hints []hint) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" {
			t.Errorf("final answer %d %q, want 200 ok", resp.StatusCode, b)
		}
		if want := []hint{{http.StatusEarlyHints, link}}; !slices.Equal(hints, want) {
			t.Errorf("informational answers %v, want %v", hints, want)
		}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		tr := newTransport(t, Options{})
		var hints []hint
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, hint{code, h.Get("Link")})
				return nil
			},
		})
		resp, err := tr.RoundTrip(newRequest(t, ctx, http.MethodGet, srv.URL))
		check(t, resp, err, hints)
	})
	t.Run("Do", func(t *testing.T) {
		tr := newTransport(t, Options{})
		var hints []hint
		resp, err := tr.Do(newRequest(t, context.Background(), http.MethodGet, srv.URL), srv.addr(), writeGet(srv.addr()), func(code int, h http.Header) error {
			hints = append(hints, hint{code, h.Get("Link")})
			return nil
		})
		check(t, resp, err, hints)
	})
	t.Run("refused by on1xx", func(t *testing.T) {
		tr := newTransport(t, Options{})
		refused := errors.New("no hints, thanks")
		resp, err := tr.Do(newRequest(t, context.Background(), http.MethodGet, srv.URL), srv.addr(), writeGet(srv.addr()), func(int, http.Header) error {
			return refused
		})
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, refused) {
			t.Errorf("error %v, want the one on1xx returned", err)
		}
		if n := tr.idleCount(srv.addr()); n != 0 {
			t.Errorf("%d idle connections, want 0: the answer was left unread", n)
		}
	})
}

// writeGet writes a plain "GET /" for Do.
func writeGet(host string) func(bw *bufio.Writer) error {
	return func(bw *bufio.Writer) error {
		if err := WriteRequestLine(bw, http.MethodGet, "/", host); err != nil {
			return err
		}
		_, err := bw.WriteString("\r\n")
		return err
	}
}

func TestSwitchingProtocolsUnasked(t *testing.T) {
	srv := newRawServer(t, answerEach("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
	tr := newTransport(t, Options{})
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.url()))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("RoundTrip returned %d, want an error", resp.StatusCode)
	}
	if !strings.Contains(err.Error(), "101") {
		t.Errorf("error %q does not name the 101", err)
	}
	if n := tr.idleCount(srv.addr()); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
	a, b := newServer(t, ok), newServer(t, ok)
	tr := newTransport(t, Options{IdleTimeout: 200 * time.Millisecond})
	start := time.Now()
	get(t, tr, a.URL)
	if n := tr.idleCount(a.addr()); n != 1 {
		t.Fatalf("%d idle connections after the request, want 1", n)
	}
	// b's connection goes idle while the sweep for a's is pending, so
	// that sweep leaves it and has to run again.
	time.Sleep(100 * time.Millisecond)
	get(t, tr, b.URL)
	waitFor(t, "the idle connection to a is closed", func() bool { return a.closed.Load() == 1 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("idle connection closed after %v, want within 1s of an idle timeout of 200ms", d)
	}
	waitFor(t, "the idle connection to b is closed", func() bool { return b.closed.Load() == 1 })
	if n := tr.idleCount(a.addr()) + tr.idleCount(b.addr()); n != 0 {
		t.Errorf("%d idle connections after the timeout, want 0", n)
	}
	// The sweeper stopped with the pool empty; the next connection to go
	// idle starts it again.
	get(t, tr, a.URL)
	waitFor(t, "the next idle connection is closed", func() bool { return a.closed.Load() == 2 })
}

func TestClose(t *testing.T) {
	t.Run("closes idle connections", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		tr := newTransport(t, Options{})
		get(t, tr, srv.URL)
		tr.Close()
		if n := tr.idleCount(srv.addr()); n != 0 {
			t.Errorf("%d idle connections after Close, want 0", n)
		}
		waitFor(t, "the server sees the connection closed", func() bool { return srv.closed.Load() == 1 })
	})
	t.Run("does not pool answers read after it", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		tr := newTransport(t, Options{})
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL))
		if err != nil {
			t.Fatal(err)
		}
		tr.Close()
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
			t.Errorf("body %q, %v; want ok", b, err)
		}
		resp.Body.Close()
		if n := tr.idleCount(srv.addr()); n != 0 {
			t.Errorf("%d idle connections, want 0", n)
		}
		waitFor(t, "the server sees the connection closed", func() bool { return srv.closed.Load() == 1 })
	})
}

func TestMaxIdle(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr := newTransport(t, Options{MaxIdle: 2})
	// Five answers open at once hold five connections.
	var resps []*http.Response
	for range 5 {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL))
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, resp := range resps {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if n := srv.opened.Load(); n != 5 {
		t.Errorf("server saw %d connections, want 5", n)
	}
	if n := tr.idleCount(srv.addr()); n != 2 {
		t.Errorf("%d idle connections, want MaxIdle 2", n)
	}
	waitFor(t, "the server sees the 3 extra connections closed", func() bool { return srv.closed.Load() == 3 })
}

func TestConcurrentRequests(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Query().Get("n")) })
	tr := newTransport(t, Options{})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				n := strings.Repeat("x", w*each+i)
				resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL+"/?n="+n))
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != n {
					t.Errorf("body of %d bytes, %v; want %d bytes", len(b), err, len(n))
					return
				}
			}
		})
	}
	wg.Wait()
	// A connection is dialled only when every other one is busy.
	if n := srv.opened.Load(); n > workers {
		t.Errorf("server saw %d connections for %d workers, want at most %d", n, workers, workers)
	}
}

func TestDoRefusesOtherMethods(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {})
	tr := newTransport(t, Options{})
	// Should Do send one, the server does not answer its empty head.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace} {
		written := false
		resp, err := tr.Do(newRequest(t, ctx, method, srv.URL), srv.addr(), func(bw *bufio.Writer) error {
			written = true
			return nil
		}, nil)
		if err == nil {
			resp.Body.Close()
			t.Errorf("Do sent a %s, want an error", method)
		}
		if written {
			t.Errorf("Do asked for the head of a %s", method)
		}
	}
	if n := srv.opened.Load(); n != 0 {
		t.Errorf("server saw %d connections, want 0", n)
	}
}

func TestDialAddress(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tests := []struct {
		addr string // given to Do
		want string // dialled
	}{
		{srv.addr(), srv.addr()},
		{"app.example", "app.example:80"},
		{"app.example:8080", "app.example:8080"},
		{"192.0.2.1", "192.0.2.1:80"},
		{"[2001:db8::1]", "[2001:db8::1]:80"},
		{"[2001:db8::1]:8080", "[2001:db8::1]:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			var dialled string
			tr := newTransport(t, Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialled = addr
				return (&net.Dialer{}).DialContext(ctx, network, srv.addr())
			}})
			resp, err := tr.Do(newRequest(t, context.Background(), http.MethodGet, srv.URL), tt.addr, writeGet("app.example"), nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
			if dialled != tt.want {
				t.Errorf("dialled %q, want %q", dialled, tt.want)
			}
			if n := tr.idleCount(tt.want); n != 1 {
				t.Errorf("%d idle connections for %s, want 1", n, tt.want)
			}
		})
	}
}

func TestTooManyInformationalAnswers(t *testing.T) {
	for _, n := range []int{max1xx, max1xx + 1} {
		srv := newRawServer(t, answerEach(strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", n)+okAnswer))
		tr := newTransport(t, Options{})
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.url()))
		if n <= max1xx {
			if err != nil {
				t.Fatalf("%d hints: %v", n, err)
			}
			resp.Body.Close()
			continue
		}
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%d hints: RoundTrip returned %d, want an error", n, resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "informational") {
			t.Errorf("error %q does not say what was wrong", err)
		}
	}
}

// TestUnaskedBytesRetireAConnection: an app that sends more than its
// answer (here a body after a HEAD's header) must not have those bytes
// read as the next request's answer, someone else's.
func TestUnaskedBytesRetireAConnection(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			head, err := readHead(br)
			if err != nil {
				return
			}
			if strings.HasPrefix(head[0], "HEAD") {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
				// Later, when the connection already sits in the pool:
				time.Sleep(50 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
		}
	})
	tr := newTransport(t, Options{})
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), http.MethodHead, srv.url()))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := tr.idleCount(srv.addr()); n != 1 {
		t.Fatalf("%d idle connections after the HEAD, want 1", n)
	}
	time.Sleep(200 * time.Millisecond) // let the stray bytes arrive
	if code, body := get(t, tr, srv.url()); code != 200 || body != "real" {
		t.Errorf("GET after the stray bytes: %d %q, want 200 \"real\"", code, body)
	}
	if n := srv.accepted.Load(); n != 2 {
		t.Errorf("the app saw %d connections, want 2 (the tainted one retired)", n)
	}
}
