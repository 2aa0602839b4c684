package edge

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRedirectToHTTPS(t *testing.T) {
	for _, lc := range []struct {
		name, listen, origin string
	}{
		{"https on 443 leaves the port out", ":443", "https://app.localhost"},
		{"https on a high port keeps it", ":8443", "https://app.localhost:8443"},
	} {
		t.Run(lc.name, func(t *testing.T) {
			var hits atomic.Int64
			up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
			te := startEdge(t, state(lc.listen, app("app", up, nil, "app.localhost")))
			c := te.httpClient()

			for _, tc := range []struct {
				name, target, host string
				code               int
				location, body     string
			}{
				{"path and query kept", "/path?q=1", "", 308, lc.origin + "/path?q=1", ""},
				{"root", "/", "", 308, lc.origin + "/", ""},
				{"escaped path and query kept", "/a%20b/c%2Fd?x=1&y=%2F#frag", "", 308, lc.origin + "/a%20b/c%2Fd?x=1&y=%2F", ""},
				{"host with port, case and final dot", "/p", "APP.Localhost.:8080", 308, lc.origin + "/p", ""},
				{"unknown host", "/path", "unknown.localhost", 404, "", "404 Not Found"},
				{"acme challenge answered, not redirected", "/.well-known/acme-challenge/tok123", "", 200, "", "challenge answer for tok123"},
				{"acme challenge for any host", "/.well-known/acme-challenge/tok456", "unknown.localhost", 200, "", "challenge answer for tok456"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, body := get(t, c, "http://app.localhost"+tc.target, tc.host)
					if resp.StatusCode != tc.code {
						t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.code, body)
					}
					if got := resp.Header.Get("Location"); got != tc.location {
						t.Errorf("Location %q, want %q", got, tc.location)
					}
					if !strings.Contains(body, tc.body) {
						t.Errorf("body %q, want it to contain %q", body, tc.body)
					}
				})
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the HTTP side sent %d requests to the app; it must only redirect", n)
			}
		})
	}
}

// With a fallback (moat's own pages), the HTTP side redirects hosts that
// are no app's too, IP literals included.
func TestRedirectFallbackHosts(t *testing.T) {
	fallback := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		fmt.Fprint(w, "moat's own page")
	})
	te := startEdgeWith(t, state(":8443"), fallback)
	c := te.httpClient()
	for _, tc := range []struct{ host, want string }{
		{"moat.localhost", "https://moat.localhost:8443/x?y=1"},
		{"127.0.0.1:8080", "https://127.0.0.1:8443/x?y=1"},
		{"[::1]:8080", "https://[::1]:8443/x?y=1"},
		{"[::1]", "https://[::1]:8443/x?y=1"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			resp, _ := get(t, c, "http://moat.localhost/x?y=1", tc.host)
			if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != tc.want {
				t.Errorf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), tc.want)
			}
		})
	}

	// On the HTTPS side the fallback answers, with the defaults beneath
	// its own headers.
	resp, body := get(t, te.client(true), "https://moat.localhost/", "")
	if resp.StatusCode != 200 || body != "moat's own page" {
		t.Fatalf("fallback: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Values("X-Frame-Options"); len(got) != 1 || got[0] != "DENY" {
		t.Errorf("X-Frame-Options %q, want the fallback's own [DENY]", got)
	}
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Errorf("Strict-Transport-Security %q on the fallback page", got)
	}
}

