// Package edge is moat's HTTPS front door: it listens on the HTTP and HTTPS
// ports, redirects HTTP to HTTPS (but for ACME challenges), routes each
// request by Host to its app's upstream, and adds the security headers.
//
// Certificates come from a CertSource (ACME through package certs, or a
// local CA in demo mode); the edge only asks for them during handshakes.
// Routes change atomically without touching the listeners, so a change
// drops no connection.
package edge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"moat/internal/cache"
	"moat/internal/config"
	"moat/internal/ratelimit"
	"moat/internal/upstream"
)

// CertSource gives the edge its certificates and its ACME HTTP handler.
type CertSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// HTTPHandler answers ACME HTTP-01 challenges and passes the rest on.
	HTTPHandler(next http.Handler) http.Handler
}

// Options wire an edge to its surroundings.
type Options struct {
	Log   *slog.Logger
	Certs CertSource
	// Fallback serves hosts that are no app's, such as moat's own pages;
	// nil means 404.
	Fallback http.Handler
	// AccessLog receives one JSON line per request; nil turns it off.
	AccessLog *slog.Logger
	// Limiter keeps the rate limits' state; an in-memory one by default.
	Limiter ratelimit.Backend
	// Cache holds the apps' cached responses; 64 MiB in memory by default.
	Cache *cache.Cache
	// Metrics, when set, count requests, refusals, cache outcomes and
	// upstream latency.
	Metrics *Metrics
	// Bans, when set, refuses banned clients with 403 before the rate
	// limit.
	Bans Bans
	// Failed, when set, hears of each answer of an app with one of the
	// app's guard statuses (a failed login, for the guard to count).
	Failed func(app string, client netip.Addr, r *http.Request, status int)
	// Private, when set, puts the private apps behind moat's sign-in; a
	// private app is refused without it.
	Private Private
}

// Edge is the HTTP and HTTPS server in front of the apps.
type Edge struct {
	log       *slog.Logger
	certs     CertSource
	extra     http.Handler
	accessLog *slog.Logger
	limiter   ratelimit.Backend
	cache     *cache.Cache
	metrics   *Metrics
	bans      Bans
	failed    func(app string, client netip.Addr, r *http.Request, status int)
	private   Private
	transport *upstream.Transport
	buffers   httputil.BufferPool // copy buffers, so a response costs no 32 KiB allocation
	errorLog  *log.Logger         // for net/http's own complaints, at debug level

	routes atomic.Pointer[table]
	lane   atomic.Pointer[lane] // the HTTPS side's latest fast lane, for tests
}

// table is one immutable version of the routing table.
type table struct {
	hosts     map[string]*route
	httpsPort string // "" for 443
	defaults  headerSet
	realIP    realIP
	logOn     bool
}

type route struct {
	app     string
	guard   []int        // statuses that count as failed logins
	handler http.Handler // rate limit -> cache -> proxy (with headers)
	headers headerSet
}

