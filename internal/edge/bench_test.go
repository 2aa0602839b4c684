package edge

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"moat/internal/config"
	"moat/internal/localca"
)

// BenchmarkProxy measures a small GET through the whole edge (TLS with
// keep-alive, real IP, rate limit, cache, headers, proxy to a loopback
// upstream) as a cache hit and as a bypass, against the same GET straight
// to the upstream.
//
//	go test -run '^$' -bench Proxy -benchtime 20000x ./internal/edge/
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Path == "/nostore" {
			w.Header().Set("Cache-Control", "no-store")
		}
		io.WriteString(w, "hello from the app\n")
	}))
	defer up.Close()
	ca, err := localca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e := New(Options{Certs: testCerts{get: ca.GetCertificate("app.localhost")}})
	// Every layer on, with a limit so high it never refuses.
	st := config.State{
		Server: config.Server{RateLimit: config.RateLimit{Requests: 1_000_000, Per: "second"}},
		Apps:   []config.App{{Name: "app", Domains: []string{"app.localhost"}, Upstream: up.URL}},
	}
	if err := e.Load(st); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.ServeListener(ctx, ln, true)

	edgeClient := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: ca.Pool(), ServerName: "app.localhost"},
		MaxIdleConnsPerHost: 64,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
		},
	}}
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"edge-https-hit", edgeClient, "https://app.localhost/"},
		{"edge-https-bypass", edgeClient, "https://app.localhost/nostore"},
		{"direct-http", direct, up.URL + "/nostore"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.client.Get(c.url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
