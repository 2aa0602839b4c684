package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The fast lane answers the plain GETs of HTTP/1.1 connections without
// net/http's server.
//
// Under a flood, or any busy page, most requests are GETs, and most of
// those the output cache answers from memory. For those, net/http's
// per-request machinery (a response object, a copy of the header to
// detect late changes, sorting it, a goroutine that watches the
// connection, timers) costs more than everything moat does for the
// request. So the HTTPS side does the TLS handshake itself, and an
// HTTP/1.1 connection starts in the lane:
//
//  1. The next request's head is parsed by net/http's own parser
//     (http.ReadRequest) from the bytes already received, and checked as
//     net/http's server checks it.
//  2. If it is a plain GET (no body, no upgrade, no Expect, no
//     Connection: close) for an app, the lane runs the app's whole chain,
//     the same handlers as Edge.ServeHTTP (rate limit, cache, proxy,
//     access log, metrics), into a writer that frames the answer as
//     net/http does (laneWriter). While the app is asked, the connection
//     is watched as net/http watches it, so that a client that leaves
//     cancels its request (laneState.watch).
//  3. Anything else (a POST, a WebSocket, moat's own pages, a head that
//     came in pieces) and the connection is handed to net/http, bytes not
//     yet consumed included, for the rest of its life.
//
// HTTP/2 connections go to net/http straight after the handshake.
type lane struct {
	e             *Edge
	base          context.Context // the server's, for every request's context
	cfg           *tls.Config
	handoff       *handoffListener
	idle          time.Duration // how long a connection may wait for its next request
	headerTimeout time.Duration // how long the TLS handshake, and then the first request, may take

	mu      sync.Mutex
	conns   map[*tls.Conn]struct{} // connections in the lane, from before their handshake
	closing bool
	wg      sync.WaitGroup

	answered atomic.Int64 // requests the lane answered itself, for tests
}

// laneConn is a TLS connection that started in the lane. When handed to
// net/http, it reads the bytes the lane had received but not consumed
// first; net/http learns its TLS state through ConnContext.
type laneConn struct {
	*tls.Conn
	br    *bufio.Reader
	state *tls.ConnectionState
}

func (c *laneConn) Read(p []byte) (int, error) { return c.br.Read(p) }

type laneStateKey struct{}

// laneContext gives net/http's requests on a handed-off connection its TLS
// state, which net/http only knows for a *tls.Conn (see Edge.ServeHTTP).
func laneContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*laneConn); ok {
		return context.WithValue(ctx, laneStateKey{}, lc.state)
	}
	return ctx
}

// laneTLS is the TLS state of a request on a connection that net/http got
// from the lane, or nil.
func laneTLS(ctx context.Context) *tls.ConnectionState {
	st, _ := ctx.Value(laneStateKey{}).(*tls.ConnectionState)
	return st
}

// serve runs the lane's accept loop on ln until ln is closed.
func (l *lane) serve(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.e.log.Warn("accept failed; retrying", "err", err, "in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.conn(c)
		}()
	}
}

