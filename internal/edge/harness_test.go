package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"moat/internal/config"
	"moat/internal/localca"
)

// The tests reach every host name below through 127.0.0.1 only: clients
// dial the edge's loopback listener whatever the URL says, and the names
// exist only in Host headers and SNI.

// testCerts is a CertSource backed by a local CA. Its HTTPHandler answers
// ACME HTTP-01 challenges itself, as the real certificate manager does,
// and passes everything else on.
type testCerts struct {
	get func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

func (c testCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.get(hello)
}

func (testCerts) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/"); ok {
			fmt.Fprint(w, "challenge answer for "+tok)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// testEdge is an Edge serving on loopback listeners for one test.
type testEdge struct {
	*Edge
	t         *testing.T
	httpAddr  string // 127.0.0.1:port of the HTTP side
	httpsAddr string // 127.0.0.1:port of the HTTPS side
	roots     *x509.CertPool
}

// startEdge loads st into a new Edge and serves it until the test ends.
// An empty st.Server.Listen.HTTPS is set to the real HTTPS listener, so
// that redirects point at it.
func startEdge(t *testing.T, st config.State) *testEdge {
	return startEdgeWith(t, st, nil)
}

func startEdgeWith(t *testing.T, st config.State, fallback http.Handler) *testEdge {
	t.Helper()
	return startEdgeOpts(t, st, Options{Fallback: fallback})
}

// startEdgeOpts is startEdge with the edge's options; Certs is set here.
func startEdgeOpts(t *testing.T, st config.State, o Options) *testEdge {
	t.Helper()
	certs, roots := testCertSource(t)
	httpLn := listenLoopback(t)
	httpsLn := listenLoopback(t)
	if st.Server.Listen.HTTPS == "" {
		st.Server.Listen.HTTPS = httpsLn.Addr().String()
	}
	o.Certs = certs
	e := New(o)
	if err := e.Load(st); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, httpLn, httpsLn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return 15 s after its context ended")
		}
	})
	return &testEdge{Edge: e, t: t, httpAddr: httpLn.Addr().String(), httpsAddr: httpsLn.Addr().String(), roots: roots}
}

// testCertSource is a local CA for *.localhost and the pool that trusts it.
func testCertSource(t *testing.T) (CertSource, *x509.CertPool) {
	t.Helper()
	ca, err := localca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return testCerts{get: ca.GetCertificate("*.localhost", "localhost", "127.0.0.1")}, ca.Pool()
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dialTo returns a dial function that connects to addr whatever address
// it is asked for.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// client returns an HTTPS client that trusts the test CA, speaks HTTP/2
// when h2 is true (HTTP/1.1 otherwise) and does not follow redirects.
func (te *testEdge) client(h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext:       dialTo(te.httpsAddr),
		TLSClientConfig:   &tls.Config{RootCAs: te.roots},
		ForceAttemptHTTP2: h2,
	}
	te.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: noRedirect}
}

// httpClient returns a plain HTTP client for the HTTP side.
func (te *testEdge) httpClient() *http.Client {
	tr := &http.Transport{DialContext: dialTo(te.httpAddr)}
	te.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: noRedirect}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// get sends a GET with the given Host (the URL's host when empty) and
// returns the response with its body read.
func get(t *testing.T, c *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

// startApp starts an app on loopback and returns its URL.
func startApp(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// text is an upstream handler that answers 200 with body.
func text(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, body)
	})
}

// state is a server for the proxying tests: the rate limiter and the
// cache, which have tests of their own, are off so that every request
// reaches the app.
func state(https string, apps ...config.App) config.State {
	return config.State{Server: config.Server{Listen: config.Listen{HTTPS: https}, RateLimit: config.RateLimit{Off: true}}, Apps: apps}
}

func app(name, up string, headers map[string]string, domains ...string) config.App {
	return config.App{Name: name, Domains: domains, Upstream: up, Headers: headers, Cache: config.Cache{TTL: "0s"}}
}
