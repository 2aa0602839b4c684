package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A flood of one cold URL reaches the app once; everyone gets the page.
func TestColdFloodCoalesces(t *testing.T) {
	clk := newClock()
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond) // so that the flood arrives during the fetch
		io.WriteString(w, "page")
	})
	u, cl := stack(t, New(0), Config{TTL: DefaultTTL, Now: clk.Now}, o)

	const n = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	replies := make([]reply, n)
	for i := range n {
		wg.Go(func() {
			<-start
			replies[i] = get(t, cl, u+"/hot?x=1")
		})
	}
	close(start)
	wg.Wait()

	if got := o.count(); got != 1 {
		t.Errorf("upstream saw %d requests, want 1", got)
	}
	statuses := map[string]int{}
	for i, r := range replies {
		if r.code != 200 || r.body != "page" {
			t.Fatalf("reply %d: %d %q, want 200 \"page\"", i, r.code, r.body)
		}
		statuses[r.xcache()]++
	}
	if statuses[Miss] != 1 || statuses[Hit] != n-1 {
		t.Errorf("X-Cache counts %v, want 1 MISS and %d HIT", statuses, n-1)
	}
}

// Within TTL repeats are hits with a growing Age; after it, one refresh.
func TestHitsThenOneRefreshAfterTTL(t *testing.T) {
	clk := newClock()
	o := newOrigin(text("v"))
	u, cl := stack(t, New(0), Config{TTL: 3 * time.Second, Now: clk.Now}, o)

	steps := []struct {
		advance  time.Duration
		xcache   string
		age      string
		upstream int64
	}{
		{0, Miss, "", 1},
		{0, Hit, "0", 1},
		{1 * time.Second, Hit, "1", 1},
		{1900 * time.Millisecond, Hit, "2", 1},
		{100 * time.Millisecond, Miss, "", 2}, // 3 s after the fetch
		{0, Hit, "0", 2},
		{0, Hit, "0", 2},
	}
	for i, s := range steps {
		clk.Add(s.advance)
		r := get(t, cl, u+"/p")
		if r.xcache() != s.xcache || r.h.Get("Age") != s.age || o.count() != s.upstream || r.body != "v" {
			t.Errorf("step %d: X-Cache %q Age %q upstream %d body %q; want %q %q %d \"v\"",
				i, r.xcache(), r.h.Get("Age"), o.count(), r.body, s.xcache, s.age, s.upstream)
		}
	}
}

// An uncacheable URL is never serialised: of 200 concurrent requests to a
// cold no-store page, the first teaches the cache that the page is not
// stored, and the other 199 must then all be at the app at once. The app
// holds each of them until all 199 are there (or 10 s pass), so a cache
// that queued them behind one another is caught by the count, not a clock.
func TestNoStoreFloodIsNotSerialised(t *testing.T) {
	const n = 200
	var (
		mu       sync.Mutex
		seen     int
		waiting  int
		most     int
		release  = make(chan struct{})
		deadline = time.After(10 * time.Second)
	)
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		first := seen == 1
		if !first {
			waiting++
			most = max(most, waiting)
			if waiting == n-1 {
				close(release)
			}
		}
		mu.Unlock()
		if !first {
			select {
			case <-release:
			case <-deadline:
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "fresh")
	})
	u, cl := stack(t, New(0), Config{TTL: DefaultTTL}, o)

	var wg sync.WaitGroup
	start := make(chan struct{})
	began := time.Now()
	for range n {
		wg.Go(func() {
			<-start
			if r := get(t, cl, u+"/live"); r.body != "fresh" {
				t.Errorf("body %q", r.body)
			}
		})
	}
	close(start)
	wg.Wait()
	if most != n-1 {
		t.Errorf("at most %d requests were at the app at once, want %d: the cache queued them", most, n-1)
	}
	if got := o.count(); got != n {
		t.Errorf("upstream saw %d requests, want %d", got, n)
	}
	t.Logf("%d no-store requests: %v in total", n, time.Since(began))
}

