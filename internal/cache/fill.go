package cache

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// fillWriter is the ResponseWriter next gets for a leader's request. It
// streams the answer to the leader's client as it comes and keeps a copy
// while the answer may be stored; the moment it proves uncacheable (its
// header, or a body past MaxBody) it releases the followers and marks the
// key hit-for-pass, and from then on only streams.
type fillWriter struct {
	h     *handler
	w     http.ResponseWriter // the leader's client
	req   *http.Request       // the client's request, for its Vary values
	s     *shard
	n     *node
	f     *flight
	hdr   http.Header // what next writes until the header is sent
	head  bool        // the client asked HEAD: its body is dropped
	start int64       // clock reading when the fetch began

	code     int // status sent; 0 before
	filling  bool
	lifetime time.Duration
	stored   http.Header // header to store, taken when it was sent
	buf      []byte
	failed   bool // the client went away: buf is incomplete
	released bool // the flight is over and its followers are released
	finished bool
}

func (fw *fillWriter) Header() http.Header {
	if fw.code == 0 {
		return fw.hdr
	}
	return fw.w.Header()
}

func (fw *fillWriter) WriteHeader(code int) {
	if fw.code != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		fw.informational(code)
		return
	}
	fw.code = code
	lifetime, why := freshness(code, fw.hdr, fw.h.cfg.TTL, fw.h.wall())
	if why == "" {
		if cl, ok := contentLength(fw.hdr); ok && cl > fw.h.maxBody {
			why = "body larger than MaxBody"
		}
	}
	out := fw.w.Header()
	for k, v := range fw.hdr {
		out[k] = v
	}
	if !fw.h.cfg.HideXCache {
		out["X-Cache"] = missValue
	}
	reportStatus(fw.w, Miss)
	switch {
	case why != "" && fw.req.Context().Err() != nil:
		// The client left and the proxy says 502: that is about this
		// client, not the URL. Marking the key hit-for-pass would let
		// anyone who cancels requests switch the cache off for it.
		fw.failed = true
	case why != "":
		fw.pass()
	default:
		fw.filling = true
		fw.lifetime = lifetime
		fw.stored = storedHeader(fw.hdr)
		if cl, ok := contentLength(fw.hdr); ok {
			fw.buf = make([]byte, 0, cl)
		}
	}
	fw.w.WriteHeader(code)
}

// informational passes a 1xx (103 Early Hints) with the fields next set
// for it, then restores the client's header: net/http does not clear it.
func (fw *fillWriter) informational(code int) {
	out := fw.w.Header()
	type saved struct {
		k   string
		v   []string
		had bool
	}
	var old []saved
	for k, v := range fw.hdr {
		ov, had := out[k]
		old = append(old, saved{k, ov, had})
		out[k] = v
	}
	fw.w.WriteHeader(code)
	for _, o := range old {
		if o.had {
			out[o.k] = o.v
		} else {
			delete(out, o.k)
		}
	}
}

