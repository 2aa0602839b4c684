package cache

import (
	"hash/maphash"
	"net/http"
	"strings"
)

// reqKey is what identifies a cached URL: the app (scope), scheme, host,
// escaped path and raw query. It is hashed and compared piece by piece, so
// a hit builds no key string.
//
// The pieces are joined by NUL, which none of them can contain: net/http
// refuses control bytes in hosts and URLs, EscapedPath escapes them, and
// Handler refuses a scope with one.
type reqKey struct {
	scope, scheme, host, path, query string
}

func makeKey(scope string, r *http.Request) reqKey {
	k := reqKey{scope: scope, scheme: "http", host: r.Host, path: r.URL.EscapedPath(), query: r.URL.RawQuery}
	if r.TLS != nil {
		k.scheme = "https"
	}
	if hasUpper(k.host) { // host names are case-insensitive; one entry for all spellings
		k.host = strings.ToLower(k.host)
	}
	return k
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func (k *reqKey) parts() [5]string { return [5]string{k.scope, k.scheme, k.host, k.path, k.query} }

// hash mixes seeded hashes of the parts that tell URLs apart; scope and
// scheme rarely do (an app owns its hosts, HTTP redirects to HTTPS), so
// they are left to equal. A collision costs a longer chain, never a wrong
// answer, and the seed keeps clients from choosing collisions.
func (k *reqKey) hash(seed maphash.Seed) uint64 {
	const m = 0x9E3779B97F4A7C15 // odd: multiplying permutes, spreading bits up
	h := maphash.String(seed, k.path)
	h = (h^maphash.String(seed, k.query))*m + 1
	h = (h ^ maphash.String(seed, k.host)) * m
	return h ^ h>>29
}

func (k *reqKey) String() string {
	p := k.parts()
	return strings.Join(p[:], "\x00")
}

// equal reports whether s == k.String() without building it.
func (k *reqKey) equal(s string) bool {
	for i, p := range k.parts() {
		if i > 0 {
			if s == "" || s[0] != 0 {
				return false
			}
			s = s[1:]
		}
		if !strings.HasPrefix(s, p) {
			return false
		}
		s = s[len(p):]
	}
	return s == ""
}