// Each answer the cache must never store, each in its own subtest: the
// second request must reach the app again and say BYPASS (hit-for-pass).
func TestNeverStoredAnswers(t *testing.T) {
	cases := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"Set-Cookie", text("yours", "Set-Cookie: session=secret")},
		{"Cache-Control private", text("p", "Cache-Control: private, max-age=60")},
		{"Cache-Control no-store", text("p", "Cache-Control: no-store")},
		{"Cache-Control no-cache", text("p", "Cache-Control: no-cache")},
		{"Cache-Control qualified no-cache", text("p", `Cache-Control: no-cache="Set-Cookie"`)},
		{"Pragma no-cache", text("p", "Pragma: no-cache")},
		{"Vary star", text("p", "Vary: *")},
		{"max-age=0", text("p", "Cache-Control: max-age=0")},
		{"s-maxage=0", text("p", "Cache-Control: max-age=60, s-maxage=0")},
		{"Expires in the past", text("p", "Expires: Thu, 01 Jan 1970 00:00:00 GMT")},
		{"Expires invalid", text("p", "Expires: 0")},
		{"Age beyond max-age", text("p", "Cache-Control: max-age=5", "Age: 5")},
		{"Trailer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "p")
			w.Header().Set("X-Sum", "1")
		}},
	}
	for _, code := range []int{201, 202, 206, 302, 303, 307, 308, 400, 401, 403, 429, 500, 502, 503} {
		cases = append(cases, struct {
			name string
			h    http.HandlerFunc
		}{"status " + strconv.Itoa(code), func(w http.ResponseWriter, r *http.Request) {
			if code/100 == 3 {
				w.Header().Set("Location", "/elsewhere")
			}
			w.WriteHeader(code)
			io.WriteString(w, "p")
		}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newOrigin(tc.h)
			c := New(0)
			u, cl := stack(t, c, Config{TTL: time.Minute}, o)
			first := get(t, cl, u+"/x")
			second := get(t, cl, u+"/x")
			if first.xcache() != Miss || second.xcache() != Bypass {
				t.Errorf("X-Cache %q then %q, want MISS then BYPASS", first.xcache(), second.xcache())
			}
			if o.count() != 2 {
				t.Errorf("upstream saw %d requests, want 2", o.count())
			}
			if first.body != "p" && first.body != "yours" {
				t.Errorf("first body %q", first.body)
			}
			if st := c.Stats(); st.Entries != 1 { // the hit-for-pass marker alone
				t.Errorf("%d entries stored, want only the hit-for-pass marker", st.Entries)
			}
		})
	}
}

// Requests that must not use the cache go upstream and leave no trace in
// it: the page stored for plain requests stays, and theirs is not stored.
func TestNeverCachedRequests(t *testing.T) {
	cases := []struct {
		name   string
		method string
		hdr    []string
		body   string
	}{
		{"Authorization", "GET", []string{"Authorization: Bearer alice"}, ""},
		{"Authorization on HEAD", "HEAD", []string{"Authorization: Basic YTpi"}, ""},
		{"Cookie", "GET", []string{"Cookie: session=alice"}, ""},
		{"POST", "POST", nil, "form=1"},
		{"PUT", "PUT", nil, "x"},
		{"DELETE", "DELETE", nil, ""},
		{"OPTIONS", "OPTIONS", nil, ""},
		{"GET with a body", "GET", nil, "query"},
		{"WebSocket upgrade", "GET", []string{"Connection: Upgrade", "Upgrade: websocket"}, ""},
		{"If-Match", "GET", []string{`If-Match: "x"`}, ""},
		{"If-Unmodified-Since", "GET", []string{"If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var o *origin
			o = newOrigin(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "#%d for %s %s", o.count(), r.Method, r.Header.Get("Authorization")+r.Header.Get("Cookie"))
			})
			u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
			get(t, cl, u+"/x") // cached for plain GETs

			req, _ := http.NewRequest(tc.method, u+"/x", nil)
			if tc.body != "" {
				req, _ = http.NewRequest(tc.method, u+"/x", strings.NewReader(tc.body))
			}
			for _, kv := range tc.hdr {
				k, v, _ := strings.Cut(kv, ": ")
				req.Header.Add(k, v)
			}
			res, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.Header.Get("X-Cache") != Bypass || o.count() != 2 {
				t.Errorf("X-Cache %q, upstream %d; want BYPASS, 2", res.Header.Get("X-Cache"), o.count())
			}
			if tc.method == "GET" && string(b) == "#1 for GET " {
				t.Errorf("answered from the shared page: %q", b)
			}
			after := get(t, cl, u+"/x")
			if (tc.method == "GET" || tc.method == "HEAD" || tc.method == "OPTIONS") &&
				(after.xcache() != Hit || after.body != "#1 for GET ") {
				t.Errorf("plain GET after it: %s %q, want the stored HIT", after.xcache(), after.body)
			}
		})
	}
}

