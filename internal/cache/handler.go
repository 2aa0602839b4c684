package cache

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Defaults moat's configuration applies; the zero Config has TTL 0 (off),
// and 0 in the other fields means these values.
const (
	DefaultTTL     = 3 * time.Second
	DefaultMaxBody = 1 << 20
	DefaultWait    = 5 * time.Second
)

// The cache status of a request, in X-Cache and given to SetCacheStatus.
const (
	// Hit: answered from a stored answer, without going upstream. This
	// includes requests that waited for another request's fetch: they
	// cost the app nothing, and hits then count the load taken off it.
	Hit = "HIT"
	// Miss: this request fetched the answer upstream for its key, and
	// others for the same key waited for it. Whether the answer could be
	// stored is decided by the answer.
	Miss = "MISS"
	// Bypass: went straight upstream, as if there were no cache: an
	// uncacheable request or method, a key marked hit-for-pass, or a
	// waiter that was released (uncacheable answer) or gave up waiting.
	Bypass = "BYPASS"
)

// Config is one app's cache policy.
type Config struct {
	// TTL is how long an answer is served from memory. 0 turns the cache
	// off for the app (moat's default is DefaultTTL). An answer's own
	// Cache-Control s-maxage / max-age / Expires, when shorter, wins: the
	// cache never serves an answer for longer than its origin allows.
	TTL time.Duration `json:"ttl,omitempty"`

	// AllowCookies makes requests that carry a Cookie cacheable, for apps
	// whose cookies do not change their pages (analytics, consent). Off by
	// default, because a cached personal page would reach other users.
	// Answers that set a cookie are never stored, and requests with
	// Authorization never use the cache, whatever this says.
	AllowCookies bool `json:"allow_cookies,omitempty"`

	// MaxBody is the largest body stored (0: DefaultMaxBody). Larger ones
	// stream through untouched and their key is passed through for TTL.
	MaxBody int64 `json:"max_body,omitempty"`

	// HideXCache turns off the X-Cache: HIT|MISS|BYPASS response header
	// (on by default, for the user to see what the cache does).
	HideXCache bool `json:"hide_x_cache,omitempty"`

	// Wait bounds how long requests wait for another request fetching the
	// same key (0: DefaultWait); then they go upstream themselves.
	Wait time.Duration `json:"wait,omitempty"`

	// Now is the clock (nil: the system's, monotonic); tests set it to
	// control expiry.
	Now func() time.Time `json:"-"`
}

// maxAttempts bounds how often one request tries to join or lead a fetch
// when fetches it waited for failed (their client went away, the app
// panicked) or stored a variant other than its own.
const maxAttempts = 3

// handler is one app's cache in front of next.
type handler struct {
	c       *Cache
	scope   string
	cfg     Config
	maxBody int64
	next    http.Handler
	clock   func() int64 // h.mono, bound once for entries to keep
}

// mono reads the clock as nanoseconds since the cache's epoch: one
// monotonic read (time.Since), where time.Now reads two clocks.
func (h *handler) mono() int64 {
	if h.cfg.Now == nil {
		return int64(time.Since(h.c.epoch))
	}
	return int64(h.cfg.Now().Sub(h.c.epoch))
}

// wall is the calendar time, for Expires and Date.
func (h *handler) wall() time.Time {
	if h.cfg.Now == nil {
		return time.Now()
	}
	return h.cfg.Now()
}

