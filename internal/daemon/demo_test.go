package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `moat serve --demo` on a fresh data dir: a local CA, the demo app behind
// the edge with its headers, the status page with a strict CSP, and a
// banner that says what to open and how to trust the CA.
func TestDemo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dm := &Demo{HTTPSAddr: httpsAddr, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	banner := make(chan string, 1)
	go func() {
		done <- Run(ctx, Options{DataDir: dir, Socket: filepath.Join(dir, "moat.sock"), Logger: testLogger(t), Demo: dm,
			Ready: func(info Info) { banner <- dm.Banner(info) }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var b string
	select {
	case b = <-banner:
	case err := <-done:
		t.Fatalf("demo did not start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not start in 20s")
	}
	root := filepath.Join(dir, "local-ca", "root.crt")
	_, port, _ := net.SplitHostPort(httpsAddr)
	for _, want := range []string{"https://localhost:" + port + "/", "https://demo.localhost:" + port + "/", root, "update-ca-certificates"} {
		if !strings.Contains(b, want) {
			t.Errorf("banner lacks %q:\n%s", want, b)
		}
	}
	pem, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		},
	}}
	tests := []struct{ url, body, header, value string }{
		{"https://demo.localhost:" + port + "/", "Hello from the demo app", "X-Frame-Options", "SAMEORIGIN"},
		{"https://localhost:" + port + "/", "moat demo", "Content-Security-Policy", "default-src 'none'"},
	}
	for _, tt := range tests {
		resp, err := c.Get(tt.url)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), tt.body) || !strings.Contains(resp.Header.Get(tt.header), tt.value) {
			t.Errorf("GET %s: %d, %s: %q\n%s", tt.url, resp.StatusCode, tt.header, resp.Header.Get(tt.header), body)
		}
	}
}
