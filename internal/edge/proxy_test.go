package edge

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// seen is what the app received for one request.
type seen struct {
	line   string // method, request URI, protocol
	host   string
	header http.Header
	length int64
	te     []string
}

// diffApp is an app whose answers cover what a proxy must pass on with
// care, and which records what it was asked, by request URI.
type diffApp struct {
	mu   sync.Mutex
	seen map[string][]seen
}

func (a *diffApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen[r.Header.Get("X-Case")] = append(a.seen[r.Header.Get("X-Case")], seen{
		line: r.Method + " " + r.RequestURI + " " + r.Proto, host: r.Host, header: r.Header.Clone(), length: r.ContentLength, te: r.TransferEncoding,
	})
	a.mu.Unlock()
	h := w.Header()
	switch r.URL.Path {
	case "/leaky":
		h.Set("Server", "Apache/2.4.1")
		h.Set("X-Powered-By", "PHP/5.3")
		h.Set("X-AspNet-Version", "4.0")
		fmt.Fprint(w, "leaky")
	case "/own-headers":
		h.Set("X-Frame-Options", "DENY")
		h.Set("Strict-Transport-Security", "max-age=60")
		fmt.Fprint(w, "mine")
	case "/hop":
		// net/http would write its own Connection header: answer raw.
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer c.Close()
		bw.WriteString("HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: hop\r\nX-Kept: yes\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nContent-Length: 3\r\n\r\nhop")
		bw.Flush()
	case "/chunked":
		h.Set("Trailer", "X-Sum")
		w.WriteHeader(200)
		for i := range 3 {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
		}
		h.Set("X-Sum", "3")
		h.Set(http.TrailerPrefix+"X-Late", "undeclared")
	case "/early":
		h.Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		h.Del("Link")
		fmt.Fprint(w, "after hints")
	case "/events":
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		fmt.Fprint(w, "data: one\n\n")
	case "/missing":
		http.NotFound(w, r)
	case "/redirect":
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	case "/cookie":
		http.SetCookie(w, &http.Cookie{Name: "s", Value: "1"})
		h.Add("Vary", "Cookie")
		h.Add("Vary", "Accept")
		fmt.Fprint(w, "cookie")
	case "/empty":
		w.WriteHeader(http.StatusNoContent)
	case "/big":
		h.Set("Content-Type", "application/octet-stream")
		w.Write(bytes.Repeat([]byte("0123456789abcdef"), 8<<10)) // 128 KiB, sent chunked by the app
	case "/etag":
		h.Set("ETag", `"v1"`)
		h.Set("Cache-Control", "max-age=60")
		h.Set("Content-Type", "text/plain")
		fmt.Fprint(w, "tagged")
	case "/raw-untyped", "/raw-untyped-big", "/raw-short", "/raw-close":
		// Answers net/http would not write: no Content-Type, a body
		// shorter than announced, a body that ends with the connection.
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer c.Close()
		switch r.URL.Path {
		case "/raw-untyped":
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>")
		case "/raw-untyped-big":
			page := "<html>" + strings.Repeat("big ", 4<<10) + "</html>"
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(page), page)
		case "/raw-short":
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nabc")
		case "/raw-close":
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end")
		}
		bw.Flush()
	case "/proto":
		fmt.Fprint(w, r.Header.Get("X-Forwarded-Proto"))
	default:
		fmt.Fprint(w, "plain "+r.URL.RawQuery)
	}
}