// A personalised page never reaches another user, whatever AllowCookies.
func TestCookiePageNotServedToOtherUser(t *testing.T) {
	personal := func(extra ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for _, kv := range extra {
				k, v, _ := strings.Cut(kv, ": ")
				w.Header().Add(k, v)
			}
			user := "anonymous"
			if c, err := r.Cookie("user"); err == nil {
				user = c.Value
			} else {
				w.Header().Add("Set-Cookie", "user=new")
			}
			io.WriteString(w, "hello "+user)
		}
	}
	cases := []struct {
		name         string
		allowCookies bool
		app          http.HandlerFunc
		aliceAgain   string // X-Cache of alice's second request
	}{
		{"cookies bypass", false, personal(), Bypass},
		{"cookies allowed, Vary: Cookie", true, personal("Vary: Cookie"), Hit},
		{"cookies allowed, app sets cookies", true, func(w http.ResponseWriter, r *http.Request) {
			user := "anonymous"
			if c, err := r.Cookie("user"); err == nil {
				user = c.Value
			}
			w.Header().Add("Set-Cookie", "seen=1")
			io.WriteString(w, "hello "+user)
		}, Bypass},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(tc.app)
			u, cl := stack(t, New(0), Config{TTL: time.Minute, AllowCookies: tc.allowCookies}, o)
			alice := get(t, cl, u+"/me", "Cookie: user=alice")
			bob := get(t, cl, u+"/me", "Cookie: user=bob")
			alice2 := get(t, cl, u+"/me", "Cookie: user=alice")
			if alice.body != "hello alice" || alice2.body != "hello alice" || bob.body != "hello bob" {
				t.Errorf("alice %q, bob %q, alice again %q", alice.body, bob.body, alice2.body)
			}
			if alice2.xcache() != tc.aliceAgain {
				t.Errorf("alice's repeat: X-Cache %q, want %q", alice2.xcache(), tc.aliceAgain)
			}
			if anon := get(t, cl, u+"/me"); strings.Contains(anon.body, "alice") || strings.Contains(anon.body, "bob") {
				t.Errorf("anonymous got %q", anon.body)
			}
		})
	}
}