// New returns an edge with no routes.
func New(o Options) *Edge {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Limiter == nil {
		o.Limiter = ratelimit.NewMemory(0)
	}
	if o.Cache == nil {
		o.Cache = cache.New(0)
	}
	e := &Edge{
		log:       o.Log.With("component", "edge"),
		certs:     o.Certs,
		extra:     withBanCheck(o.Bans, o.Fallback),
		accessLog: o.AccessLog,
		limiter:   o.Limiter,
		cache:     o.Cache,
		metrics:   o.Metrics,
		bans:      o.Bans,
		failed:    o.Failed,
		private:   o.Private,
		buffers:   &bufferPool{},
		// GET and HEAD go over moat's lean client; bodies, upgrades and
		// the rest over net/http's.
		transport: upstream.New(upstream.Options{Fallback: &http.Transport{
			Proxy:                 nil,  // never send app traffic to an environment proxy
			DisableCompression:    true, // pass the visitor's Accept-Encoding on, make none up
			DialContext:           (&net.Dialer{Timeout: upstream.DefaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   upstream.DefaultMaxIdle,
			IdleConnTimeout:       upstream.DefaultIdleTimeout,
			ResponseHeaderTimeout: 0, // long polls and streams are the app's business
			ExpectContinueTimeout: time.Second,
		}}),
	}
	e.errorLog = slog.NewLogLogger(e.log.Handler(), slog.LevelDebug)
	e.routes.Store(&table{hosts: map[string]*route{}, defaults: newHeaderSet(nil)})
	return e
}

// Load builds a routing table from the state and swaps it in. Requests
// under way finish on the table they started with.
func (e *Edge) Load(s config.State) error {
	t := &table{hosts: map[string]*route{}, defaults: newHeaderSet(nil), realIP: newRealIP(s.Server), logOn: s.Server.AccessLog != "off"}
	if _, port, err := net.SplitHostPort(s.Server.HTTPSAddr()); err == nil && port != "443" {
		t.httpsPort = port
	}
	limits, err := newLimits(s.Server)
	if err != nil {
		return err
	}
	for i, a := range s.Apps {
		up, err := url.Parse(a.Upstream)
		if err != nil {
			return fmt.Errorf("app %s: upstream %q: %w", a.Name, a.Upstream, err)
		}
		r := &route{app: a.Name, headers: newHeaderSet(a.Headers), guard: a.GuardStatuses}
		// The chain of one app, outermost first: ban check, rate limit,
		// cache (or, for a private app, the sign-in gate), proxy (which
		// adds the security headers to what the app answers).
		var h http.Handler = e.newProxy(r, up)
		if a.Private() {
			// A private app's pages are each visitor's own: none is
			// cached.
			if e.private == nil {
				return fmt.Errorf("app %s is private, and this edge has no sign-in gate", a.Name)
			}
			h = e.private(a, h)
		} else {
			h = e.cache.Handler(cacheScope(a), cache.Config{TTL: a.CacheTTL(), AllowCookies: a.Cache.AllowCookies, HideXCache: a.Cache.HideXCache}, h)
		}
		policy, err := limits.policy(uint32(i+1), a.RateLimit)
		if err != nil {
			return fmt.Errorf("app %s: %w", a.Name, err)
		}
		if policy != nil {
			h = ratelimit.Middleware(e.limiter, policy, h)
		}
		if e.bans != nil {
			h = banCheck(e.bans, h)
		}
		r.handler = h
		for _, d := range a.Domains {
			t.hosts[d] = r
		}
	}
	e.routes.Store(t)
	return nil
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// host is the request's host name, lowercased, without port or final dot.
func host(r *http.Request) string {
	h := r.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// ServeHTTP is the HTTPS side: the chain a request takes, top to bottom.
// real client IP -> route by host -> the app's chain (rate limit, cache,
// proxy with security headers), with the access log and metrics around it.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t := e.routes.Load()
	client := t.realIP.client(r, peerAddr(r))
	r = r.WithContext(context.WithValue(r.Context(), clientKey{}, client))
	if r.TLS == nil {
		r.TLS = laneTLS(r.Context()) // a connection that started in the fast lane
	}
	rec := &recorder{ResponseWriter: w}
	rt := t.hosts[host(r)]
	switch {
	case rt != nil:
		rt.handler.ServeHTTP(rec, r)
	case e.extra != nil:
		t.defaults.apply(rec.Header())
		e.extra.ServeHTTP(rec, r)
	default:
		t.defaults.apply(rec.Header())
		plain(rec, http.StatusNotFound, "404 Not Found: no app is configured for this address.")
	}
	e.finish(t, r, rec, rt, client, start)
}

// finish counts a request that has been answered (by rt's app, or by no
// app when rt is nil), logs it, and tells the guard of a failed login.
func (e *Edge) finish(t *table, r *http.Request, rec *recorder, rt *route, client netip.Addr, start time.Time) {
	app := ""
	if rt != nil {
		app = rt.app
		// The edge's own 403 to a banned client is no failed login.
		if e.failed != nil && len(rt.guard) > 0 && slices.Contains(rt.guard, rec.status) && (e.bans == nil || !e.bans.Banned(client)) {
			e.failed(app, client, r, rec.status)
		}
	}
	e.metrics.observe(app, rec)
	if e.accessLog != nil && t.logOn {
		logAccess(e.accessLog, r, rec, app, client.String(), time.Since(start))
	}
}

// redirect is the HTTP side: everything moves to HTTPS, path and query
// kept; the certs handler in front of it answers ACME challenges.
func (e *Edge) redirect(w http.ResponseWriter, r *http.Request) {
	t := e.routes.Load()
	h := host(r)
	if t.hosts[h] == nil && e.extra == nil {
		plain(w, http.StatusNotFound, "404 Not Found: no app is configured for this address.")
		return
	}
	target := "https://" + h
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		target = "https://[" + h + "]" // an IPv6 literal whose port host() took off
	}
	if t.httpsPort != "" {
		target += ":" + t.httpsPort
	}
	target += r.URL.RequestURI()
	w.Header().Set("Location", target)
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusPermanentRedirect)
}

// TLSConfig is the HTTPS listener's TLS: 1.2 and 1.3 only, AEAD suites
// with forward secrecy, certificates from the CertSource.
func (e *Edge) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{ // TLS 1.2 only; 1.3 suites are all AEAD
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos:     []string{"h2", "http/1.1", "acme-tls/1"},
		GetCertificate: e.certs.GetCertificate,
	}
}