// TestLeanMatchesReverseProxy sends the same requests through the lean way
// and through httputil.ReverseProxy with net/http's Transport, and
// compares what the app was asked and what the client got.
func TestLeanMatchesReverseProxy(t *testing.T) {
	app := &diffApp{seen: map[string][]seen{}}
	appURL := startApp(t, app)
	up, err := url.Parse(appURL)
	if err != nil {
		t.Fatal(err)
	}
	e := New(Options{})
	rt := &route{app: "diff", headers: newHeaderSet(map[string]string{"Referrer-Policy": "no-referrer"})}
	p := e.newProxy(rt, up)
	if !p.lean {
		t.Fatalf("an http upstream without a path should take the lean way")
	}
	ref := e.newReverseProxy(rt, up)
	ref.Transport = &http.Transport{DisableCompression: true}
	t.Cleanup(ref.Transport.(*http.Transport).CloseIdleConnections)

	serve := func(h http.Handler) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			client := netip.MustParseAddr("192.0.2.7") // as if the real-IP step had found it
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientKey{}, client)))
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	leanAddr := serve(p)
	refAddr := serve(ref)

	cases := []struct {
		name string
		head string // the request's head after the request line, without the Host line and the final CRLF
		line string // request line
		lean bool   // whether the lean way is expected to take it
	}{
		{"plain", "User-Agent: t/1\r\nAccept: text/html\r\nAccept: */*\r\n", "GET /plain?a=1&b=%20 HTTP/1.1", true},
		{"head", "", "HEAD /plain HTTP/1.1", true},
		{"no user agent", "", "GET /plain HTTP/1.1", true},
		{"force query", "", "GET /plain? HTTP/1.1", true},
		{"escaped path", "", "GET /a%2Fb/c%20d HTTP/1.1", true},
		{"double slash", "", "GET //plain HTTP/1.1", true},
		{"connection names", "Connection: keep-alive, X-Private\r\nX-Private: 1\r\nX-Kept: 2\r\n", "GET /plain HTTP/1.1", true},
		{"hop by hop", "Keep-Alive: 300\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nTe: trailers, deflate\r\nTrailer: X\r\n", "GET /plain HTTP/1.1", true},
		{"te without trailers", "Te: deflate\r\n", "GET /plain HTTP/1.1", true},
		{"spoofed forwarding", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\n", "GET /plain HTTP/1.1", true},
		{"spoofed visitor", "X-Moat-User: root\r\nX-Moat-Email: root@example.com\r\n", "GET /plain HTTP/1.1", true},
		{"cookie and auth pass", "Cookie: a=b\r\nAuthorization: Bearer x\r\n", "GET /plain HTTP/1.1", true},
		{"semicolon query", "", "GET /plain?a=1;b=2 HTTP/1.1", false},
		{"bad escape query", "", "GET /plain?a=%zz HTTP/1.1", false},
		{"leaky", "", "GET /leaky HTTP/1.1", true},
		{"own headers", "", "GET /own-headers HTTP/1.1", true},
		{"hop response", "", "GET /hop HTTP/1.1", true},
		{"chunked with trailers", "Te: trailers\r\n", "GET /chunked HTTP/1.1", true},
		{"early hints", "", "GET /early HTTP/1.1", true},
		{"event stream", "", "GET /events HTTP/1.1", true},
		{"not found", "", "GET /missing HTTP/1.1", true},
		{"redirect", "", "GET /redirect HTTP/1.1", true},
		{"set-cookie and vary", "", "GET /cookie HTTP/1.1", true},
		{"no content", "", "GET /empty HTTP/1.1", true},
		{"post", "Content-Length: 4\r\n", "POST /plain HTTP/1.1", false},
		{"get with body", "Content-Length: 4\r\n", "GET /plain HTTP/1.1", false},
		{"http/1.0", "", "GET /plain HTTP/1.0", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := ""
			if strings.Contains(c.head, "Content-Length: 4") {
				body = "abcd"
			}
			var got [2]exchange
			for i, addr := range []string{leanAddr, refAddr} {
				tag := fmt.Sprintf("%s-%d", c.name, i)
				raw := c.line + "\r\nHost: app.test\r\nX-Case: " + tag + "\r\n" + c.head + "\r\n" + body
				got[i] = rawExchange(t, addr, raw)
				app.mu.Lock()
				s := app.seen[tag]
				app.mu.Unlock()
				if len(s) != 1 {
					t.Fatalf("%s way: the app saw %d requests, want 1", []string{"lean", "reference"}[i], len(s))
				}
				s[0].header.Del("X-Case")
				got[i].seen = s[0]
			}
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(c.line + "\r\nHost: app.test\r\n" + c.head + "\r\n" + body)))
			if err != nil {
				t.Fatal(err)
			}
			if lean := leanRequest(req); lean != c.lean {
				t.Errorf("leanRequest = %v, want %v", lean, c.lean)
			}
			lean, ref := got[0], got[1]
			if lean.seen.line != ref.seen.line || lean.seen.host != ref.seen.host || lean.seen.length != ref.seen.length || !slices.Equal(lean.seen.te, ref.seen.te) {
				t.Errorf("the app was asked\n lean: %q host %q length %d te %v\n  ref: %q host %q length %d te %v",
					lean.seen.line, lean.seen.host, lean.seen.length, lean.seen.te, ref.seen.line, ref.seen.host, ref.seen.length, ref.seen.te)
			}
			if d := headerDiff(lean.seen.header, ref.seen.header); d != "" {
				t.Errorf("headers the app got differ (lean, reference):\n%s", d)
			}
			if lean.status != ref.status || lean.body != ref.body || lean.broken != "" || ref.broken != "" {
				t.Errorf("answer: lean %d %q %s, reference %d %q %s", lean.status, lean.body, lean.broken, ref.status, ref.body, ref.broken)
			}
			if !slices.Equal(lean.early, ref.early) {
				t.Errorf("1xx answers: lean %v, reference %v", lean.early, ref.early)
			}
			if d := headerDiff(lean.header, ref.header); d != "" {
				t.Errorf("headers the client got differ (lean, reference):\n%s", d)
			}
			if d := headerDiff(lean.trailer, ref.trailer); d != "" {
				t.Errorf("trailers differ (lean, reference):\n%s", d)
			}
			switch c.name {
			case "early hints":
				if len(lean.early) != 1 || !strings.Contains(lean.early[0], "style.css") {
					t.Errorf("the 103 did not come through: %v", lean.early)
				}
			case "chunked with trailers":
				if lean.trailer.Get("X-Sum") != "3" || lean.trailer.Get("X-Late") != "undeclared" {
					t.Errorf("trailers did not come through: %v", lean.trailer)
				}
			case "hop response":
				if lean.header.Get("X-Secret") != "" || lean.header.Get("Keep-Alive") != "" || lean.header.Get("Proxy-Authenticate") != "" || lean.header.Get("X-Kept") != "yes" {
					t.Errorf("hop-by-hop headers came through: %v", lean.header)
				}
			case "leaky":
				if lean.header.Get("Server") != "" || lean.header.Get("X-Powered-By") != "" || lean.header.Get("X-Aspnet-Version") != "" {
					t.Errorf("version headers came through: %v", lean.header)
				}
			}
			if c.name == "plain" {
				// The rules themselves, not only their sameness.
				h := lean.seen.header
				if h.Get("X-Forwarded-For") != "192.0.2.7" || h.Get("X-Forwarded-Host") != "app.test" || h.Get("X-Forwarded-Proto") != "http" {
					t.Errorf("forwarding headers: %v", h)
				}
				if lean.header.Get("Referrer-Policy") != "no-referrer" || lean.header.Get("X-Content-Type-Options") != "nosniff" {
					t.Errorf("security headers missing: %v", lean.header)
				}
			}
		})
	}
}