func (fw *fillWriter) Write(p []byte) (int, error) {
	if fw.code == 0 {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.filling {
		if int64(len(fw.buf)+len(p)) > fw.h.maxBody {
			fw.filling, fw.buf = false, nil
			fw.pass() // stream the rest; never hold a big body
		} else {
			fw.buf = append(fw.buf, p...)
		}
	}
	if fw.head {
		return len(p), nil
	}
	n, err := fw.w.Write(p)
	if err != nil {
		fw.failed = true
	}
	return n, err
}

// Flush sends what next wrote so far to the client at once (streaming).
func (fw *fillWriter) Flush() {
	if fw.code == 0 {
		fw.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(fw.w).Flush()
}

// Unwrap lets http.ResponseController reach the client's writer for what
// fillWriter does not implement (deadlines).
func (fw *fillWriter) Unwrap() http.ResponseWriter { return fw.w }

// finish stores the answer once next has returned, or settles the flight.
func (fw *fillWriter) finish() {
	if fw.code == 0 {
		fw.WriteHeader(http.StatusOK) // what net/http would send
	}
	fw.finished = true
	if fw.released {
		return
	}
	if !fw.filling || fw.failed {
		fw.fail()
		return
	}
	if cl, ok := contentLength(fw.hdr); ok && cl != int64(len(fw.buf)) {
		fw.fail() // the upstream broke off
		return
	}
	e := fw.entry()
	if e.size > fw.h.c.max/4 {
		fw.pass()
		return
	}
	fw.store(e)
}

// abandon releases the followers if next panicked (http.ErrAbortHandler
// when a client goes away mid-body, or a bug); the panic goes on.
func (fw *fillWriter) abandon() {
	if !fw.finished && !fw.released {
		fw.fail()
	}
}

func (fw *fillWriter) entry() *entry {
	body := fw.buf
	if cap(body) != len(body) {
		body = slices.Clone(body)
	}
	hdr := fw.stored
	if fw.code != http.StatusNoContent && fw.code != http.StatusNotModified {
		hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	names, _ := varyNames(hdr)
	e := &entry{
		node:     fw.n,
		status:   fw.code,
		header:   hdr,
		body:     body,
		vary:     names,
		varyVals: varyValues(names, fw.req.Header, true),
		stored:   fw.start,
		expires:  fw.start + int64(fw.lifetime),
		baseAge:  ageOf(fw.hdr),
		clock:    fw.h.clock,
	}
	for k, v := range hdr {
		e.fields = append(e.fields, field{k, v})
	}
	if v := hdr["Etag"]; len(v) > 0 {
		e.etag = v[0]
	}
	if v := hdr["Last-Modified"]; len(v) > 0 {
		e.lastMod, _ = http.ParseTime(v[0])
	}
	e.size = entryOverhead + int64(len(fw.n.key)) + int64(len(body)) + headerSize(hdr)
	for _, vs := range e.varyVals {
		for _, v := range vs {
			e.size += int64(len(v)) + 16
		}
	}
	return e
}

// store publishes e as a variant of the key and hands it to the followers.
func (fw *fillWriter) store(e *entry) {
	s, n, f := fw.s, fw.n, fw.f
	var gone []*entry
	s.mu.Lock()
	if !slices.Equal(n.vary, e.vary) {
		// The answer varies on other fields than before: the stored
		// variants were selected by the old ones.
		gone = append(gone, n.variants...)
		n.vary = e.vary
	}
	for _, old := range n.variants {
		if slices.Equal(old.vary, e.vary) && valuesMatch(e.vary, old.varyVals, fw.req.Header) {
			gone = append(gone, old) // the one e replaces
		}
	}
	for _, old := range gone {
		s.detach(old)
	}
	if len(n.variants) >= maxVariants {
		old := n.variants[0] // the oldest
		gone = append(gone, old)
		s.detach(old)
	}
	n.variants = append(n.variants, e)
	n.endFlight(f)
	s.mu.Unlock()
	fw.released = true
	f.entry = e
	close(f.done)
	fw.h.c.settle(e, gone)
}

// pass marks the key hit-for-pass for TTL and releases the followers to go
// upstream themselves, at once.
func (fw *fillWriter) pass() {
	if fw.released {
		return
	}
	s, n, f := fw.s, fw.n, fw.f
	now := fw.h.mono()
	marker := &entry{node: n, stored: now, expires: now + int64(fw.h.cfg.TTL), clock: fw.h.clock}
	marker.size = entryOverhead + int64(len(n.key))
	s.mu.Lock()
	gone := append([]*entry(nil), n.variants...) // one uncacheable variant: pass them all
	if n.pass != nil {
		gone = append(gone, n.pass)
	}
	for _, old := range gone {
		s.detach(old)
	}
	n.pass = marker
	n.endFlight(f)
	s.mu.Unlock()
	fw.released = true
	f.pass = true
	close(f.done)
	fw.h.c.settle(marker, gone)
}

// fail ends the flight without an answer: its followers try again.
func (fw *fillWriter) fail() {
	if fw.released {
		return
	}
	fw.s.mu.Lock()
	fw.n.endFlight(fw.f)
	fw.s.dropIfEmpty(fw.n)
	fw.s.mu.Unlock()
	fw.released = true
	close(fw.f.done)
}

// contentLength reads a declared Content-Length.
func contentLength(h http.Header) (int64, bool) {
	v, ok := h["Content-Length"]
	if !ok || len(v) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

var (
	_ http.ResponseWriter = (*fillWriter)(nil)
	_ http.Flusher        = (*fillWriter)(nil)
)
