// Command gotls is the benchmark's yardstick, not a proxy: Go's net/http
// over TLS answering /hot and /nostore from memory, with the same body and
// the same security headers as the proxies send. On one core it shows the
// most any Go server (moat, Caddy) can do with the standard library's TLS
// and HTTP/1.1 before it does any work of its own.
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18448", "where to listen; loopback only")
	cert := flag.String("cert", "", "PEM certificate chain")
	key := flag.String("key", "", "PEM private key")
	flag.Parse()

	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().IsLoopback() {
		log.Fatalf("gotls: -addr %q: give a loopback address and port, like 127.0.0.1:18448", *addr)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatalf("gotls: %v", err)
	}

	body := bytes.Repeat([]byte("x"), 1024)
	length := []string{strconv.Itoa(len(body))}
	headers := map[string][]string{
		"Strict-Transport-Security":         {"max-age=31536000"},
		"X-Content-Type-Options":            {"nosniff"},
		"X-Frame-Options":                   {"SAMEORIGIN"},
		"Referrer-Policy":                   {"same-origin"},
		"X-Permitted-Cross-Domain-Policies": {"none"},
		"X-Download-Options":                {"noopen"},
		"Content-Type":                      {"text/html; charset=utf-8"},
	}
	handler := func(cacheControl string) http.HandlerFunc {
		cc := []string{cacheControl}
		return func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			for k, v := range headers {
				h[k] = v
			}
			h["Cache-Control"] = cc
			h["Content-Length"] = length
			if r.Method != http.MethodHead {
				w.Write(body)
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hot", handler("public, max-age=60"))
	mux.HandleFunc("/nostore", handler("no-store"))

	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		log.Fatalf("gotls: %v", err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}},
	}
	log.Printf("gotls listening on https://%s", ln.Addr())
	log.Fatal(srv.ServeTLS(ln, "", ""))
}