// conn does the handshake and keeps an HTTP/1.1 connection in the lane
// for as long as its requests are hits.
func (l *lane) conn(raw net.Conn) {
	tc := tls.Server(raw, l.cfg)
	if !l.track(tc, true) {
		raw.Close()
		return
	}
	if err := tc.Handshake(); err != nil {
		l.track(tc, false)
		if re, ok := err.(tls.RecordHeaderError); ok && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			// As net/http says it: plain HTTP sent to the HTTPS port.
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		l.e.log.Debug("TLS handshake error", "from", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	state := tc.ConnectionState()
	if p := state.NegotiatedProtocol; p != "" && p != "http/1.1" {
		l.track(tc, false)
		tc.SetDeadline(time.Time{})
		l.handoff.give(tc) // h2, or an ACME TLS-ALPN-01 check
		return
	}
	tc.SetWriteDeadline(time.Time{})
	c := &laneConn{Conn: tc, br: bufio.NewReaderSize(tc, 4<<10), state: &state}
	handoff, linger := l.loop(c)
	l.track(tc, false)
	if handoff {
		c.SetReadDeadline(time.Time{})
		l.handoff.give(c)
		return
	}
	if linger {
		// An answer that ends the connection: close our side first and
		// let the client's pending bytes drain for a moment, as net/http
		// does, so that the client's kernel does not discard the answer
		// on a reset.
		tc.CloseWrite()
		tc.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, c.br)
	}
	tc.Close()
}

// lingerTime is how long a connection closed after an answer drains the
// client's bytes (net/http waits as long).
const lingerTime = 500 * time.Millisecond

// looksLikeHTTP reports whether a TLS record header is the start of a
// plain HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// track adds c to (or removes it from) the connections in the lane,
// giving a new one the time its handshake may take; it refuses to add one
// once the lane is closing.
func (l *lane) track(c *tls.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !add {
		delete(l.conns, c)
		return true
	}
	if l.closing {
		return false
	}
	l.conns[c] = struct{}{}
	c.SetDeadline(time.Now().Add(l.headerTimeout))
	return true
}

// close stops the lane: each connection waiting for its next request is
// closed, and close waits (until ctx ends) for the lane's goroutines.
func (l *lane) close(ctx context.Context) {
	l.mu.Lock()
	l.closing = true
	for c := range l.conns {
		c.SetReadDeadline(time.Unix(1, 0)) // ends a handshake, or the wait for a request
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// waitFor sets how long c may wait for its next request (d), unless the
// lane is closing. close sets the deadlines under the same lock, so a
// connection cannot slip back into a long wait after close woke it.
func (l *lane) waitFor(c *laneConn, d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	c.SetReadDeadline(time.Now().Add(d))
	return true
}

func (l *lane) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// laneState is what one connection in the lane reuses from request to
// request.
type laneState struct {
	l       *lane
	c       *laneConn
	bw      *bufio.Writer
	parse   *bufio.Reader // reads a request head from head
	head    bytes.Reader
	peer    netip.Addr
	remote  string
	w       laneWriter
	rec     recorder
	base    context.Context // the connection's: the server, addresses, client, watchKey
	client  netip.Addr      // the client in base
	reqCtx  context.Context // the current request's, cancelled when it ends or the client leaves
	cancel  context.CancelFunc
	aborted bool // the last answer broke off (a panic, http.ErrAbortHandler)
	date    dateCache
}

// loop answers requests on c until one is not for the lane (handoff: hand
// c over) or the connection ends (close it; linger when an answer ended
// it).
func (l *lane) loop(c *laneConn) (handoff, linger bool) {
	s := &laneState{l: l, c: c, bw: bufio.NewWriterSize(c.Conn, 4<<10), remote: c.RemoteAddr().String()}
	s.parse = bufio.NewReaderSize(&s.head, 4<<10)
	if ap, err := netip.ParseAddrPort(s.remote); err == nil {
		s.peer = ap.Addr().Unmap()
	}
	s.w.hdr = make(http.Header, 16)
	// Before a connection goes to net/http, what the lane answered must
	// be on its way: net/http writes on the connection directly.
	handOver := func() (bool, bool) { return s.bw.Flush() == nil, false }
	// As with net/http: the first request must come within the header
	// timeout, later ones within the idle timeout.
	wait := l.headerTimeout
	for {
		if !l.waitFor(c, wait) {
			return false, false
		}
		wait = l.idle
		if _, err := c.br.Peek(1); err != nil || l.isClosing() {
			return false, false
		}
		buf, _ := c.br.Peek(c.br.Buffered())
		end := bytes.Index(buf, []byte("\r\n\r\n"))
		if end < 0 {
			return handOver() // a head that came in pieces: net/http waits for the rest
		}
		r, rt, t, client := l.take(s, buf[:end+4])
		if r == nil {
			return handOver()
		}
		c.br.Discard(end + 4)
		keep := l.answer(s, r, rt, t, client)
		if err := s.bw.Flush(); err != nil {
			return false, false
		}
		if !keep {
			return false, !s.aborted && s.w.err == nil
		}
	}
}

// take parses the request whose head is head and decides whether the
// lane answers it: a plain GET for an app. It returns a nil request when the request is
// net/http's; then nothing was consumed, sent or counted.
func (l *lane) take(s *laneState, head []byte) (*http.Request, *route, *table, netip.Addr) {
	s.head.Reset(head)
	s.parse.Reset(&s.head)
	r, err := http.ReadRequest(s.parse)
	// The head must end exactly where the lane thinks it does: a bare-LF
	// blank line ends it earlier for net/http's parser, and the lane must
	// never consume bytes of the next request.
	if err != nil || s.head.Len()+s.parse.Buffered() != 0 || !laneRequest(r, head) {
		return nil, nil, nil, netip.Addr{}
	}
	t := l.e.routes.Load()
	client := t.realIP.client(r, s.peer)
	if s.base == nil || client != s.client {
		ctx := context.WithValue(l.base, http.LocalAddrContextKey, s.c.LocalAddr())
		ctx = context.WithValue(ctx, clientKey{}, client)
		s.base, s.client = context.WithValue(ctx, watchKey{}, s), client
	}
	r.RemoteAddr = s.remote
	r.TLS = s.c.state
	rt := t.hosts[host(r)]
	if rt == nil {
		return nil, nil, nil, netip.Addr{} // moat's own pages, or none: net/http's
	}
	return r, rt, t, client
}

type watchKey struct{}

// watchClient watches the client of a request in the lane while the app
// is asked, so that its leaving cancels the request's context, as
// net/http's background read does for the requests it serves; stop ends
// the watch. Only the lane's request itself is watched: a context derived
// from it (the cache's fetch, which outlives its client on purpose) is
// not.
func watchClient(r *http.Request) (stop func()) {
	ctx := r.Context()
	if s, ok := ctx.Value(watchKey{}).(*laneState); ok && ctx == s.reqCtx {
		return s.watch()
	}
	return func() {}
}

// watch reads ahead on the connection: the client closing the connection
// (or resetting it) cancels the request. A pipelined request that arrives
// meanwhile ends the watch and stays buffered for the loop.
func (s *laneState) watch() (stop func()) {
	cancel := s.cancel
	s.l.mu.Lock()
	if !s.l.closing {
		s.c.SetReadDeadline(time.Time{}) // an answer may stream for longer than the idle timeout
	}
	s.l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.c.br.Peek(1); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() { // a timeout is stop, or the lane closing
				cancel()
			}
		}
	}()
	return func() {
		s.c.SetReadDeadline(time.Unix(1, 0))
		<-done
	}
}

// answer runs the app's chain for r, as Edge.ServeHTTP does, into the
// lane's writer; false means the connection must close (the answer broke
// off, or asked for it).
func (l *lane) answer(s *laneState, r *http.Request, rt *route, t *table, client netip.Addr) (keep bool) {
	start := time.Now()
	l.answered.Add(1)
	s.reqCtx, s.cancel = context.WithCancel(s.base)
	defer s.cancel()
	s.aborted = false
	r = r.WithContext(s.reqCtx)
	s.w.reset(s.bw, s.date.now(start))
	s.rec = recorder{ResponseWriter: &s.w}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				l.e.log.Error("panic serving a request", "from", s.remote, "panic", fmt.Sprint(p), "stack", string(buf))
			}
			keep, s.aborted = false, true
		}
	}()
	rt.handler.ServeHTTP(&s.rec, r)
	keep = s.w.finish()
	l.e.finish(t, r, &s.rec, rt, client, start)
	return keep
}

