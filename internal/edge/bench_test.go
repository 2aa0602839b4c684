package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
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
	_, ln, ca := benchEdge(b, up.URL, nil)

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

// benchEdge serves app.localhost, proxied to upstream, on a loopback
// listener with every layer on (a rate limit so high it never refuses)
// until the benchmark ends; the certificate comes from the returned CA.
func benchEdge(b *testing.B, upstream string, accessLog *slog.Logger) (*Edge, net.Listener, *localca.CA) {
	b.Helper()
	ca, err := localca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e := New(Options{Certs: testCerts{get: ca.GetCertificate("app.localhost")}, AccessLog: accessLog})
	st := config.State{
		Server: config.Server{RateLimit: config.RateLimit{Requests: 1_000_000, Per: "second"}},
		Apps:   []config.App{{Name: "app", Domains: []string{"app.localhost"}, Upstream: upstream}},
	}
	if err := e.Load(st); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go e.ServeListener(ctx, ln, true)
	return e, ln, ca
}

// BenchmarkLaneBypass measures what the edge allocates for one bypassed
// GET in the fast lane (every layer on: real IP, ban check, rate limit,
// the cache's decision, headers, access-log decision, the proxy), on one
// keep-alive TLS connection. The client writes the same request bytes
// and reads the answer into its own buffer, and the upstream answers
// from a fixed byte slice, so the allocations counted are the edge's.
//
//	go test -run '^$' -bench LaneBypass -benchtime 20000x ./internal/edge/
func BenchmarkLaneBypass(b *testing.B) {
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\nContent-Length: 19\r\n\r\nhello from the app\n")
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				have := 0
				for {
					n, err := c.Read(buf[have:])
					if err != nil {
						return
					}
					have += n
					for {
						end := bytes.Index(buf[:have], []byte("\r\n\r\n"))
						if end < 0 {
							break
						}
						if _, err := c.Write(answer); err != nil {
							return
						}
						have = copy(buf, buf[end+4:have])
					}
				}
			}()
		}
	}()
	e, ln, ca := benchEdge(b, "http://"+up.Addr().String(), slog.New(slog.NewJSONHandler(io.Discard, nil)))

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "app.localhost"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /nostore HTTP/1.1\r\nHost: app.localhost\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 16<<10)
	roundTrip := func() error {
		if _, err := c.Write(req); err != nil {
			return err
		}
		have := 0
		for {
			n, err := c.Read(buf[have:])
			if err != nil {
				return err
			}
			have += n
			end := bytes.Index(buf[:have], []byte("\r\n\r\n"))
			if end < 0 {
				continue
			}
			i := bytes.Index(buf[:end], []byte("\r\nContent-Length: "))
			if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) || i < 0 {
				return fmt.Errorf("answer: %q", buf[:have])
			}
			j := i + len("\r\nContent-Length: ")
			k := bytes.IndexByte(buf[j:end+2], '\r')
			length, err := strconv.Atoi(string(buf[j : j+k]))
			if err != nil {
				return err
			}
			for have < end+4+length {
				n, err := c.Read(buf[have:])
				if err != nil {
					return err
				}
				have += n
			}
			return nil
		}
	}
	for range 100 { // the connections up and the pools filled
		if err := roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n := e.lane.Load().answered.Load(); n < int64(b.N) {
		b.Fatalf("the lane answered %d of %d requests: the rest went to net/http", n, b.N)
	}
}