func TestSecurityHeaders(t *testing.T) {
	defaults := DefaultHeaders()
	if len(defaults) != 6 {
		t.Fatalf("DefaultHeaders has %d entries, the tests below expect 6", len(defaults))
	}
	// One upstream plays every app; it tells them apart by the Host the
	// edge passes on.
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Host {
		case "own.localhost":
			w.Header().Set("X-Frame-Options", "DENY")
			w.Header().Set("Referrer-Policy", "no-referrer")
		case "leaky.localhost":
			w.Header().Set("Server", "Apache/2.4.1 (Unix)")
			w.Header().Set("X-Powered-By", "PHP/5.3.3")
			w.Header().Set("X-AspNet-Version", "4.0.30319")
		}
		fmt.Fprint(w, "app")
	}))
	te := startEdge(t, state("",
		app("plain", up, nil, "plain.localhost"),
		app("own", up, nil, "own.localhost"),
		app("override", up, map[string]string{
			"x-frame-options":           "DENY",
			"Strict-Transport-Security": "max-age=63072000; includeSubDomains",
		}, "override.localhost"),
		app("remove", up, map[string]string{"X-Frame-Options": "", "x-download-options": ""}, "remove.localhost"),
		app("leaky", up, nil, "leaky.localhost"),
	))

	// want maps a header to its one expected value; "" means absent.
	with := func(changes map[string]string) map[string]string {
		m := DefaultHeaders()
		for k, v := range changes {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name, host string
		code       int
		want       map[string]string
	}{
		{"defaults", "plain.localhost", 200, with(nil)},
		{"app's own headers kept", "own.localhost", 200, with(map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"})},
		{"override replaces", "override.localhost", 200, with(map[string]string{"X-Frame-Options": "DENY", "Strict-Transport-Security": "max-age=63072000; includeSubDomains"})},
		{"empty override removes", "remove.localhost", 200, with(map[string]string{"X-Frame-Options": "", "X-Download-Options": ""})},
		{"version headers dropped", "leaky.localhost", 200, with(map[string]string{"Server": "", "X-Powered-By": "", "X-AspNet-Version": ""})},
		{"404 page", "unknown.localhost", 404, with(nil)},
	}
	for _, proto := range []struct {
		name string
		h2   bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
		c := te.client(proto.h2)
		for _, tc := range cases {
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				resp, body := get(t, c, "https://"+tc.host+"/", "")
				if resp.StatusCode != tc.code {
					t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.code, body)
				}
				checkHeaders(t, resp.Header, tc.want)
			})
		}
	}
}

// checkHeaders checks that each header in want has exactly its value, or
// is absent when the value is "".
func checkHeaders(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got := h.Values(k)
		switch {
		case v == "" && len(got) != 0:
			t.Errorf("%s: %q, want it absent", k, got)
		case v != "" && (len(got) != 1 || got[0] != v):
			t.Errorf("%s: %q, want [%q]", k, got, v)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	// An address on loopback that nothing listens on any more.
	ln := listenLoopback(t)
	down := "http://" + ln.Addr().String()
	ln.Close()

	te := startEdge(t, state("",
		app("down", down, nil, "down.localhost"),
		app("down-custom", down, map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": ""}, "custom.localhost"),
	))
	const page = "502 Bad Gateway: the app behind this address is not answering. If it is yours, check that it is running.\n"
	for _, tc := range []struct {
		host string
		want map[string]string
	}{
		{"down.localhost", DefaultHeaders()},
		{"custom.localhost", func() map[string]string {
			m := DefaultHeaders()
			m["X-Frame-Options"], m["Referrer-Policy"] = "DENY", ""
			return m
		}()},
	} {
		t.Run(tc.host, func(t *testing.T) {
			resp, body := get(t, te.client(true), "https://"+tc.host+"/some/path", "")
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", resp.StatusCode)
			}
			if body != page {
				t.Errorf("body %q, want %q", body, page)
			}
			for _, leak := range []string{"dial", "refused", "127.0.0.1", "goroutine", ".go:"} {
				if strings.Contains(body, leak) {
					t.Errorf("body leaks %q: %q", leak, body)
				}
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			checkHeaders(t, resp.Header, tc.want)
		})
	}
}

func TestForwarding(t *testing.T) {
	seen := make(chan *http.Request, 1)
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Clone(r.Context())
	}))
	te := startEdge(t, state("", app("app", up, nil, "app.localhost")))

	// What a client might send to fool the app or the next hop: forged
	// forwarding headers (loopback values, but not the client's own
	// address) and hop-by-hop headers meant for the edge only.
	forged := map[string]string{
		"X-Forwarded-For":   "127.6.6.6",
		"X-Forwarded-Host":  "forged.localhost",
		"X-Forwarded-Proto": "http",
		"Forwarded":         "for=127.6.6.6;proto=http;host=forged.localhost",
	}
	hop := map[string]string{
		"Connection":          "X-Foo, Keep-Alive",
		"X-Foo":               "named in Connection",
		"Keep-Alive":          "timeout=5",
		"Te":                  "gzip",
		"Proxy-Authorization": "Basic dXNlcjpwYXNz",
		"Proxy-Connection":    "keep-alive",
	}
	for _, tc := range []struct {
		name string
		h2   bool
		send map[string]string
	}{
		{"HTTP/1.1 with forged and hop-by-hop headers", false, merge(forged, hop)},
		{"HTTP/2 with forged headers", true, forged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "https://app.localhost/fwd?x=1", nil)
			for k, v := range tc.send {
				req.Header.Set(k, v)
			}
			req.Header.Set("X-End-To-End", "kept")
			resp, err := te.client(tc.h2).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			r := <-seen
			if r.Host != "app.localhost" {
				t.Errorf("upstream Host %q, want app.localhost", r.Host)
			}
			if r.URL.RequestURI() != "/fwd?x=1" {
				t.Errorf("upstream URI %q", r.URL.RequestURI())
			}
			// SetXForwarded starts from a clean outbound request (Rewrite
			// strips the client's X-Forwarded-* and Forwarded), so the
			// app sees the client's address alone, not an appended chain.
			for k, want := range map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  "app.localhost",
				"X-End-To-End":      "kept",
			} {
				if got := r.Header.Values(k); len(got) != 1 || got[0] != want {
					t.Errorf("upstream %s: %q, want [%q]", k, got, want)
				}
			}
			for _, k := range []string{"Forwarded", "X-Foo", "Keep-Alive", "Te", "Proxy-Authorization", "Proxy-Connection"} {
				if v := r.Header.Values(k); len(v) != 0 {
					t.Errorf("upstream got %s: %q; it must not be passed on", k, v)
				}
			}
			for _, v := range r.Header.Values("Connection") {
				if strings.Contains(strings.ToLower(v), "x-foo") || strings.Contains(strings.ToLower(v), "keep-alive") {
					t.Errorf("upstream got the client's Connection header %q", v)
				}
			}
		})
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestProtocols(t *testing.T) {
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream got %s", r.Proto)
	}))
	te := startEdge(t, state("", app("app", up, nil, "app.localhost")))
	for _, tc := range []struct {
		name string
		h2   bool
		want int
	}{
		{"HTTP/2", true, 2},
		{"HTTP/1.1", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, te.client(tc.h2), "https://app.localhost/", "")
			if resp.StatusCode != 200 || resp.ProtoMajor != tc.want {
				t.Errorf("got %d over %s, want 200 over HTTP/%d", resp.StatusCode, resp.Proto, tc.want)
			}
			if body != "upstream got HTTP/1.1" {
				t.Errorf("body %q", body)
			}
		})
	}
}