// laneRequest reports whether r, as parsed, is one the lane may answer:
// what net/http's server would accept (it checks these after parsing), an
// HTTP/1.1 GET for a path, with no body and nothing that asks for more
// than one answer.
func laneRequest(r *http.Request, head []byte) bool {
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close ||
		r.ContentLength != 0 || len(r.TransferEncoding) != 0 || r.URL.Host != "" || !strings.HasPrefix(r.RequestURI, "/") {
		return false
	}
	// http.ReadRequest moves Host out of the header; net/http's server
	// refuses a request with none or several.
	if hostLines(head) != 1 || !httpguts.ValidHostHeader(r.Host) {
		return false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
		switch k {
		case "Expect", "Upgrade", "Content-Length", "Transfer-Encoding":
			return false // 100-continue and upgrades are net/http's
		}
	}
	return true
}

// hostLines counts the Host fields of a request head.
func hostLines(head []byte) int {
	n := 0
	for line := range bytes.SplitSeq(head, []byte("\n")) {
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			n++
		}
	}
	return n
}

// laneHold is how much of a body the lane holds back before it sends the
// head: an answer that ends within it gets a Content-Length, a longer one
// is sent chunked as it comes (net/http holds 2 KiB).
const laneHold = 4 << 10

// laneWriter writes one answer in the lane as net/http's server writes
// it: 1xx answers at once; the status line and header, with Date, a
// Content-Length or chunked framing, and a sniffed Content-Type when the
// answer has none, when the body outgrows laneHold, on Flush, or at the
// end; trailers (announced in Trailer, or http.TrailerPrefix) after a
// chunked body.
type laneWriter struct {
	bw       *bufio.Writer
	date     []byte
	hdr      http.Header
	code     int      // the final status; 0 before WriteHeader or Write
	sent     bool     // the head is written
	chunked  bool     // the body is sent in chunks
	length   int64    // the Content-Length the handler set, or -1
	written  int64    // body bytes sent
	declared []string // trailer names the Trailer header announced
	held     []byte   // body held back before the head is sent
	close    bool     // the connection cannot carry another request
	err      error    // the first write error
}