// A body over MaxBody streams through without being held: the client gets
// every byte, sees the first ones before the app has written the rest, the
// cache stays small, and the key is passed through afterwards.
func TestLargeBodyStreamsThrough(t *testing.T) {
	const size = 10 << 20
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	want := sha256.New()
	for i := 0; i < size/len(chunk); i++ {
		want.Write(chunk)
	}
	proceed := make(chan struct{}, 2)
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < size/len(chunk); i++ {
			w.Write(chunk)
			if i == 2<<20/len(chunk) { // 2 MiB out: wait until the client has them
				w.(http.Flusher).Flush()
				select {
				case <-proceed:
				case <-time.After(10 * time.Second):
					panic("the client never saw the first 2 MiB: the body is being held")
				}
			}
		}
	})
	c := New(0)
	u, cl := stack(t, c, Config{TTL: time.Minute, MaxBody: 1 << 20}, o)
	prefix := bytes.Repeat(chunk, 2<<20/len(chunk))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, wantX := range []string{Miss, Bypass} {
		res, err := cl.Get(u + "/big")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, res.Body, 2<<20); err != nil {
			t.Fatalf("reading the first 2 MiB: %v", err)
		}
		proceed <- struct{}{}
		h := sha256.New()
		h.Write(prefix)
		n, err := io.Copy(h, res.Body)
		res.Body.Close()
		if err != nil || n+2<<20 != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			t.Fatalf("got %d bytes (%v), want %d intact", n+2<<20, err, size)
		}
		if x := res.Header.Get("X-Cache"); x != wantX {
			t.Errorf("X-Cache %q, want %q", x, wantX)
		}
	}
	runtime.ReadMemStats(&after)
	if st := c.Stats(); st.Bytes > 4096 {
		t.Errorf("cache holds %d bytes after a 10 MiB answer, want only a pass marker", st.Bytes)
	}
	// 20 MiB went through; buffering it would allocate at least that.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("streaming 2×10 MiB allocated %d MiB", alloc>>20)
	}
	if o.count() != 2 {
		t.Errorf("upstream saw %d requests, want 2", o.count())
	}
}

// Vary: Accept-Encoding keeps one variant per value.
func TestVaryKeepsVariants(t *testing.T) {
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Encoding")
		io.WriteString(w, "encoded as "+r.Header.Get("Accept-Encoding"))
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
	steps := []struct {
		ae, xcache string
	}{
		{"gzip", Miss}, {"identity", Miss}, {"gzip", Hit}, {"identity", Hit}, {"br", Miss}, {"gzip", Hit},
	}
	for i, s := range steps {
		r := get(t, cl, u+"/v", "Accept-Encoding: "+s.ae)
		if r.body != "encoded as "+s.ae || r.xcache() != s.xcache {
			t.Errorf("step %d (%s): %q %s, want %q %s", i, s.ae, r.body, r.xcache(), "encoded as "+s.ae, s.xcache)
		}
	}
	if o.count() != 3 {
		t.Errorf("upstream saw %d requests, want 3", o.count())
	}
}

// Concurrent misses that turn out to want different variants each get
// their own; none is served another's.
func TestVaryDiscoveredDuringFlight(t *testing.T) {
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		w.Header().Set("Vary", "Accept-Language")
		io.WriteString(w, "lang "+r.Header.Get("Accept-Language"))
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
	var wg sync.WaitGroup
	for i := range 60 {
		lang := []string{"en", "de", "fr"}[i%3]
		wg.Go(func() {
			if r := get(t, cl, u+"/l", "Accept-Language: "+lang); r.body != "lang "+lang {
				t.Errorf("%s got %q", lang, r.body)
			}
		})
	}
	wg.Wait()
	if n := o.count(); n > 6 {
		t.Errorf("upstream saw %d requests for 3 variants", n)
	}
}

// HEAD is answered from a stored GET: same status and header, no body.
// A HEAD miss fetches (and stores) the GET, so a HEAD flood is absorbed too.
func TestHead(t *testing.T) {
	o := newOrigin(text("<p>page</p>", "Content-Type: text/html", "X-App: 1", `Etag: "v1"`))
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)

	head := do(t, cl, "HEAD", u+"/h")
	if head.body != "" || head.xcache() != Miss || o.last().Method != "GET" {
		t.Errorf("cold HEAD: body %q X-Cache %s, upstream method %s; want no body, MISS, GET", head.body, head.xcache(), o.last().Method)
	}
	got := get(t, cl, u+"/h")
	if got.body != "<p>page</p>" || got.xcache() != Hit || o.count() != 1 {
		t.Errorf("GET after HEAD: %q %s upstream %d", got.body, got.xcache(), o.count())
	}
	head = do(t, cl, "HEAD", u+"/h")
	if head.body != "" || head.xcache() != Hit || o.count() != 1 {
		t.Errorf("HEAD after GET: body %q %s upstream %d", head.body, head.xcache(), o.count())
	}
	for _, k := range []string{"Content-Type", "Content-Length", "X-App", "Etag", "Age"} {
		if head.h.Get(k) != got.h.Get(k) || head.h.Get(k) == "" {
			t.Errorf("%s: HEAD %q, GET %q", k, head.h.Get(k), got.h.Get(k))
		}
	}
}

