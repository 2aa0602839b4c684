// Command origin is the upstream every proxy in the benchmark sits in front
// of: a small HTTP server on loopback with one cacheable and one uncacheable
// URL of about 1 KB each, and a counter of the requests that reached it, so
// that the benchmark can check that a proxy really caches.
//
// It is not part of moat; it lives in the module only so that `go build`
// makes it with the same toolchain.
//
//	/hot      ~1 KB, Cache-Control: public, max-age=60 (the cache-hit scenario)
//	/nostore  ~1 KB, Cache-Control: no-store           (the bypass scenario)
//	/count    how many requests reached /hot and /nostore, as "hot N nostore M"
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// bodySize is the size of each answer: a small HTML page.
const bodySize = 1024

func main() {
	addr := flag.String("addr", "127.0.0.1:18400", "where to listen; loopback only")
	flag.Parse()

	// The benchmark never leaves the machine: refuse anything but loopback.
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().IsLoopback() {
		log.Fatalf("origin: -addr %q: give a loopback address and port, like 127.0.0.1:18400", *addr)
	}

	body := makeBody(bodySize)
	length := strconv.Itoa(len(body))
	var hot, nostore atomic.Int64

	serve := func(counter *atomic.Int64, cacheControl string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			counter.Add(1)
			h := w.Header()
			h["Content-Type"] = []string{"text/html; charset=utf-8"}
			h["Content-Length"] = []string{length}
			h["Cache-Control"] = []string{cacheControl}
			// A Server header that a proxy should drop or override: the
			// check of security headers does not look at it, but it shows
			// who leaks what.
			h["Server"] = []string{"bench-origin/1"}
			if r.Method == http.MethodHead {
				return
			}
			w.Write(body)
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/hot", serve(&hot, "public, max-age=60"))
	mux.HandleFunc("/nostore", serve(&nostore, "no-store"))
	mux.HandleFunc("/count", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hot %d nostore %d\n", hot.Load(), nostore.Load())
	})

	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		log.Fatalf("origin: %v", err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Printf("origin listening on http://%s", ln.Addr())
	log.Fatal(srv.Serve(ln))
}

// makeBody returns an HTML page of exactly n bytes.
func makeBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString("<!doctype html>\n<html><head><title>bench origin</title></head><body>\n<p>")
	const filler = "The quick brown fox jumps over the lazy dog. "
	tail := "</p>\n</body></html>\n"
	for b.Len()+len(tail) < n {
		b.WriteString(filler)
	}
	b.Truncate(n - len(tail))
	b.WriteString(tail)
	return b.Bytes()
}