func (w *laneWriter) reset(bw *bufio.Writer, date []byte) {
	clear(w.hdr)
	*w = laneWriter{bw: bw, date: date, hdr: w.hdr, held: w.held[:0], declared: w.declared[:0], length: -1}
}

func (w *laneWriter) Header() http.Header { return w.hdr }

func (w *laneWriter) WriteHeader(code int) {
	if w.code != 0 {
		return // superfluous, as net/http says
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.code = code
}

// informational sends a 1xx answer with the header as it stands.
func (w *laneWriter) informational(code int) {
	if w.err != nil {
		return
	}
	w.statusLine(code)
	for k, vv := range w.hdr {
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		w.fields(k, vv)
	}
	w.bw.WriteString("\r\n")
	w.err = w.bw.Flush()
}

func (w *laneWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !bodyAllowed(w.code) {
		return 0, http.ErrBodyNotAllowed
	}
	if !w.sent {
		if cl, ok := w.hdr["Content-Length"]; ok {
			if n, err := strconv.ParseInt(textproto.TrimString(first(cl)), 10, 64); err == nil && int64(len(w.held)+len(p)) > n {
				return 0, http.ErrContentLength // as net/http: more than announced
			}
		}
		if len(w.held)+len(p) <= laneHold {
			w.held = append(w.held, p...)
			return len(p), nil
		}
		w.sniff(p)
		w.sendHead(false)
	}
	return w.body(p)
}

// sniff sets the Content-Type from the first bytes of the body (those held
// and then p), as net/http does, unless the answer has one or is encoded.
func (w *laneWriter) sniff(p []byte) {
	if _, ok := w.hdr["Content-Type"]; ok || !bodyAllowed(w.code) || w.hdr.Get("Content-Encoding") != "" {
		return
	}
	start := w.held
	if len(start) < 512 && len(p) > 0 {
		start = append(start[:len(start):len(start)], p[:min(len(p), 512-len(start))]...)
	}
	if len(start) > 0 {
		w.hdr["Content-Type"] = []string{http.DetectContentType(start)}
	}
}

// FlushError sends what is held and written so far.
func (w *laneWriter) FlushError() error {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHead(false)
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return w.err
}

func (w *laneWriter) Flush() { w.FlushError() }

// finish ends the answer; it reports whether the connection can carry
// another request.
func (w *laneWriter) finish() bool {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if !w.sent {
		w.sendHead(true)
	}
	if w.chunked && w.err == nil {
		w.bw.WriteString("0\r\n")
		for _, k := range w.declared {
			if vv, ok := w.hdr[k]; ok {
				w.fields(k, vv)
			}
		}
		for k, vv := range w.hdr {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				w.fields(http.CanonicalHeaderKey(name), vv)
			}
		}
		_, w.err = w.bw.WriteString("\r\n")
	}
	if w.length >= 0 && w.written != w.length {
		w.close = true // the answer fell short of its Content-Length
	}
	return w.err == nil && !w.close
}