// A slow fetch of one key holds up no other key.
func TestSlowKeyDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, r.URL.Path)
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute, Wait: time.Minute}, o)
	var wg sync.WaitGroup
	for range 10 { // a leader and its followers, all stuck
		wg.Go(func() { get(t, cl, u+"/slow") })
	}
	waitFor(t, "/slow reached the app", func() bool { return o.count() == 1 })
	began := time.Now()
	for i := range 20 {
		if r := get(t, cl, fmt.Sprintf("%s/fast%d", u, i%4)); r.body != fmt.Sprintf("/fast%d", i%4) {
			t.Errorf("fast: %q", r.body)
		}
	}
	if took := time.Since(began); took > 5*time.Second { // stuck, they would wait for ever
		t.Errorf("20 requests for other keys took %v while /slow was stuck", took)
	}
	close(release)
	wg.Wait()
	if o.count() != 5 {
		t.Errorf("upstream saw %d requests, want 1 /slow + 4 /fast", o.count())
	}
}

// Eviction keeps the stored bytes under the bound, and an entry in use
// survives a stream of one-off ones.
func TestEvictionKeepsBound(t *testing.T) {
	const max = 64 << 10
	c := New(max)
	body := strings.Repeat("x", 4<<10)
	o := newOrigin(text(body))
	h := c.Handler("app", Config{TTL: time.Hour}, o)
	fetch := func(path string) string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		return w.Header().Get("X-Cache")
	}
	fetch("/hot")
	for i := range 500 {
		fetch(fmt.Sprintf("/cold/%d", i))
		if x := fetch("/hot"); x != Hit {
			t.Fatalf("after %d cold pages the hot one was evicted (X-Cache %s)", i+1, x)
		}
		if st := c.Stats(); st.Bytes > max {
			t.Fatalf("after %d pages: %d bytes stored, bound %d", i+1, st.Bytes, max)
		}
	}
	st := c.Stats()
	if st.Evictions < 400 || st.Entries < 5 {
		t.Errorf("stats %+v: want many evictions and a full cache", st)
	}
	if fetch("/cold/0") != Miss {
		t.Errorf("the oldest cold page is still stored")
	}
}

// The answer's own freshness caps the TTL: the cache never serves an answer
// longer than its origin allows.
func TestOriginFreshnessCapsTTL(t *testing.T) {
	clk := newClock()
	future := func(d time.Duration) string { return clk.Now().Add(d).Format(http.TimeFormat) }
	cases := []struct {
		name   string
		hdr    []string
		fresh  time.Duration // still a hit just before this
		within time.Duration
	}{
		{"max-age=1", []string{"Cache-Control: max-age=1"}, time.Second, 0},
		{"s-maxage over max-age", []string{"Cache-Control: max-age=100, s-maxage=1"}, time.Second, 0},
		{"max-age with Age", []string{"Cache-Control: max-age=2", "Age: 1"}, time.Second, 0},
		{"Expires", []string{"Expires: " + future(time.Second), "Date: " + clk.Now().Format(http.TimeFormat)}, time.Second, 0},
		{"max-age above TTL", []string{"Cache-Control: public, max-age=600"}, 3 * time.Second, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: clk.Now()}
			o := newOrigin(text("x", tc.hdr...))
			h := New(0).Handler("app", Config{TTL: 3 * time.Second, Now: clk.Now}, o)
			fetch := func() string {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", "/f", nil))
				return w.Header().Get("X-Cache")
			}
			fetch()
			clk.Add(tc.fresh - time.Millisecond)
			if x := fetch(); x != Hit {
				t.Errorf("just before %v: %s, want HIT", tc.fresh, x)
			}
			clk.Add(time.Millisecond)
			if x := fetch(); x != Miss {
				t.Errorf("at %v: %s, want MISS", tc.fresh, x)
			}
		})
	}
}

