package edge

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"moat/internal/config"
	"moat/internal/localca"
)

// BenchmarkProxy measures a small GET through the whole edge (TLS with
// keep-alive, routing, headers, proxy to a loopback upstream), against
// the same GET straight to the upstream.
//
//	go test -run '^$' -bench Proxy -benchtime 20000x ./internal/edge/
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from the app\n")
	}))
	defer up.Close()
	ca, err := localca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e := New(slog.New(slog.DiscardHandler), testCerts{get: ca.GetCertificate("app.localhost")}, nil)
	if err := e.Load(config.State{Apps: []config.App{{Name: "app", Domains: []string{"app.localhost"}, Upstream: up.URL}}}); err != nil {
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
		{"edge-https", edgeClient, "https://app.localhost/"},
		{"direct-http", direct, up.URL + "/"},
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