// Handler returns next wrapped in the cache, with its keys in scope (the
// app's name). With cfg.TTL 0 it returns next itself.
//
// Requests that may not use the cache are passed to next with w untouched
// (streaming, Flush, Hijack keep working). The request that fetches a key
// reads the answer at the upstream's speed, keeping up to MaxBody, and is
// sent it at its own (Flush passes through): the requests waiting for the
// same key are answered as soon as the upstream is done, however slowly
// that one client reads.
func (c *Cache) Handler(scope string, cfg Config, next http.Handler) http.Handler {
	if cfg.TTL <= 0 {
		return next
	}
	if strings.IndexByte(scope, 0) >= 0 {
		panic("cache: scope " + strconv.Quote(scope) + " contains a NUL byte")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	h := &handler{c: c, scope: scope, cfg: cfg, maxBody: min(cfg.MaxBody, c.max/4), next: next}
	h.clock = h.mono
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if why := requestBypass(r, h.cfg.AllowCookies); why != "" {
		h.bypass(w, r)
		if invalidates(r.Method) {
			h.invalidate(r)
		}
		return
	}
	k := makeKey(h.scope, r)
	hash := k.hash(h.c.seed)
	s := h.c.shardFor(hash)
	for attempt := 1; ; attempt++ {
		now := h.mono()
		e, pass := s.peek(hash, &k, r.Header, now)
		switch {
		case pass:
			h.bypass(w, r)
			return
		case e != nil:
			e.touch()
			h.serve(w, r, e, now)
			return
		case attempt > maxAttempts:
			h.bypass(w, r)
			return
		}
		if _, ok := r.Header["Range"]; ok {
			// A range of an uncached page is the app's to cut; fetching
			// the whole page for it would turn the key hit-for-pass (206).
			h.bypass(w, r)
			return
		}

		// Slow path: look again under the write lock, then follow a fetch
		// under way or lead a new one. The lock is never held upstream.
		s.mu.Lock()
		n := s.find(hash, &k)
		if n == nil {
			n = s.create(hash, &k)
		}
		gone := n.prune(s, now, nil)
		pass = n.passing(now)
		if !pass {
			e = n.lookup(r.Header, now)
		}
		var f *flight
		lead := false
		if !pass && e == nil {
			if f = n.findFlight(r.Header); f == nil {
				f, lead = n.startFlight(r.Header), true
			}
		}
		s.dropIfEmpty(n)
		s.mu.Unlock()
		if len(gone) > 0 {
			h.c.settle(nil, gone)
		}
		switch {
		case pass:
			h.bypass(w, r)
			return
		case e != nil:
			e.touch()
			h.serve(w, r, e, now)
			return
		case lead:
			h.lead(w, r, s, n, f, now)
			return
		}
		if h.follow(w, r, f) {
			return
		}
	}
}

// follow waits for another request's fetch and answers from it. It
// returns false if the request should try again: the fetch failed or
// stored a variant that does not fit this request.
func (h *handler) follow(w http.ResponseWriter, r *http.Request, f *flight) bool {
	t := time.NewTimer(h.cfg.Wait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		h.bypass(w, r) // the leader is slow: waiting longer helps no one
		return true
	case <-r.Context().Done():
		return true // the client is gone
	}
	switch {
	case f.entry != nil && f.entry.matches(r.Header):
		h.serve(w, r, f.entry, h.mono())
		return true
	case f.pass:
		h.bypass(w, r)
		return true
	}
	return false
}

// lead fetches the answer for a key: next writes it into a fillWriter
// from a goroutine of its own, at the upstream's speed, while this one
// sends it on to w at the client's. The fetch does not end with the
// client: an answer that may be stored is fetched on for the followers.
func (h *handler) lead(w http.ResponseWriter, r *http.Request, s *shard, n *node, f *flight, now int64) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	var up *http.Request
	if r.Method == http.MethodHead || hasConditional(r.Header) {
		// Fetch what can be stored: the full GET, not a header or a 304.
		// A HEAD flood then costs the app one GET per TTL, like a GET
		// flood; the HEAD client is sent the header alone.
		up = r.Clone(ctx)
		up.Method = http.MethodGet
		for _, k := range conditional {
			delete(up.Header, k)
		}
	} else {
		up = r.WithContext(ctx)
	}
	fw := &fillWriter{h: h, req: r, s: s, n: n, f: f, hdr: make(http.Header), head: r.Method == http.MethodHead, start: now, cancel: cancel}
	fw.cond.L = &fw.mu
	stop := context.AfterFunc(r.Context(), fw.left)
	defer func() {
		stop()
		cancel()
		fw.mu.Lock()
		if fw.timer != nil {
			fw.timer.Stop()
		}
		fw.mu.Unlock()
	}()
	go fw.produce(up)
	fw.stream(w)
}

// bypass sends the request upstream with w untouched.
func (h *handler) bypass(w http.ResponseWriter, r *http.Request) {
	if !h.cfg.HideXCache {
		w.Header()["X-Cache"] = bypassValue
	}
	reportStatus(w, Bypass)
	h.next.ServeHTTP(w, r)
}

// invalidate drops what is stored for r's URL after an unsafe method
// (POST, PUT, DELETE…) went through, so that its author does not see the
// old page for up to TTL. Only this scheme, host, path and query.
func (h *handler) invalidate(r *http.Request) {
	k := makeKey(h.scope, r)
	hash := k.hash(h.c.seed)
	s := h.c.shardFor(hash)
	var gone []*entry
	s.mu.Lock()
	if n := s.find(hash, &k); n != nil {
		gone = append(gone, n.variants...)
		if n.pass != nil {
			gone = append(gone, n.pass)
		}
		for _, e := range gone {
			s.detach(e)
		}
		s.dropIfEmpty(n)
	}
	s.mu.Unlock()
	if len(gone) > 0 {
		h.c.settle(nil, gone)
	}
}

// serve answers from a stored entry: its status, header and body, with
// Age, or a 304 when the request's validators match.
func (h *handler) serve(w http.ResponseWriter, r *http.Request, e *entry, now int64) {
	out := w.Header()
	code := e.status
	if notModified(r.Header, e) {
		code = http.StatusNotModified
		for _, k := range notModifiedFields {
			if v, ok := e.header[k]; ok {
				out[k] = v
			}
		}
	} else {
		for _, f := range e.fields {
			out[f.name] = f.values // shared, read-only: see storedHeader
		}
	}
	out["Age"] = ageValue(e.baseAge + (now-e.stored)/int64(time.Second))
	if !h.cfg.HideXCache {
		out["X-Cache"] = hitValue
	}
	reportStatus(w, Hit)
	w.WriteHeader(code)
	if code != http.StatusNotModified && r.Method != http.MethodHead && len(e.body) > 0 {
		w.Write(e.body)
	}
}

// Header values shared by all responses: a hit allocates none. Each has
// len == cap, so an Add reallocates rather than writing into them.
var (
	hitValue    = []string{Hit}
	missValue   = []string{Miss}
	bypassValue = []string{Bypass}
	ageValues   = func() (v [600][]string) {
		for i := range v {
			v[i] = []string{strconv.Itoa(i)}
		}
		return v
	}()
)

func ageValue(age int64) []string {
	if age < 0 {
		age = 0
	}
	if age < int64(len(ageValues)) {
		return ageValues[age]
	}
	return []string{strconv.FormatInt(age, 10)}
}

// cacheStatusSetter is how the edge's access log learns what the cache did.
type cacheStatusSetter interface{ SetCacheStatus(string) }

// reportStatus tells the first writer in w's Unwrap chain that wants to
// know the cache status.
func reportStatus(w http.ResponseWriter, status string) {
	for range 4 {
		if s, ok := w.(cacheStatusSetter); ok {
			s.SetCacheStatus(status)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

var _ http.Handler = (*handler)(nil)
