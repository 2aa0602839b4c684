package cache

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchWriter is a ResponseWriter that costs nothing, so that the numbers
// are the cache's own.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

func benchRequest(path string, hdr ...string) *http.Request {
	r := &http.Request{Method: "GET", Host: "example.com", URL: &url.URL{Path: path}, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return r.WithContext(context.Background())
}

var page = []byte("<!doctype html><title>hello</title><p>" + string(make([]byte, 1024)))

func pageApp(extra ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		h.Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		h.Set("Etag", `"5f3a-1"`)
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		w.Write(page)
	}
}

// BenchmarkHit: parallel hits on one hot URL (the flood the cache is for).
// "reused header" clears one header map per request: the cache's own cost.
// "fresh header" makes a new map per request as net/http does, so it adds
// the map growth that copying the stored fields into it costs.
func BenchmarkHit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		app   http.HandlerFunc
		req   []string
		fresh bool
	}{
		{"reused header", pageApp(), nil, false},
		{"fresh header", pageApp(), nil, true},
		{"Vary Accept-Encoding", pageApp("Vary", "Accept-Encoding"), []string{"Accept-Encoding", "gzip, br"}, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := New(0).Handler("app", Config{TTL: time.Hour}, bc.app)
			h.ServeHTTP(&benchWriter{h: http.Header{}}, benchRequest("/hot", bc.req...))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := benchRequest("/hot", bc.req...)
				w := &benchWriter{h: http.Header{}}
				for pb.Next() {
					if bc.fresh {
						w.h = make(http.Header)
					} else {
						clear(w.h)
					}
					h.ServeHTTP(w, r)
					if w.code != 200 {
						b.Fatal("not a hit")
					}
				}
			})
		})
	}
}

// BenchmarkPass: the cost the cache adds to traffic it cannot store (a URL
// marked hit-for-pass): "through cache" minus "app alone".
func BenchmarkPass(b *testing.B) {
	app := pageApp("Cache-Control", "no-store")
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"app alone", app},
		{"through cache", New(0).Handler("app", Config{TTL: time.Hour}, app)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.h.ServeHTTP(&benchWriter{h: http.Header{}}, benchRequest("/live"))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := benchRequest("/live")
				w := &benchWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					bc.h.ServeHTTP(w, r)
				}
			})
		})
	}
}

// BenchmarkMiss: every request a new key: lead, copy, store, evict.
func BenchmarkMiss(b *testing.B) {
	h := New(8<<20).Handler("app", Config{TTL: time.Hour}, pageApp())
	r := benchRequest("/")
	w := &benchWriter{h: http.Header{}}
	paths := make([]string, 1<<16)
	for i := range paths {
		paths[i] = "/k/" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r.URL.Path = paths[i%len(paths)] + "/" + strconv.Itoa(i/len(paths))
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

// BenchmarkMissCoalesced: bursts of 64 concurrent requests per cold key,
// from 32 goroutines per core, against an app that takes 200µs. Reports
// how many requests reached the app per request served.
func BenchmarkMissCoalesced(b *testing.B) {
	var calls atomic.Int64
	app := pageApp()
	h := New(0).Handler("app", Config{TTL: time.Hour}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(200 * time.Microsecond)
		app(w, r)
	}))
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := benchRequest("/")
		w := &benchWriter{h: http.Header{}}
		for pb.Next() {
			r.URL.Path = "/burst/" + strconv.FormatInt(seq.Add(1)/64, 10)
			clear(w.h)
			h.ServeHTTP(w, r)
			if w.n == 0 {
				b.Error("no body")
			}
		}
	})
	b.ReportMetric(float64(calls.Load())/float64(b.N), "upstream/op")
}

var _ io.Writer = (*benchWriter)(nil)
