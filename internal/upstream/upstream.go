// Package upstream is the edge's HTTP/1.1 client to the apps behind it.
//
// It answers the common case itself: a GET or HEAD without a body, over a
// pooled keep-alive connection, written with one system call and read on
// the caller's goroutine. net/http's Transport runs two goroutines per
// connection and hands every request and response between them; on one
// core that costs a third of what proxying an uncacheable page costs.
// Everything else (request bodies, protocol upgrades, other methods, HTTPS
// upstreams) goes to a fallback RoundTripper, normally an *http.Transport.
//
// Responses are parsed by net/http (http.ReadResponse), so framing,
// chunked bodies and malformed answers are handled as net/http handles them.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for a Transport's zero fields.
const (
	DefaultIdleTimeout = 90 * time.Second
	DefaultMaxIdle     = 256
	DefaultDialTimeout = 10 * time.Second
)

// Transport is an http.RoundTripper with a pool of idle connections per
// upstream address. The zero value is not usable; use New.
type Transport struct {
	fallback    http.RoundTripper
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	idleTimeout time.Duration
	maxIdle     int

	mu     sync.Mutex
	idle   map[string][]*conn // per host:port, most recently used last
	closed bool
	timer  *time.Timer // closes connections idle for longer than idleTimeout
}

// Options configure a Transport; zero fields take the defaults.
type Options struct {
	// Fallback carries the requests this transport does not handle
	// itself. Required.
	Fallback http.RoundTripper
	// Dial opens connections; a net.Dialer with DefaultDialTimeout and
	// TCP keep-alives by default.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// IdleTimeout closes connections that have been idle this long.
	IdleTimeout time.Duration
	// MaxIdle bounds the idle connections kept per upstream.
	MaxIdle int
}

// New returns a Transport.
func New(o Options) *Transport {
	if o.Dial == nil {
		o.Dial = (&net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = DefaultMaxIdle
	}
	return &Transport{fallback: o.Fallback, dial: o.Dial, idleTimeout: o.IdleTimeout, maxIdle: o.MaxIdle, idle: map[string][]*conn{}}
}

// conn is one keep-alive connection to an upstream.
type conn struct {
	net.Conn
	host string
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it last went idle
}

// handles reports whether the request is one this transport serves itself.
func handles(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		r.URL.Scheme == "http" && r.URL.Host != "" &&
		(r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 &&
		r.Header["Upgrade"] == nil && r.Header["Transfer-Encoding"] == nil && r.Header["Content-Length"] == nil &&
		len(r.Trailer) == 0
}

// RoundTrip sends one request and returns its response; the response's
// body gives the connection back to the pool when it has been read to the
// end and closed.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !handles(r) {
		return t.fallback.RoundTrip(r)
	}
	if err := checkHeader(r.Header); err != nil {
		return nil, err
	}
	var on1xx func(int, http.Header) error
	if trace := httptrace.ContextClientTrace(r.Context()); trace != nil && trace.Got1xxResponse != nil {
		on1xx = func(code int, h http.Header) error { return trace.Got1xxResponse(code, textproto.MIMEHeader(h)) }
	}
	return t.do(r, r.URL.Host, func(bw *bufio.Writer) error { return writeRequest(bw, r) }, on1xx, true)
}

// Do sends a GET or HEAD without a body to addr (host:port, or a host for
// port 80) on a pooled connection: write puts the request's head into bw,
// which Do then flushes. r gives the context and the method; its response
// is parsed as net/http parses one. on1xx, when not nil, receives the
// informational answers (103 Early Hints) before the final one.
//
// The response's body gives the connection back to the pool when it has
// been read to the end and closed. The connection is kept unless the app
// closes it: r.Close (the visitor's Connection: close) is about the
// visitor's connection, not this one.
func (t *Transport) Do(r *http.Request, addr string, write func(bw *bufio.Writer) error, on1xx func(code int, h http.Header) error) (*http.Response, error) {
	return t.do(r, addr, write, on1xx, false)
}

// do is Do; closeAfter says that write asked the app to close the
// connection when r.Close is set (RoundTrip's writeRequest does).
func (t *Transport) do(r *http.Request, addr string, write func(bw *bufio.Writer) error, on1xx func(code int, h http.Header) error, closeAfter bool) (*http.Response, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return nil, fmt.Errorf("upstream: Do sends GET and HEAD, not %s", r.Method)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "80") // "[::1]" too
	}
	ctx := r.Context()
	// A reused connection may have been closed by the app while it sat
	// idle; that shows only when the answer does not come. GET and HEAD
	// are safe to send again, once, on a new connection (not on another
	// pooled one: after a restart of the app they are all stale).
	for attempt := 0; ; attempt++ {
		c, reused, err := t.get(ctx, addr, attempt == 0)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(ctx, c, r, write, on1xx, closeAfter)
		if err == nil {
			return resp, nil
		}
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !reused || attempt > 0 || !retryable(err) {
			return nil, err
		}
	}
}

// max1xx bounds the informational answers before the final one, as
// net/http's Transport does.
const max1xx = 5

// errNothingRead marks a failure before any byte of an answer came.
type errNothingRead struct{ err error }

func (e errNothingRead) Error() string { return e.err.Error() }
func (e errNothingRead) Unwrap() error { return e.err }