// sendHead writes the status line and header; final says the handler is
// done, so a held body's length is known.
func (w *laneWriter) sendHead(final bool) {
	w.sent = true
	code, h := w.code, w.hdr
	allowed := bodyAllowed(code)
	trailers := false
	for _, v := range h["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				w.declared = append(w.declared, http.CanonicalHeaderKey(name))
				trailers = true
			}
		}
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
		}
	}
	w.sniff(nil)
	delete(h, "Transfer-Encoding") // the lane frames the body itself
	if code == http.StatusNotModified {
		delete(h, "Content-Type") // as net/http: a 304 describes no body
		delete(h, "Content-Length")
	}
	if cl, ok := h["Content-Length"]; ok && allowed {
		n, err := strconv.ParseInt(textproto.TrimString(first(cl)), 10, 64)
		if err != nil || n < 0 {
			delete(h, "Content-Length")
		} else {
			w.length = n
		}
	}
	if w.err != nil {
		return
	}
	w.statusLine(code)
	if allowed && w.length < 0 {
		if final && !trailers {
			w.bw.WriteString("Content-Length: ")
			var num [20]byte
			w.bw.Write(strconv.AppendInt(num[:0], int64(len(w.held)), 10))
			w.bw.WriteString("\r\n")
		} else {
			w.chunked = true
			w.bw.WriteString("Transfer-Encoding: chunked\r\n")
		}
	}
	if _, ok := h["Date"]; !ok {
		w.bw.WriteString("Date: ")
		w.bw.Write(w.date)
		w.bw.WriteString("\r\n")
	}
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || (!allowed && (k == "Content-Length")) {
			continue
		}
		w.fields(k, vv)
	}
	if headerHasToken(h["Connection"], "close") {
		w.close = true
	}
	if _, err := w.bw.WriteString("\r\n"); err != nil {
		w.err = err
		return
	}
	if allowed && len(w.held) > 0 {
		held := w.held
		w.held = w.held[:0]
		w.body(held)
	}
}

// body sends body bytes, framed.
func (w *laneWriter) body(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		w.close = true
		return 0, http.ErrContentLength
	}
	if w.chunked {
		var num [16]byte
		w.bw.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
		w.bw.WriteString("\r\n")
	}
	n, err := w.bw.Write(p)
	if err == nil && w.chunked {
		_, err = w.bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

func (w *laneWriter) statusLine(code int) {
	var num [3]byte
	w.bw.WriteString("HTTP/1.1 ")
	w.bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	w.bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		w.bw.WriteString(text)
	} else {
		w.bw.WriteString("status code " + strconv.Itoa(code))
	}
	w.bw.WriteString("\r\n")
}

// fields writes the lines of one header field as net/http does: line
// breaks in a value turned into spaces, outer blanks trimmed.
func (w *laneWriter) fields(k string, vv []string) {
	for _, v := range vv {
		if strings.ContainsAny(v, "\r\n") {
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
		}
		w.bw.WriteString(k)
		w.bw.WriteString(": ")
		w.bw.WriteString(textproto.TrimString(v))
		w.bw.WriteString("\r\n")
	}
}

// bodyAllowed reports whether an answer with this status may have a body
// (RFC 9110, section 6.4.1).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func first(vv []string) string {
	if len(vv) == 0 {
		return ""
	}
	return vv[0]
}

// dateCache formats the Date header once a second.
type dateCache struct {
	sec int64
	buf []byte
}

func (d *dateCache) now(t time.Time) []byte {
	if s := t.Unix(); s != d.sec || d.buf == nil {
		d.sec = s
		d.buf = t.UTC().AppendFormat(d.buf[:0], http.TimeFormat)
	}
	return d.buf
}

// handoffListener is how connections reach net/http's server: the lane
// gives them, the server accepts them.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoffListener) give(c net.Conn) {
	select {
	case h.conns <- c:
	case <-h.done:
		c.Close()
	}
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return h.addr }
