package cache

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// fillWriter is one upstream fetch for a key, the leader's. next writes
// into it from a goroutine of its own (produce) at the upstream's speed,
// while the leader's handler sends it to its client at the client's speed
// (stream). The followers are released the moment the answer is complete
// or proves uncacheable, whatever the leader's client does: a slow reader
// (or an attacker reading slowly on purpose) cannot hold them until Wait
// runs out and send them all upstream.
//
// While the answer may be stored, buf holds the whole body (at most
// MaxBody) and the client is sent from it. The moment the answer proves
// uncacheable (its header, or a body past MaxBody) the key turns
// hit-for-pass and buf becomes a window between the upstream and the
// client: next then waits for the client, so a large body never sits in
// memory.
type fillWriter struct {
	h      *handler
	req    *http.Request // the client's request, for its Vary values
	s      *shard
	n      *node
	f      *flight
	head   bool               // the client asked HEAD: it is sent no body
	start  int64              // clock reading when the fetch began
	cancel context.CancelFunc // cuts the upstream fetch

	// Used by next's goroutine alone.
	hdr      http.Header // what next writes until the header is sent; read-only after
	late     http.Header // what next writes after it: trailers
	lifetime time.Duration
	stored   http.Header // header to store, taken when it was sent
	failed   bool        // the answer is about the client, not the URL
	released bool        // the flight is over and its followers are released
	finished bool

	// Shared between next's goroutine and the leader's, under mu; cond
	// is broadcast when there is something for the other to do.
	mu       sync.Mutex
	cond     sync.Cond
	early    []early // 1xx answers (103 Early Hints) to pass on
	code     int     // status; 0 before the header
	filling  bool    // the answer may be stored: buf is all of its body
	buf      []byte  // the body (filling), or the window not yet sent
	sent     int     // bytes of buf the client has been sent
	flush    bool    // next flushed: send what buf holds at once
	gone     bool    // the client went away
	cut      bool    // the fetch was cancelled: what came may be incomplete
	done     bool    // next returned or panicked
	panicked any     // what next panicked with, for the leader to re-panic
	timer    *time.Timer
}

type early struct {
	code int
	hdr  http.Header
}

// streamWindow bounds what is held for a leader's client once the answer
// is not stored: next waits for the client beyond it.
const streamWindow = 64 << 10

var errClientGone = errors.New("cache: the client went away")

func (fw *fillWriter) Header() http.Header {
	if fw.code == 0 {
		return fw.hdr
	}
	if fw.late == nil {
		fw.late = make(http.Header)
	}
	return fw.late
}

func (fw *fillWriter) WriteHeader(code int) {
	if fw.code != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		fw.mu.Lock()
		fw.early = append(fw.early, early{code, fw.hdr.Clone()})
		fw.cond.Broadcast()
		fw.mu.Unlock()
		return
	}
	lifetime, why := freshness(code, fw.hdr, fw.h.cfg.TTL, fw.h.wall())
	if why == "" {
		if cl, ok := contentLength(fw.hdr); ok && cl > fw.h.maxBody {
			why = "body larger than MaxBody"
		}
	}
	fw.mu.Lock()
	fw.code = code
	pass := false
	switch {
	case why != "" && (fw.gone || fw.req.Context().Err() != nil):
		// The client left and the proxy says 502: that is about this
		// client, not the URL. Marking the key hit-for-pass would let
		// anyone who cancels requests switch the cache off for it.
		fw.failed = true
	case why != "":
		pass = true
	default:
		fw.filling = true
		fw.lifetime = lifetime
		fw.stored = storedHeader(fw.hdr)
		if cl, ok := contentLength(fw.hdr); ok {
			fw.buf = make([]byte, 0, cl)
		}
	}
	// No wakeup for the header alone: net/http would not send it before
	// the first body bytes, a Flush or the end either.
	fw.mu.Unlock()
	if pass {
		fw.pass()
	}
}

// Write takes the body at the upstream's speed while it may be stored;
// past MaxBody it releases the followers and from then on waits for the
// leader's client, holding at most a window.
func (fw *fillWriter) Write(p []byte) (int, error) {
	if fw.code == 0 {
		fw.WriteHeader(http.StatusOK)
	}
	fw.mu.Lock()
	if fw.filling {
		if int64(len(fw.buf)+len(p)) <= fw.h.maxBody {
			fw.buf = append(fw.buf, p...)
			fw.wake()
			fw.mu.Unlock()
			return len(p), nil
		}
		fw.filling = false // stream the rest; never hold a big body
		if fw.gone {
			fw.cutLocked() // no one left to stream it to
		}
		fw.mu.Unlock()
		fw.pass()
		fw.mu.Lock()
	}
	window := min(fw.h.maxBody, streamWindow)
	for fw.rewind(); !fw.gone && len(fw.buf) > 0 && int64(len(fw.buf)+len(p)) > window; fw.rewind() {
		fw.cond.Broadcast() // whatever is unsent, the client's goroutine must take it
		fw.cond.Wait()
	}
	if fw.gone {
		fw.mu.Unlock()
		return 0, errClientGone
	}
	if !fw.head {
		fw.buf = append(fw.buf, p...)
		fw.wake()
	}
	fw.mu.Unlock()
	return len(p), nil
}

// wakeAt is how much unsent body wakes the client's goroutine. Less waits
// for more, a Flush or the end: net/http holds about that much before it
// sends anything, and each wakeup costs a switch between threads.
const wakeAt = 2048

// wake wakes the client's goroutine if enough is waiting to be sent. The
// caller holds mu.
func (fw *fillWriter) wake() {
	if len(fw.buf)-fw.sent >= wakeAt {
		fw.cond.Broadcast()
	}
}