func retryable(err error) bool {
	var n errNothingRead
	return errors.As(err, &n)
}

// exchange writes the request on c and reads the head of its response.
func (t *Transport) exchange(ctx context.Context, c *conn, r *http.Request, write func(*bufio.Writer) error, on1xx func(int, http.Header) error, closeAfter bool) (*http.Response, error) {
	// Cancelling the request unblocks the connection's reads and writes;
	// the connection is not reused after that.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		return nil, err
	}
	if err := write(c.bw); err != nil {
		return fail(fmt.Errorf("upstream %s: request: %w", c.host, err)) // the request itself is wrong: no retry
	}
	if err := c.bw.Flush(); err != nil {
		return fail(errNothingRead{fmt.Errorf("upstream %s: write request: %w", c.host, err)})
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(errNothingRead{fmt.Errorf("upstream %s: read response: %w", c.host, err)})
	}
	for informational := 0; ; informational++ {
		resp, err := http.ReadResponse(c.br, r)
		if err != nil {
			return fail(fmt.Errorf("upstream %s: read response: %w", c.host, err))
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if informational == max1xx {
				return fail(fmt.Errorf("upstream %s: more than %d informational (1xx) answers", c.host, max1xx))
			}
			// Informational answers (103 Early Hints) go to whoever
			// asked for them; the final answer follows.
			if on1xx != nil {
				if err := on1xx(resp.StatusCode, resp.Header); err != nil {
					return fail(err)
				}
			}
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(fmt.Errorf("upstream %s: answered 101 Switching Protocols to a request that asked for no upgrade", c.host))
		}
		reuse := !resp.Close && !(closeAfter && r.Close)
		resp.Body = &body{ReadCloser: resp.Body, t: t, c: c, reuse: reuse, stop: stop}
		return resp, nil
	}
}

// body hands the connection back when the response has been read whole.
type body struct {
	io.ReadCloser
	t     *Transport
	c     *conn
	reuse bool
	eof   bool
	done  bool
	stop  func() bool // false once the request's cancellation has touched the connection
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("upstream: read after close")
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if b.stop() && b.eof && b.reuse && b.c.br.Buffered() == 0 {
		b.ReadCloser.Close()
		b.t.put(b.c)
		return nil
	}
	// net/http's body reads what is left of the answer when closed, which
	// may never end (a stream, a stalled app); with the connection closed
	// first, that read fails at once.
	err := b.c.Close()
	b.ReadCloser.Close()
	return err
}

// get returns an idle connection to addr, if pooled, or dials one.
func (t *Transport) get(ctx context.Context, addr string, pooled bool) (*conn, bool, error) {
	for pooled {
		c := t.takeIdle(addr)
		if c == nil {
			break
		}
		if c.quiet() {
			return c, true, nil
		}
		c.Close()
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, false, errors.New("upstream: transport closed")
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("upstream %s: %w", addr, err)
	}
	return &conn{Conn: nc, host: addr, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}, false, nil
}

// takeIdle takes the most recently used idle connection to addr that has
// not been idle too long, or returns nil.
func (t *Transport) takeIdle(addr string) *conn {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		list := t.idle[addr]
		if len(list) == 0 {
			return nil
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		if now.Sub(c.used) < t.idleTimeout {
			return c
		}
		c.Close()
	}
}

// quiet reports whether an idle connection is as it was left: the app
// has neither closed it nor sent anything unasked (a stray body after a
// HEAD or 204, a 408 on its idle timeout). Bytes that came unasked would
// otherwise be read as the answer to the next request, someone else's.
func (c *conn) quiet() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return true // not a socket (tests): nothing to look at
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		quiet = n < 0 && (rerr == unix.EAGAIN || rerr == unix.EWOULDBLOCK)
		return true
	})
	return err == nil && quiet
}

// put keeps c for the next request, unless the pool is full or closed.
func (t *Transport) put(c *conn) {
	if err := c.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return
	}
	c.used = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.idle[c.host]) >= t.maxIdle {
		c.Close()
		return
	}
	t.idle[c.host] = append(t.idle[c.host], c)
	if t.timer == nil {
		t.timer = time.AfterFunc(t.idleTimeout, t.sweep)
	}
}

// sweep closes the connections that have been idle too long, and runs
// again while any remain.
func (t *Transport) sweep() {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, list := range t.idle {
		keep := list[:0]
		for _, c := range list {
			if now.Sub(c.used) >= t.idleTimeout {
				c.Close()
				continue
			}
			keep = append(keep, c)
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = keep
		}
	}
	t.timer = nil
	if len(t.idle) > 0 && !t.closed {
		t.timer = time.AfterFunc(t.idleTimeout/2, t.sweep)
	}
}

// CloseIdleConnections closes the idle connections of this transport and
// of its fallback.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	for addr, list := range t.idle {
		for _, c := range list {
			c.Close()
		}
		delete(t.idle, addr)
	}
	t.mu.Unlock()
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// Close closes the idle connections and keeps new ones from being pooled.
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	t.mu.Unlock()
	t.CloseIdleConnections()
}

// idleCount is how many connections wait in the pool for addr.
func (t *Transport) idleCount(addr string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.idle[addr])
}
