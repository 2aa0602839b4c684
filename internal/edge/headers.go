package edge

import (
	"maps"
	"net/http"
	"slices"
)

// DefaultHeaders are the security headers every response gets unless the
// app sets the header itself or its config overrides it.
func DefaultHeaders() map[string]string {
	return map[string]string{
		"Strict-Transport-Security":         "max-age=31536000",
		"X-Content-Type-Options":            "nosniff",
		"X-Frame-Options":                   "SAMEORIGIN",
		"Referrer-Policy":                   "same-origin",
		"X-Permitted-Cross-Domain-Policies": "none",
		"X-Download-Options":                "noopen",
	}
}

// leaky are response headers that tell an attacker which software and
// version runs behind the edge, in canonical form (X-AspNet-Version is
// keyed X-Aspnet-Version).
var leaky = [...]string{"Server", "X-Powered-By", "X-Aspnet-Version", "X-Aspnetmvc-Version"}

// headerSet is the security headers of one app, ready to apply.
type headerSet struct {
	keys []string   // canonical, sorted
	vals [][]string // one value each, shared by every response: capacity 1, so an append copies
}

// newHeaderSet merges the defaults with an app's overrides: a value
// replaces the default, an empty value removes the header.
func newHeaderSet(overrides map[string]string) headerSet {
	m := DefaultHeaders()
	for k, v := range overrides {
		k = http.CanonicalHeaderKey(k)
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	var hs headerSet
	hs.keys = slices.Sorted(maps.Keys(m))
	for _, k := range hs.keys {
		hs.vals = append(hs.vals, []string{m[k]}[:1:1])
	}
	return hs
}

// apply adds each header the response does not already have, and drops
// the ones that leak versions.
func (hs headerSet) apply(h http.Header) {
	for i, k := range hs.keys {
		if _, set := h[k]; !set {
			h[k] = hs.vals[i]
		}
	}
	for _, k := range leaky {
		delete(h, k)
	}
}
