package cache

import (
	"errors"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds the rules: which requests may use the cache, which
// answers may be stored and for how long. Each refusal comes with its
// reason.

// requestBypass says why r must go straight upstream without consulting
// or filling the cache, or "" if it may use it.
func requestBypass(r *http.Request, allowCookies bool) string {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "method is not GET or HEAD"
	}
	h := r.Header
	if _, ok := h["Authorization"]; ok {
		return "request carries Authorization"
	}
	if _, ok := h["Cookie"]; ok && !allowCookies {
		return "request carries a cookie"
	}
	if _, ok := h["Upgrade"]; ok {
		return "protocol upgrade (WebSocket)"
	}
	if r.ContentLength != 0 {
		return "request has a body" // the key does not cover it
	}
	// Preconditions that can fail (412) are the app's to judge.
	if _, ok := h["If-Match"]; ok {
		return "request carries If-Match"
	}
	if _, ok := h["If-Unmodified-Since"]; ok {
		return "request carries If-Unmodified-Since"
	}
	return ""
}

// invalidates reports whether a request with this method makes stored
// answers for its URL obsolete (RFC 9111 §4.4).
func invalidates(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// cacheableStatus lists the statuses an answer may have to be stored.
func cacheableStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 404, 410:
		return true
	}
	return false
}

// freshness decides whether an answer with this status and header may be
// stored, and for how long: ttl, or less if the answer's own Cache-Control
// s-maxage / max-age (or, without them, Expires) allows less, minus the
// Age it already has. A zero lifetime comes with the reason.
func freshness(code int, h http.Header, ttl time.Duration, now time.Time) (time.Duration, string) {
	if !cacheableStatus(code) {
		return 0, "status " + strconv.Itoa(code) + " is not cacheable"
	}
	if _, ok := h["Set-Cookie"]; ok {
		return 0, "response sets a cookie"
	}
	if _, ok := h["Trailer"]; ok {
		return 0, "response has trailers"
	}
	if _, star := varyNames(h); star {
		return 0, "response has Vary: *"
	}
	cc := parseCacheControl(h["Cache-Control"])
	switch {
	case cc.noStore:
		return 0, "response has Cache-Control: no-store"
	case cc.private:
		return 0, "response has Cache-Control: private"
	case cc.noCache:
		return 0, "response has Cache-Control: no-cache"
	case !cc.present && headerHasToken(h["Pragma"], "no-cache"):
		return 0, "response has Pragma: no-cache"
	}

	origin, limited := time.Duration(0), true
	switch {
	case cc.sMaxAge >= 0:
		origin = cc.sMaxAge
	case cc.maxAge >= 0:
		origin = cc.maxAge
	default:
		v, ok := h["Expires"]
		if !ok {
			limited = false
			break
		}
		exp, err := http.ParseTime(first(v))
		if err != nil {
			return 0, "response has an invalid (so past) Expires"
		}
		date := now
		if d, err := http.ParseTime(first(h["Date"])); err == nil {
			date = d
		}
		origin = exp.Sub(date)
	}
	if !limited {
		return ttl, ""
	}
	origin -= time.Duration(ageOf(h)) * time.Second
	if origin <= 0 {
		return 0, "response is already stale (max-age, s-maxage, Expires or Age)"
	}
	return min(ttl, origin), ""
}

type cacheControl struct {
	present, noStore, noCache, private bool
	maxAge, sMaxAge                    time.Duration // -1 if absent
}

// parseCacheControl reads the directives a shared cache obeys. It errs
// towards not storing: qualified no-cache="…" and private="…" count as
// plain ones, an unreadable age counts as 0, a repeated age as its least.
func parseCacheControl(lines []string) cacheControl {
	cc := cacheControl{present: len(lines) > 0, maxAge: -1, sMaxAge: -1}
	for _, line := range lines {
		for line != "" {
			var d string
			d, line, _ = strings.Cut(line, ",")
			name, val, _ := strings.Cut(d, "=")
			name = textproto.TrimString(name)
			switch {
			case strings.EqualFold(name, "no-store"):
				cc.noStore = true
			case strings.EqualFold(name, "no-cache"):
				cc.noCache = true
			case strings.EqualFold(name, "private"):
				cc.private = true
			case strings.EqualFold(name, "max-age"):
				cc.maxAge = minAge(cc.maxAge, deltaSeconds(val))
			case strings.EqualFold(name, "s-maxage"):
				cc.sMaxAge = minAge(cc.sMaxAge, deltaSeconds(val))
			}
		}
	}
	return cc
}

func minAge(old, d time.Duration) time.Duration {
	if old < 0 {
		return d
	}
	return min(old, d)
}