// POST and other unsafe methods pass through untouched, are never stored,
// and drop what was stored for their URL.
func TestPostPassesThroughAndInvalidates(t *testing.T) {
	version := 1
	var mu sync.Mutex
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == "POST" {
			version++
		}
		fmt.Fprintf(w, "%s v%d", r.Method, version)
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
	steps := []struct{ method, body, xcache string }{
		{"GET", "GET v1", Miss},
		{"GET", "GET v1", Hit},
		{"POST", "POST v2", Bypass},
		{"POST", "POST v3", Bypass},
		{"GET", "GET v3", Miss},
		{"GET", "GET v3", Hit},
	}
	for i, s := range steps {
		r := do(t, cl, s.method, u+"/c")
		if r.body != s.body || r.xcache() != s.xcache {
			t.Errorf("step %d %s: %q %s, want %q %s", i, s.method, r.body, r.xcache(), s.body, s.xcache)
		}
	}
	if o.count() != 4 {
		t.Errorf("upstream saw %d, want 4", o.count())
	}
}

// Waiters give up on a slow leader after Wait and go upstream themselves.
func TestWaitIsBounded(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Lead") != "" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute, Wait: 100 * time.Millisecond}, o)
	done := make(chan reply)
	go func() { done <- get(t, cl, u+"/w", "X-Lead: 1") }()
	waitFor(t, "the leader reached the app", func() bool { return o.count() == 1 })
	began := time.Now()
	r := get(t, cl, u+"/w")
	if took := time.Since(began); r.xcache() != Bypass || took > 5*time.Second || took < 90*time.Millisecond {
		t.Errorf("waiter: X-Cache %s after %v, want BYPASS after ~100ms", r.xcache(), took)
	}
	close(release)
	if r := <-done; r.xcache() != Miss {
		t.Errorf("leader: %s", r.xcache())
	}
}

// A leader that dies (the app panics, the client leaves) releases its
// waiters at once; one of them fetches again and the rest get its answer.
func TestLeaderFailureReleasesWaiters(t *testing.T) {
	var calls sync.Mutex
	n := 0
	gate := make(chan struct{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Lock()
		n++
		first := n == 1
		calls.Unlock()
		if first {
			<-gate
			panic("app bug")
		}
		io.WriteString(w, "second try")
	})
	h := New(0).Handler("app", Config{TTL: time.Minute}, next)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() {
			if recover() == nil {
				t.Error("the leader's panic was swallowed")
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/p", nil))
	})
	waitFor(t, "the leader reached the app", func() bool { calls.Lock(); defer calls.Unlock(); return n == 1 })
	recs := make([]*httptest.ResponseRecorder, 20)
	for i := range recs {
		recs[i] = httptest.NewRecorder()
		wg.Go(func() { h.ServeHTTP(recs[i], httptest.NewRequest("GET", "/p", nil)) })
	}
	time.Sleep(20 * time.Millisecond)
	close(gate)
	wg.Wait()
	for i, r := range recs {
		if r.Body.String() != "second try" {
			t.Errorf("waiter %d: %q", i, r.Body.String())
		}
	}
	if n != 2 {
		t.Errorf("app called %d times, want 2", n)
	}
}

