package cache

import (
	"hash/maphash"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, ": ")
		h.Add(k, v)
	}
	return h
}

func TestFreshness(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	const ttl = 3 * time.Second
	cases := []struct {
		code int
		h    http.Header
		want time.Duration
		why  string // a word the reason must contain
	}{
		{200, hdr(), ttl, ""},
		{404, hdr("Cache-Control: public"), ttl, ""},
		{301, hdr("Location: /x"), ttl, ""},
		{204, hdr(), ttl, ""},
		{200, hdr("Cache-Control: max-age=1"), time.Second, ""},
		{200, hdr("Cache-Control: MAX-AGE = 1"), time.Second, ""}, // lenient: the shorter reading wins
		{200, hdr("Cache-Control: max-age=\"2\""), 2 * time.Second, ""},
		{200, hdr("Cache-Control: max-age=9, max-age=1"), time.Second, ""},
		{200, hdr("Cache-Control: max-age=99999999999999"), ttl, ""},
		{200, hdr("Cache-Control: max-age=10", "Age: 9"), time.Second, ""},
		{200, hdr("Cache-Control: s-maxage=2, max-age=0"), 2 * time.Second, ""},
		{200, hdr("Expires: " + at(time.Second)), time.Second, ""},
		{200, hdr("Expires: "+at(time.Hour), "Date: "+at(59*time.Minute)), ttl, ""},
		{200, hdr("Expires: "+at(time.Hour), "Cache-Control: max-age=1"), time.Second, ""},
		{200, hdr("Pragma: no-cache", "Cache-Control: max-age=60"), ttl, ""}, // Cache-Control wins
		{500, hdr(), 0, "500"},
		{206, hdr(), 0, "206"},
		{304, hdr(), 0, "304"},
		{200, hdr("Set-Cookie: a=b"), 0, "cookie"},
		{200, hdr("Vary: Accept-Encoding, *"), 0, "Vary"},
		{200, hdr("Cache-Control: public, max-age=60, Private"), 0, "private"},
		{200, hdr("Cache-Control: no-store"), 0, "no-store"},
		{200, hdr("Cache-Control: no-cache"), 0, "no-cache"},
		{200, hdr("Cache-Control: max-age=x"), 0, "stale"},
		{200, hdr("Cache-Control: max-age=3", "Age: 3"), 0, "stale"},
		{200, hdr("Expires: -1"), 0, "Expires"},
		{200, hdr("Expires: " + at(-time.Second)), 0, "stale"},
		{200, hdr("Pragma: no-cache"), 0, "Pragma"},
		{200, hdr("Trailer: X-Sum"), 0, "trailers"},
	}
	for _, tc := range cases {
		got, why := freshness(tc.code, tc.h, ttl, now)
		if got != tc.want || (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
			t.Errorf("%d %v: %v %q, want %v and a reason with %q", tc.code, tc.h, got, why, tc.want, tc.why)
		}
	}
}

func TestEtagListMatch(t *testing.T) {
	cases := []struct {
		list []string
		etag string
		want bool
	}{
		{[]string{`"a"`}, `"a"`, true},
		{[]string{`W/"a"`}, `"a"`, true},
		{[]string{`"a"`}, `W/"a"`, true},
		{[]string{`"x", "a"`}, `"a"`, true},
		{[]string{`"x"`, `"a"`}, `"a"`, true},
		{[]string{`"a,b"`}, `"a,b"`, true},
		{[]string{`"a,b"`}, `"a"`, false},
		{[]string{`*`}, `"a"`, true},
		{[]string{`"b"`}, `"a"`, false},
		{[]string{`a`}, `"a"`, false},
		{[]string{`"a`}, `"a"`, false},
	}
	for _, tc := range cases {
		if got := etagListMatch(tc.list, tc.etag); got != tc.want {
			t.Errorf("%q against %s: %v", tc.list, tc.etag, got)
		}
	}
}

func TestStoredHeaderDropsHopByHop(t *testing.T) {
	h := hdr("Connection: X-Conn, close", "X-Conn: 1", "Keep-Alive: timeout=5", "Transfer-Encoding: chunked",
		"Age: 7", "Content-Type: text/plain", "X-App: a", "X-App: b", "Upgrade: h2c")
	got := storedHeader(h)
	want := hdr("Content-Type: text/plain", "X-App: a", "X-App: b")
	if len(got) != len(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	for k, v := range want {
		if strings.Join(got[k], ",") != strings.Join(v, ",") || cap(got[k]) != len(got[k]) {
			t.Errorf("%s: %q (cap %d)", k, got[k], cap(got[k]))
		}
	}
	h["X-App"][0] = "changed"
	if got["X-App"][0] != "a" {
		t.Errorf("stored header shares the app's slices")
	}
}

// Keys that collide in their hash still get their own entries.
func TestHashCollisionChains(t *testing.T) {
	var s shard
	s.nodes = map[uint64]*node{}
	a := reqKey{"app", "http", "h", "/a", ""}
	b := reqKey{"app", "http", "h", "/b", ""}
	na := s.create(42, &a)
	nb := s.create(42, &b)
	if s.find(42, &a) != na || s.find(42, &b) != nb {
		t.Fatal("colliding keys not told apart")
	}
	s.dropIfEmpty(nb)
	if s.find(42, &a) != na || s.find(42, &b) != nil {
		t.Fatal("dropping the chain head lost its neighbour")
	}
	s.dropIfEmpty(na)
	if len(s.nodes) != 0 {
		t.Fatal("empty nodes kept")
	}
}

func TestKeyEqual(t *testing.T) {
	k := reqKey{"app", "https", "example.com", "/p", "q=1"}
	if !k.equal(k.String()) {
		t.Fatal("a key does not equal its string")
	}
	for _, other := range []reqKey{
		{"ap", "https", "example.com", "/p", "q=1"},
		{"app", "http", "example.com", "/p", "q=1"},
		{"app", "https", "example.co", "m/p", "q=1"},
		{"app", "https", "example.com", "/p", "q=12"},
		{"app", "https", "example.com", "/pq=1", ""},
	} {
		if k.equal(other.String()) {
			t.Errorf("%q equals %q", k.String(), other.String())
		}
	}
	seed := maphash.MakeSeed()
	r := httptest.NewRequest("GET", "http://Example.COM/p?q=1", nil)
	k1 := makeKey("app", r)
	if k1.host != "example.com" || k1.hash(seed) != (&reqKey{"app", "http", "example.com", "/p", "q=1"}).hash(seed) {
		t.Errorf("key %+v", k1)
	}
}

func TestScopeWithNULRefused(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "NUL") {
			t.Errorf("panic %v", r)
		}
	}()
	New(0).Handler("a\x00b", Config{TTL: time.Second}, http.NotFoundHandler())
}