// deltaSeconds parses a delta-seconds value (RFC 9111 §1.2.2): too large
// means "very long", unreadable means 0.
func deltaSeconds(v string) time.Duration {
	v = strings.Trim(textproto.TrimString(v), `"`)
	n, err := strconv.ParseUint(v, 10, 32)
	if errors.Is(err, strconv.ErrRange) {
		return 1 << 31 * time.Second
	}
	if err != nil {
		return 0
	}
	return time.Duration(n) * time.Second
}

// ageOf reads the Age an answer arrives with (from a cache upstream).
func ageOf(h http.Header) int64 {
	v, ok := h["Age"]
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(textproto.TrimString(first(v)), 10, 32)
	if err != nil {
		return 0
	}
	return int64(n)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// headerHasToken reports whether a comma-separated header holds token.
func headerHasToken(lines []string, token string) bool {
	for _, line := range lines {
		for line != "" {
			var t string
			t, line, _ = strings.Cut(line, ",")
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// varyNames returns the sorted canonical header names of an answer's Vary,
// or star if it varies on "*" (on something no request shows).
func varyNames(h http.Header) (names []string, star bool) {
	for _, line := range h["Vary"] {
		for line != "" {
			var f string
			f, line, _ = strings.Cut(line, ",")
			f = textproto.TrimString(f)
			switch {
			case f == "":
			case f == "*":
				return nil, true
			default:
				f = http.CanonicalHeaderKey(f)
				if !slices.Contains(names, f) {
					names = append(names, f)
				}
			}
		}
	}
	slices.Sort(names)
	return names, false
}

// varyValues collects a request's values of the named headers; copy
// clones them for storing beyond the request's life.
func varyValues(names []string, h http.Header, copy bool) [][]string {
	if len(names) == 0 {
		return nil
	}
	vals := make([][]string, len(names))
	for i, name := range names {
		vals[i] = h[name]
		if copy {
			vals[i] = slices.Clone(vals[i])
		}
	}
	return vals
}

// valuesMatch reports whether request header h has vals for names.
func valuesMatch(names []string, vals [][]string, h http.Header) bool {
	for i, name := range names {
		if !slices.Equal(h[name], vals[i]) {
			return false
		}
	}
	return true
}

// hopByHop lists the fields that describe one connection, not the answer
// (RFC 9110 §7.6.1), and Age, which the cache recomputes on every hit.
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Age":
		return true
	}
	return false
}

// storedHeader copies what of an answer's header is worth storing. Every
// value slice has len == cap, so a later Add on a served copy reallocates
// instead of writing into the stored array.
func storedHeader(h http.Header) http.Header {
	var listed []string // also hop-by-hop: named by Connection
	for _, line := range h["Connection"] {
		for line != "" {
			var f string
			f, line, _ = strings.Cut(line, ",")
			if f = textproto.TrimString(f); f != "" {
				listed = append(listed, http.CanonicalHeaderKey(f))
			}
		}
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		if hopByHop(k) || slices.Contains(listed, k) || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		out[k] = slices.Clip(slices.Clone(v))
	}
	return out
}

// headerSize estimates the bytes a stored header takes.
func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		n += int64(len(k)) + 48 // key, slice header, map slot
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// conditional lists the request fields that would let the app answer 304
// or 412 instead of the full page; a leader drops them so that what it
// fetches can be stored (its own client then gets the full page).
var conditional = []string{"If-None-Match", "If-Modified-Since", "If-Range"}

func hasConditional(h http.Header) bool {
	for _, k := range conditional {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// notModified evaluates If-None-Match, else If-Modified-Since, of a
// request against a stored 200 answer (RFC 9110 §13.2.2).
func notModified(h http.Header, e *entry) bool {
	if e.status != http.StatusOK {
		return false
	}
	if inm, ok := h["If-None-Match"]; ok {
		return e.etag != "" && etagListMatch(inm, e.etag)
	}
	if ims, ok := h["If-Modified-Since"]; ok && !e.lastMod.IsZero() {
		t, err := http.ParseTime(first(ims))
		return err == nil && !e.lastMod.After(t)
	}
	return false
}

// etagListMatch reports whether an If-None-Match list holds "*" or an
// entity tag weakly equal to etag. Tags are scanned, not split on commas,
// because a comma may sit inside the quotes.
func etagListMatch(lines []string, etag string) bool {
	etag = strings.TrimPrefix(etag, "W/")
	for _, s := range lines {
		for {
			s = strings.TrimLeft(s, " \t,")
			if s == "" {
				break
			}
			if s[0] == '*' {
				return true
			}
			s = strings.TrimPrefix(s, "W/")
			if s == "" || s[0] != '"' {
				break // malformed: ignore the rest of the line
			}
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				break
			}
			if s[:end+2] == etag {
				return true
			}
			s = s[end+2:]
		}
	}
	return false
}

// notModifiedFields are the stored fields a 304 repeats (RFC 9110 §15.4.5).
var notModifiedFields = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Vary"}