// exchange is one request's outcome as a client sees it.
type exchange struct {
	status  int
	early   []string // "103 Link=..." for each 1xx answer
	header  http.Header
	trailer http.Header
	body    string
	broken  string // how the answer broke off ("" when it came whole)
	seen    seen
}

func rawExchange(t *testing.T, addr, raw string) exchange {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return exchangeOn(t, c, bufio.NewReader(c), raw)
}

// exchangeOn sends raw on c and reads one answer (after any 1xx) from br.
func exchangeOn(t *testing.T, c net.Conn, br *bufio.Reader, raw string) exchange {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(raw, " ")
	var x exchange
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			x.broken = "no answer"
			return x
		}
		if resp.StatusCode < 200 {
			x.early = append(x.early, fmt.Sprintf("%d %v", resp.StatusCode, resp.Header))
			continue
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			x.broken = "body cut short"
		}
		resp.Body.Close()
		x.status, x.body, x.trailer = resp.StatusCode, string(b), resp.Trailer
		x.header = resp.Header
		x.header.Del("Date")
		return x
	}
}

// headerDiff lists the fields that differ between a and b.
func headerDiff(a, b http.Header) string {
	var out []string
	keys := slices.Sorted(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if !slices.Equal(a[k], b[k]) {
			out = append(out, fmt.Sprintf("  %s: %q vs %q", k, a[k], b[k]))
		}
	}
	return strings.Join(out, "\n")
}

// TestVisitorHeaders: what a client sends as X-Moat-User or X-Moat-Email
// never reaches an app, either way to it; a visitor that the sign-in gate
// let through is told to the app.
func TestVisitorHeaders(t *testing.T) {
	appURL := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q %q", r.Header.Values(UserHeader), r.Header.Values(EmailHeader))
	}))
	up, _ := url.Parse(appURL)
	e := New(Options{})
	rt := &route{app: "grafana", headers: newHeaderSet(nil)}
	ref := e.newReverseProxy(rt, up)
	for _, tc := range []struct {
		name    string
		visitor *Visitor
		want    string
	}{
		{"a client's own", nil, `[] []`},
		{"the gate's", &Visitor{User: "Owner", Email: "owner@example.com"}, `["Owner"] ["owner@example.com"]`},
	} {
		for way, h := range map[string]http.Handler{"lean": e.newProxy(rt, up), "reverse proxy": ref} {
			req := httptest.NewRequest("GET", "https://grafana.example.com/", nil)
			req.Header.Set(UserHeader, "root")
			req.Header.Add(EmailHeader, "root@example.com")
			if tc.visitor != nil {
				req = req.WithContext(WithVisitor(req.Context(), *tc.visitor))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got := rec.Body.String(); got != tc.want {
				t.Errorf("%s, %s: the app saw %s, want %s", tc.name, way, got, tc.want)
			}
		}
	}
}
