package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// `moat serve --demo` on a fresh data dir: a local CA, the demo app behind
// the edge with its headers, the status page with a strict CSP, and a
// banner that says what to open and how to trust the CA. An app with a
// real domain gets no certificate for it: the local CA is limited to
// localhost names.
func TestDemo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seedApp(t, dir, config.App{Name: "real", Domains: []string{"real.example.com"}, Upstream: "http://127.0.0.1:1"})
	ports := testenv.FreePorts(t, 2)
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	dm := &Demo{HTTPSAddr: httpsAddr, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
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

	// A configured domain outside localhost gets the localhost certificate,
	// never one for its own name.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", httpsAddr,
		&tls.Config{ServerName: "real.example.com", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake for real.example.com: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if err := leaf.VerifyHostname("real.example.com"); err == nil {
		t.Errorf("demo served a certificate for real.example.com (DNS names %q)", leaf.DNSNames)
	}
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Errorf("demo did not fall back to the localhost certificate: %v", err)
	}
	_, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", httpsAddr,
		&tls.Config{ServerName: "real.example.com", RootCAs: pool})
	var hostname x509.HostnameError
	if !errors.As(err, &hostname) {
		t.Errorf("handshake for real.example.com trusting the local CA: %v, want a name mismatch", err)
	}
}

// seedApp adds app to the store in dataDir before the daemon starts.
func seedApp(t *testing.T, dataDir string, app config.App) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, StorePath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = st.Update(ctx, store.Actor{Who: "test", From: "local"}, false, func(s *config.State) error {
		s.Apps = append(s.Apps, app)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