func TestTLSVersionsAndSuites(t *testing.T) {
	up := startApp(t, text("over tls"))
	te := startEdge(t, state("", app("app", up, nil, "app.localhost")))
	for _, tc := range []struct {
		name        string
		cfg         *tls.Config
		ok          bool
		wantVersion uint16
	}{
		{"TLS 1.1 refused", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false, 0},
		{"TLS 1.2 CBC suite refused", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false, 0},
		{"TLS 1.2 AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true, tls.VersionTLS12},
		{"TLS 1.2 ChaCha20-Poly1305", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, true, tls.VersionTLS12},
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true, tls.VersionTLS13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg.Clone()
			cfg.RootCAs, cfg.ServerName, cfg.NextProtos = te.roots, "app.localhost", []string{"http/1.1"}
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			conn, err := d.Dial("tcp", te.httpsAddr)
			if !tc.ok {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded, want it refused")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			tconn := conn.(*tls.Conn)
			if v := tconn.ConnectionState().Version; v != tc.wantVersion {
				t.Errorf("version %s, want %s", tls.VersionName(v), tls.VersionName(tc.wantVersion))
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d over %s", resp.StatusCode, tls.VersionName(tc.wantVersion))
			}
		})
	}
}

// The TLS settings themselves, since Go's own defaults would pass the
// handshake tests above even without them.
func TestTLSConfigIsStrict(t *testing.T) {
	c := New(Options{Certs: testCerts{}}).TLSConfig()
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", c.MinVersion)
	}
	if len(c.CipherSuites) == 0 {
		t.Fatal("no cipher suites listed: Go's defaults include CBC suites")
	}
	for _, id := range c.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.Contains(name, "_GCM_") && !strings.Contains(name, "CHACHA20_POLY1305") || !strings.HasPrefix(name, "TLS_ECDHE_") {
			t.Errorf("cipher suite %s is not an AEAD suite with forward secrecy", name)
		}
	}
}