// Serve runs the HTTP side on httpLn (may be nil) and the HTTPS side on
// httpsLn until ctx ends, then shuts both down gracefully.
func (e *Edge) Serve(ctx context.Context, httpLn, httpsLn net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- e.ServeListener(ctx, httpsLn, true) }()
	if httpLn == nil {
		return <-errc
	}
	go func() { errc <- e.ServeListener(ctx, httpLn, false) }()
	err := <-errc
	cancel() // one side ended: stop the other too
	return errors.Join(err, <-errc)
}

// ServeListener serves one side on ln until ctx ends, then shuts down
// gracefully: the HTTPS side when secure, else the HTTP side (ACME
// challenges and the redirect). The daemon runs each side on its own so
// that moving one port leaves the other's connections alone.
func (e *Edge) ServeListener(ctx context.Context, ln net.Listener, secure bool) error {
	s := &http.Server{
		Handler:           e.certs.HTTPHandler(http.HandlerFunc(e.redirect)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          e.errorLog,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if !secure {
		errc := make(chan error, 1)
		go func() { errc <- s.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("edge: %w", err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			s.Shutdown(sctx)
			return nil
		}
	}
	// The HTTPS side: the lane takes every connection first and gives
	// net/http those it does not keep (see lane).
	s.Handler = e
	s.TLSConfig = e.TLSConfig()
	s.ConnContext = laneContext
	l := &lane{e: e, cfg: s.TLSConfig.Clone(), base: context.WithValue(s.BaseContext(ln), http.ServerContextKey, s), handoff: newHandoff(ln.Addr()), idle: s.IdleTimeout, headerTimeout: s.ReadHeaderTimeout, conns: map[*tls.Conn]struct{}{}}
	e.lane.Store(l)
	errc := make(chan error, 2)
	go func() { errc <- s.Serve(l.handoff) }()
	go func() { errc <- l.serve(ln) }()
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("edge: %w", err)
	case <-ctx.Done():
	}
	// Both halves stop together, within one grace period: connections
	// waiting in the lane or in their handshake are closed, requests under
	// way on either finish.
	ln.Close()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	laneDone := make(chan struct{})
	go func() {
		l.close(sctx)
		close(laneDone)
	}()
	s.Shutdown(sctx) // closes the handoff listener too
	<-laneDone
	return err
}

// shutdownGrace bounds how long a side waits for its requests under way
// when it stops.
const shutdownGrace = 10 * time.Second

// cacheScope keys an app's cache entries on its whole config, so that a
// changed app (headers, upstream) never serves what the old one stored.
func cacheScope(a config.App) string {
	b, _ := json.Marshal(a)
	sum := sha256.Sum256(b)
	return a.Name + "@" + hex.EncodeToString(sum[:8])
}

// bufferPool reuses the proxy's copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