// Conditional requests: a hit answers 304 when the validator matches; a
// cold conditional request fetches and stores the full page.
func TestConditional(t *testing.T) {
	lm := "Mon, 02 Jan 2006 15:04:05 GMT"
	o := newOrigin(text("full", `Etag: "v1"`, "Last-Modified: "+lm))
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)

	cold := get(t, cl, u+"/c", `If-None-Match: "v1"`)
	if cold.code != 200 || cold.body != "full" || o.last().Header.Get("If-None-Match") != "" {
		t.Errorf("cold conditional: %d %q, upstream If-None-Match %q", cold.code, cold.body, o.last().Header.Get("If-None-Match"))
	}
	cases := []struct {
		hdr  string
		code int
	}{
		{`If-None-Match: "v1"`, 304},
		{`If-None-Match: W/"v1"`, 304},
		{`If-None-Match: "v0", "v1"`, 304},
		{`If-None-Match: *`, 304},
		{`If-None-Match: "v2"`, 200},
		{"If-Modified-Since: " + lm, 304},
		{"If-Modified-Since: Mon, 02 Jan 2006 15:04:04 GMT", 200},
	}
	for _, tc := range cases {
		r := get(t, cl, u+"/c", tc.hdr)
		if r.code != tc.code || r.xcache() != Hit {
			t.Errorf("%s: %d %s, want %d HIT", tc.hdr, r.code, r.xcache(), tc.code)
		}
		if tc.code == 304 && (r.body != "" || r.h.Get("Etag") != `"v1"`) {
			t.Errorf("%s: 304 with body %q, ETag %q", tc.hdr, r.body, r.h.Get("Etag"))
		}
	}
	if o.count() != 1 {
		t.Errorf("upstream saw %d, want 1", o.count())
	}
}

// Range: a stored page is served whole (RFC 9110 lets a server ignore
// Range); an uncached one is fetched as asked and spoils nothing.
func TestRange(t *testing.T) {
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "f.txt", time.Time{}, strings.NewReader("0123456789"))
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
	r := get(t, cl, u+"/r", "Range: bytes=0-3")
	if r.code != 206 || r.body != "0123" || r.xcache() != Bypass {
		t.Errorf("cold range: %d %q %s", r.code, r.body, r.xcache())
	}
	if r := get(t, cl, u+"/r"); r.xcache() != Miss {
		t.Errorf("GET after a range: %s, want MISS (the range left no hit-for-pass)", r.xcache())
	}
	if r := get(t, cl, u+"/r", "Range: bytes=0-3"); r.code != 200 || r.body != "0123456789" || r.xcache() != Hit {
		t.Errorf("range of a stored page: %d %q %s", r.code, r.body, r.xcache())
	}
}