// rewind starts the window over once the client has been sent all of it
// and none of it is kept; then no one reads buf. The caller holds mu.
func (fw *fillWriter) rewind() {
	if fw.filling || fw.sent != len(fw.buf) {
		return
	}
	fw.buf, fw.sent = fw.buf[:0], 0
	if int64(cap(fw.buf)) > 2*streamWindow {
		fw.buf = nil // what was kept before the answer proved too large
	}
}

// Flush has what next wrote so far sent to the client at once (streaming).
func (fw *fillWriter) Flush() {
	if fw.code == 0 {
		fw.WriteHeader(http.StatusOK)
	}
	fw.mu.Lock()
	fw.flush = true
	fw.cond.Broadcast()
	fw.mu.Unlock()
}

// produce runs next into the fill and settles the flight when it is done.
func (fw *fillWriter) produce(up *http.Request) {
	defer func() {
		p := recover()
		if !fw.finished && !fw.released {
			fw.fail() // next panicked: release the followers
		}
		fw.mu.Lock()
		fw.done, fw.panicked = true, p
		fw.cond.Broadcast()
		fw.mu.Unlock()
	}()
	fw.h.next.ServeHTTP(fw, up)
	fw.finish()
}

// stream sends the fill to the leader's client as it comes, at the
// client's pace, until next is done; then it re-panics next's panic
// (http.ErrAbortHandler when the upstream broke off) so that net/http
// aborts the client's answer as it would have.
func (fw *fillWriter) stream(w http.ResponseWriter) {
	headerSent := false
	fw.mu.Lock()
	for {
		switch {
		case len(fw.early) > 0:
			e := fw.early[0]
			fw.early = fw.early[1:]
			fw.mu.Unlock()
			informational(w, e.code, e.hdr)
			fw.mu.Lock()
		case !headerSent && fw.code != 0:
			headerSent = true
			code := fw.code
			fw.mu.Unlock()
			out := w.Header()
			for k, v := range fw.hdr { // read-only once code is set
				out[k] = v
			}
			if !fw.h.cfg.HideXCache {
				out["X-Cache"] = missValue
			}
			reportStatus(w, Miss)
			w.WriteHeader(code)
			fw.mu.Lock()
		case headerSent && fw.sent < len(fw.buf):
			chunk := fw.buf[fw.sent:] // next only appends past it
			flush, gone := fw.flush, fw.gone
			fw.flush = false
			fw.mu.Unlock()
			var err error
			if !gone && !fw.head {
				if _, err = w.Write(chunk); err == nil && flush {
					http.NewResponseController(w).Flush()
				}
			}
			fw.mu.Lock()
			fw.sent += len(chunk)
			if err != nil {
				fw.leftLocked()
			}
			fw.rewind()
			fw.cond.Broadcast()
		case headerSent && fw.flush:
			fw.flush = false
			gone := fw.gone
			fw.mu.Unlock()
			if !gone {
				http.NewResponseController(w).Flush()
			}
			fw.mu.Lock()
		case fw.done:
			p, gone := fw.panicked, fw.gone
			fw.mu.Unlock()
			if p != nil {
				panic(p)
			}
			if !gone && len(fw.late) > 0 {
				out := w.Header() // trailers
				for k, v := range fw.late {
					out[k] = v
				}
			}
			return
		default:
			fw.cond.Wait()
		}
	}
}

// left is called when the leader's client goes away. An answer that may
// still be stored is fetched on for the followers, though not for longer
// than they would wait (an endless stream never completes); any other is
// cut at once.
func (fw *fillWriter) left() {
	fw.mu.Lock()
	fw.leftLocked()
	fw.mu.Unlock()
}

func (fw *fillWriter) leftLocked() {
	if fw.gone {
		return
	}
	fw.gone = true
	fw.cond.Broadcast()
	switch {
	case fw.done:
	case fw.filling:
		fw.timer = time.AfterFunc(fw.h.cfg.Wait, func() {
			fw.mu.Lock()
			if !fw.done {
				fw.cutLocked()
			}
			fw.mu.Unlock()
		})
	default:
		fw.cutLocked()
	}
}

func (fw *fillWriter) cutLocked() {
	fw.cut = true
	fw.cancel()
	fw.cond.Broadcast()
}

// informational passes a 1xx (103 Early Hints) with the fields next set
// for it, then restores the client's header: net/http does not clear it.
func informational(w http.ResponseWriter, code int, hdr http.Header) {
	out := w.Header()
	type saved struct {
		k   string
		v   []string
		had bool
	}
	var old []saved
	for k, v := range hdr {
		ov, had := out[k]
		old = append(old, saved{k, ov, had})
		out[k] = v
	}
	w.WriteHeader(code)
	for _, o := range old {
		if o.had {
			out[o.k] = o.v
		} else {
			delete(out, o.k)
		}
	}
}

// finish stores the answer once next has returned, or settles the flight.
func (fw *fillWriter) finish() {
	if fw.code == 0 {
		// next wrote nothing: its request was cut off (the proxy says
		// nothing when its request was cancelled). The leader's client
		// gets what net/http would send, but nothing is stored.
		fw.WriteHeader(http.StatusOK)
		fw.failed = true
	}
	fw.finished = true
	if fw.released {
		return
	}
	fw.mu.Lock()
	filling, cut, n := fw.filling, fw.cut, len(fw.buf)
	fw.mu.Unlock()
	if !filling || fw.failed || cut {
		fw.fail()
		return
	}
	if cl, ok := contentLength(fw.hdr); ok && cl != int64(n) {
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