// Flush keeps working: for the request that fetches (and streams) and for
// a bypassed one (w passed through untouched).
func TestStreamingFlushes(t *testing.T) {
	proceed := make(chan struct{})
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-proceed
		io.WriteString(w, "data: two\n\n")
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
	for i := range 2 { // a streamed page with no Cache-Control: the fetch streams
		res, err := cl.Get(u + "/events" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(res.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "data: one\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
		proceed <- struct{}{}
		rest, _ := io.ReadAll(br)
		res.Body.Close()
		if string(rest) != "\ndata: two\n\n" {
			t.Errorf("rest %q", rest)
		}
	}
	// …and one that says no-store is bypassed the second time.
	o.handle = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-proceed
		io.WriteString(w, "data: two\n\n")
	}
	for _, wantX := range []string{Miss, Bypass} {
		res, err := cl.Get(u + "/nostore")
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(res.Body).ReadString('\n')
		if err != nil || line != "data: one\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
		proceed <- struct{}{}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if x := res.Header.Get("X-Cache"); x != wantX {
			t.Errorf("X-Cache %s, want %s", x, wantX)
		}
	}
}

// The edge's access log learns the status; X-Cache can be switched off;
// TTL 0 is no cache at all.
func TestStatusReporting(t *testing.T) {
	c := New(0)
	app := text("x")
	serve := func(h http.Handler, method string) *statusRecorder {
		w := &statusRecorder{ResponseRecorder: httptest.NewRecorder()}
		h.ServeHTTP(w, httptest.NewRequest(method, "/s", nil))
		return w
	}
	h := c.Handler("a", Config{TTL: time.Minute}, app)
	for _, s := range []struct{ method, want string }{{"GET", Miss}, {"GET", Hit}, {"POST", Bypass}} {
		if w := serve(h, s.method); w.status != s.want || w.Header().Get("X-Cache") != s.want {
			t.Errorf("%s: SetCacheStatus %q, X-Cache %q; want %s", s.method, w.status, w.Header().Get("X-Cache"), s.want)
		}
	}
	hidden := c.Handler("b", Config{TTL: time.Minute, HideXCache: true}, app)
	for _, want := range []string{Miss, Hit} {
		if w := serve(hidden, "GET"); w.status != want || w.Header()["X-Cache"] != nil {
			t.Errorf("hidden: status %q, X-Cache %q", w.status, w.Header()["X-Cache"])
		}
	}
	if off := c.Handler("c", Config{}, app); fmt.Sprintf("%p", off) != fmt.Sprintf("%p", app) {
		t.Errorf("TTL 0 wraps the app")
	}
}

// Scopes (apps), hosts and schemes do not share entries.
func TestKeySeparation(t *testing.T) {
	c := New(0)
	mk := func(scope string) http.Handler {
		return c.Handler(scope, Config{TTL: time.Minute}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %v %s", scope, r.Host, r.TLS != nil, r.URL.RequestURI())
		}))
	}
	a, b := mk("a"), mk("b")
	reqs := []struct {
		h      http.Handler
		target string
	}{
		{a, "http://one.example/p?q=1"},
		{b, "http://one.example/p?q=1"},
		{a, "http://two.example/p?q=1"},
		{a, "https://one.example/p?q=1"},
		{a, "http://one.example/p?q=2"},
		{a, "http://one.example/p%2Fx"},
		{a, "http://one.example/p/x"},
		{a, "http://one.example/p%252Fx"},
	}
	bodies := map[string]int{}
	for round := range 2 {
		for i, rq := range reqs {
			w := httptest.NewRecorder()
			rq.h.ServeHTTP(w, httptest.NewRequest("GET", rq.target, nil))
			want := []string{Miss, Hit}[round]
			if w.Header().Get("X-Cache") != want {
				t.Errorf("round %d request %d: %s, want %s", round, i, w.Header().Get("X-Cache"), want)
			}
			if j, ok := bodies[w.Body.String()]; round == 0 && ok || round == 1 && j != i {
				t.Errorf("round %d request %d got the answer of request %d: %q", round, i, j, w.Body.String())
			}
			bodies[w.Body.String()] = i
		}
	}
	w := httptest.NewRecorder()
	a.ServeHTTP(w, httptest.NewRequest("GET", "http://ONE.example/p?q=1", nil))
	if w.Header().Get("X-Cache") != Hit {
		t.Errorf("host case made a new entry")
	}
}

// A leader whose client leaves does not mark the key pass-through (the
// proxy's 502 is about that client): the next request fetches again.
func TestCancelledLeaderDoesNotPassKey(t *testing.T) {
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Slow") != "" {
			select {
			case <-time.After(300 * time.Millisecond):
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/c", nil)
	req.Header.Set("X-Slow", "1")
	if res, err := cl.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("the request was not cancelled")
	}
	time.Sleep(50 * time.Millisecond) // let the proxy notice
	if r := get(t, cl, u+"/c"); r.xcache() != Miss || r.body != "ok" {
		t.Errorf("after a cancelled leader: %s %q, want a new MISS", r.xcache(), r.body)
	}
	if r := get(t, cl, u+"/c"); r.xcache() != Hit {
		t.Errorf("then: %s, want HIT", r.xcache())
	}
}
