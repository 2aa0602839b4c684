// Package certs keeps a certificate for every domain moat serves: it checks
// that a domain's DNS reaches this server before placing an order, obtains
// and renews certificates over ACME (HTTP-01 and TLS-ALPN-01) through
// certmagic, and says per domain where things stand.
//
// It does not route requests or listen on ports: the edge asks it for
// certificates during handshakes and hands it ACME challenge requests.
package certs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"

	"moat/internal/config"
)

// State is where a domain's certificate stands.
type State string

// The states of a domain's certificate.
const (
	WaitingDNS    State = "waiting-dns"    // held back: DNS does not reach this server yet
	Issuing       State = "issuing"        // an order is under way
	Valid         State = "valid"          // a certificate serves
	Failed        State = "failed"         // issuance failed; retrying
	RenewalFailed State = "renewal-failed" // the old certificate serves; retrying
)

// Status is one domain's certificate status.
type Status struct {
	Domain string `json:"domain"`
	State  State  `json:"state"`
	// Message says in plain words what is wrong and how to fix it.
	Message   string    `json:"message,omitempty"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	NextRetry time.Time `json:"next_retry,omitzero"`
	Since     time.Time `json:"since"`
}

func (s Status) String() string {
	switch s.State {
	case Valid:
		out := fmt.Sprintf("valid until %s", s.NotAfter.UTC().Format(time.RFC3339))
		if s.Message != "" {
			out += ", " + s.Message // from the owner's files
		}
		return out
	case Issuing:
		return "issuing"
	}
	out := string(s.State)
	if s.Message != "" {
		out += ": " + s.Message
	}
	if !s.NotAfter.IsZero() {
		out += fmt.Sprintf(" (current certificate valid until %s)", s.NotAfter.UTC().Format(time.RFC3339))
	}
	if !s.NextRetry.IsZero() {
		out += fmt.Sprintf("; next try %s", s.NextRetry.UTC().Format(time.RFC3339))
	}
	return out
}

// Event is a change worth keeping in the activity log or alerting on.
type Event struct {
	Domain string
	// Kind is issued, renewed, issue-failed, renewal-failed or waiting-dns.
	Kind    string
	Message string
	Alert   bool // a person should hear of it
}

// Options wires a Manager to its surroundings. Zero values are defaults.
type Options struct {
	// Dir holds certificates, keys and ACME accounts.
	Dir    string
	Logger *slog.Logger
	// OnEvent receives issuance and renewal outcomes.
	OnEvent func(Event)
	// RenewCheckInterval is how often certificates are checked for
	// renewal; 10 minutes by default.
	RenewCheckInterval time.Duration
	// Backoff is the wait before attempt n+1 (n from 0) of a held or
	// failed issuance; 30s doubling up to 6h by default.
	Backoff func(n int) time.Duration
	// Dial reaches other hosts for the DNS pre-check's HTTP probe; a
	// net.Dialer by default.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// LocalAddrs lists this machine's addresses when server.public_ips is
	// empty; the global unicast addresses of its interfaces by default.
	LocalAddrs func() []netip.Addr
	// FileCheckInterval is how often the owner's certificate files are
	// looked at for a change; 5 seconds by default.
	FileCheckInterval time.Duration
}

// Manager keeps certificates for a changing set of domains.
//
// Locking: mu guards only the Manager's own maps and is never held while
// calling certmagic, whose cache calls back into the Manager under its own
// lock; the current certmagic config is an atomic pointer for that reason.
type Manager struct {
	opts  Options
	log   *slog.Logger
	cache *certmagic.Cache
	acme  atomic.Pointer[acmeState]
	// ctx lives as long as the Manager; workers derive from it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	workers  map[string]context.CancelFunc
	status   map[string]*Status
	allowed  map[string]bool
	probes   map[string]string // token -> domain
	failures map[string]int    // consecutive renewal failures
	files    map[string]*fileCert
}

// acmeState is one version of the ACME settings with the certmagic config
// built from them.
type acmeState struct {
	cfg      *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	settings config.Server
	// public lists server.public_ips, parsed.
	public []netip.Addr
}

// New returns a Manager with no domains. Call Sync to give it some and
// Close to stop it.
func New(opts Options) (*Manager, error) {
	if opts.Dir == "" {
		return nil, errors.New("certs: no storage directory")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnEvent == nil {
		opts.OnEvent = func(Event) {}
	}
	if opts.RenewCheckInterval <= 0 {
		opts.RenewCheckInterval = 10 * time.Minute
	}
	if opts.Backoff == nil {
		opts.Backoff = func(n int) time.Duration {
			d := 30 * time.Second << min(n, 10)
			return min(d, 6*time.Hour)
		}
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	if opts.LocalAddrs == nil {
		opts.LocalAddrs = globalAddrs
	}
	if opts.FileCheckInterval <= 0 {
		opts.FileCheckInterval = 5 * time.Second
	}
	m := &Manager{
		opts:     opts,
		log:      opts.Logger.With("component", "certs"),
		workers:  map[string]context.CancelFunc{},
		status:   map[string]*Status{},
		allowed:  map[string]bool{},
		probes:   map[string]string{},
		failures: map[string]int{},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			if st := m.acme.Load(); st != nil {
				return st.cfg, nil
			}
			return nil, errors.New("certs: not configured yet")
		},
		RenewCheckInterval: opts.RenewCheckInterval,
		Logger:             zapToSlog(m.log),
	})
	m.wg.Add(1)
	go m.watchFiles(opts.FileCheckInterval)
	return m, nil
}

// Close stops renewals and pending issuance, and waits for them.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.cache.Stop()
}

// Check reports whether settings can be used, without changing anything:
// the CA roots file must load.
func Check(s config.Server) error {
	_, err := loadRoots(s.ACME.CARoots)
	return err
}

func loadRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server.acme.ca_roots: %w: give the path of a readable PEM file", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("server.acme.ca_roots: %q holds no PEM certificate: give a file with the CA's root in PEM", path)
	}
	return pool, nil
}

// Sync makes the managed set the given domains under the given settings:
// new domains start issuance (after the DNS pre-check), removed ones stop
// renewing and no longer get a certificate in a handshake. The domains of
// files are served from the owner's certificate files and place no
// order. It fails, with nothing changed, when the CA roots file or a
// certificate from files cannot be loaded.
func (m *Manager) Sync(_ context.Context, s config.Server, domains []string, files []config.CertFile) error {
	roots, err := loadRoots(s.ACME.CARoots)
	if err != nil {
		return err
	}
	if err := m.syncFiles(files); err != nil {
		return err
	}
	fromFiles := map[string]bool{}
	for _, f := range files {
		fromFiles[f.Domain] = true
	}
	domains = slices.DeleteFunc(slices.Clone(domains), func(d string) bool { return fromFiles[d] })
	cur := m.acme.Load()
	st := cur
	if cur == nil || !sameACME(cur.settings, s) {
		st = m.newACME(s, roots)
	} else {
		st = &acmeState{cfg: cur.cfg, issuer: cur.issuer, settings: s}
	}
	for _, ip := range s.PublicIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			st.public = append(st.public, a.Unmap())
		}
	}
	restart := st.cfg != cur.cfgOrNil()
	m.acme.Store(st)

	want := map[string]bool{}
	for _, d := range domains {
		want[d] = true
	}
	m.mu.Lock()
	var gone []certmagic.SubjectIssuer
	for d, cancel := range m.workers {
		if !want[d] || restart {
			cancel()
			delete(m.workers, d)
		}
	}
	for d := range m.allowed {
		if !want[d] {
			delete(m.status, d)
			delete(m.failures, d)
			gone = append(gone, certmagic.SubjectIssuer{Subject: d})
		}
	}
	m.allowed = want
	for d := range want {
		if _, running := m.workers[d]; running {
			continue
		}
		wctx, cancel := context.WithCancel(m.ctx)
		m.workers[d] = cancel
		m.wg.Add(1)
		go m.manage(wctx, st, d)
	}
	m.mu.Unlock()
	if len(gone) > 0 {
		m.cache.RemoveManaged(gone) // takes the cache's lock: never under mu
	}
	return nil
}

func (st *acmeState) cfgOrNil() *certmagic.Config {
	if st == nil {
		return nil
	}
	return st.cfg
}

func sameACME(a, b config.Server) bool {
	return a.ACME.DirectoryURL() == b.ACME.DirectoryURL() && a.ACME.CARoots == b.ACME.CARoots &&
		slices.Equal(a.ACME.Challenges, b.ACME.Challenges) && a.Email == b.Email &&
		a.HTTPAddr() == b.HTTPAddr() && a.HTTPSAddr() == b.HTTPSAddr()
}

func (m *Manager) newACME(s config.Server, roots *x509.CertPool) *acmeState {
	logger := zapToSlog(m.log)
	cfg := certmagic.New(m.cache, certmagic.Config{
		Storage:   &certmagic.FileStorage{Path: m.opts.Dir},
		KeySource: certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		OnEvent:   m.onEvent,
		Logger:    logger,
	})
	httpHost, httpPort := splitPort(s.HTTPAddr())
	_, httpsPort := splitPort(s.HTTPSAddr())
	iss := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:                      s.ACME.DirectoryURL(),
		Email:                   s.Email,
		Agreed:                  true,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    !s.ACME.Allows(config.ChallengeHTTP01),
		DisableTLSALPNChallenge: !s.ACME.Allows(config.ChallengeTLSALPN01),
		// The edge already listens on these; certmagic finds them taken
		// and leaves the challenges to the edge's handlers.
		ListenHost:     httpHost,
		AltHTTPPort:    httpPort,
		AltTLSALPNPort: httpsPort,
		Logger:         logger,
	})
	cfg.Issuers = []certmagic.Issuer{iss}
	return &acmeState{cfg: cfg, issuer: iss, settings: s}
}

func splitPort(addr string) (string, int) {
	host, port, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(port, &n)
	return host, n
}

// manage gets a certificate for one domain: from storage if there is a
// current one, else by an order once the DNS pre-check passes, retrying
// with backoff. Renewal is then certmagic's maintenance.
func (m *Manager) manage(ctx context.Context, st *acmeState, domain string) {
	defer m.wg.Done()
	cfg := st.cfg
	expired := false
	if cert, err := cfg.CacheManagedCertificate(ctx, domain); err == nil {
		if time.Now().Before(cert.Leaf.NotAfter) {
			m.setStatus(domain, Status{State: Valid, NotAfter: cert.Leaf.NotAfter})
			return
		}
		expired = true // it ran out while moat was down: replace it now
	}
	for attempt := 0; ; attempt++ {
		msg := m.precheck().check(ctx, domain)
		if ctx.Err() != nil {
			return // stopped: a cancelled lookup is no finding
		}
		next := time.Now().Add(m.opts.Backoff(attempt))
		if msg != "" {
			if m.setStatus(domain, Status{State: WaitingDNS, Message: msg, NextRetry: next}) {
				m.opts.OnEvent(Event{Domain: domain, Kind: "waiting-dns", Message: msg, Alert: true})
			}
		} else {
			m.setStatus(domain, Status{State: Issuing})
			var err error
			if expired {
				err = cfg.RenewCertSync(ctx, domain, true)
			} else {
				err = cfg.ManageSync(ctx, []string{domain})
			}
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				return // onEvent set the status
			}
			msg := reason(err)
			if m.setStatus(domain, Status{State: Failed, Message: msg, NextRetry: next}) {
				m.opts.OnEvent(Event{Domain: domain, Kind: "issue-failed", Message: msg, Alert: true})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

func (m *Manager) precheck() *precheck {
	st := m.acme.Load()
	s := st.settings
	res := &net.Resolver{}
	if s.Resolver != "" {
		res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, s.Resolver)
		}}
	}
	_, port := splitPort(s.HTTPAddr())
	return &precheck{
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return res.LookupNetIP(ctx, "ip", host)
		},
		server: func() []netip.Addr {
			if len(st.public) > 0 {
				return st.public
			}
			return m.opts.LocalAddrs()
		},
		probe:      httpProbe(fmt.Sprint(port), m.opts.Dial, m.probeToken),
		serverName: s.Domain,
	}
}

// probeToken makes a token the HTTP handler will answer for the domain
// until done is called.
func (m *Manager) probeToken(domain string) (string, func()) {
	b := make([]byte, 16)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	m.mu.Lock()
	m.probes[tok] = domain
	m.mu.Unlock()
	return tok, func() {
		m.mu.Lock()
		delete(m.probes, tok)
		m.mu.Unlock()
	}
}

// reason turns an ACME error into the CA's own words where it gave some.
func reason(err error) string {
	var p acme.Problem
	if errors.As(err, &p) {
		if p.Detail != "" {
			return fmt.Sprintf("the CA refused: %s (%s)", p.Detail, p.Type)
		}
		return "the CA refused: " + p.Type
	}
	return err.Error()
}

func (m *Manager) onEvent(ctx context.Context, event string, data map[string]any) error {
	domain, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtained":
		// Read the new certificate from storage: certmagic tells of a
		// renewal before its cache holds the new one.
		notAfter := m.storedNotAfter(ctx, data)
		m.mu.Lock()
		delete(m.failures, domain)
		m.mu.Unlock()
		m.setStatus(domain, Status{State: Valid, NotAfter: notAfter})
		kind := "issued"
		if renewal {
			kind = "renewed"
		}
		m.opts.OnEvent(Event{Domain: domain, Kind: kind, Message: "valid until " + notAfter.UTC().Format(time.RFC3339)})
	case "cert_failed":
		if !renewal {
			return nil // manage records it, with its retry time
		}
		err, _ := data["error"].(error)
		msg := "renewal failed"
		if err != nil {
			msg = reason(err)
		}
		m.mu.Lock()
		n := m.failures[domain]
		m.failures[domain] = n + 1
		m.mu.Unlock()
		var notAfter time.Time
		for _, c := range m.cache.AllMatchingCertificates(domain) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(notAfter) {
				notAfter = c.Leaf.NotAfter
			}
		}
		next := time.Now().Add(max(renewRetry(n), m.opts.RenewCheckInterval))
		if m.setStatus(domain, Status{State: RenewalFailed, Message: msg, NotAfter: notAfter, NextRetry: next}) {
			m.opts.OnEvent(Event{Domain: domain, Kind: "renewal-failed", Message: msg, Alert: true})
		}
	}
	return nil
}

// storedNotAfter reads the expiry of the certificate an event names.
func (m *Manager) storedNotAfter(ctx context.Context, data map[string]any) time.Time {
	path, _ := data["certificate_path"].(string)
	st := m.acme.Load()
	if path == "" || st == nil {
		return time.Time{}
	}
	raw, err := st.cfg.Storage.Load(ctx, path)
	if err != nil {
		m.log.Warn("reading the new certificate", "path", path, "err", err)
		return time.Time{}
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return time.Time{}
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}
	}
	return leaf.NotAfter
}

// renewRetry mirrors certmagic's renewal backoff, to tell the user when
// the next attempt comes.
func renewRetry(n int) time.Duration {
	steps := []time.Duration{time.Minute, 2 * time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 10 * time.Minute, 10 * time.Minute,
		20 * time.Minute, 20 * time.Minute, 20 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute,
		30 * time.Minute, 30 * time.Minute, 30 * time.Minute, time.Hour, time.Hour, time.Hour, 2 * time.Hour, 2 * time.Hour,
		3 * time.Hour, 3 * time.Hour, 6 * time.Hour}
	return steps[min(n, len(steps)-1)]
}

// setStatus records a domain's status; it reports whether the state or
// message changed, so that a repeat is not logged again.
func (m *Manager) setStatus(domain string, s Status) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.allowed[domain] {
		return false
	}
	s.Domain = domain
	old := m.status[domain]
	changed := old == nil || old.State != s.State || old.Message != s.Message
	if changed {
		s.Since = time.Now()
	} else {
		s.Since = old.Since
	}
	m.status[domain] = &s
	return changed
}

// Status returns every managed domain's status, sorted by domain.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.allowed))
	for d := range m.allowed {
		if s := m.status[d]; s != nil {
			out = append(out, *s)
		} else {
			out = append(out, Status{Domain: d, State: Issuing})
		}
	}
	for _, c := range m.files {
		out = append(out, fileStatus(c))
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

// GetCertificate serves a handshake: only for managed domains, so a
// stranger's SNI gets no certificate and causes no order.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	m.mu.Lock()
	ok := m.allowed[name]
	file := m.files[name]
	m.mu.Unlock()
	if file != nil {
		if file.cert == nil {
			return nil, fmt.Errorf("no certificate for %q: its files cannot be loaded: %s", hello.ServerName, file.problem)
		}
		return file.cert, nil
	}
	st := m.acme.Load()
	if !ok || st == nil {
		return nil, fmt.Errorf("no certificate for %q: not a domain of this server", hello.ServerName)
	}
	return st.cfg.GetCertificate(hello)
}

// HTTPHandler answers ACME HTTP-01 challenges and moat's reachability
// probe, and passes every other request to next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.URL.Path, probePrefix); ok {
			m.mu.Lock()
			_, known := m.probes[tok]
			m.mu.Unlock()
			if known {
				w.Header().Set("Content-Type", "text/plain")
				fmt.Fprint(w, tok)
				return
			}
		}
		if st := m.acme.Load(); st != nil && st.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// globalAddrs lists the machine's public addresses.
func globalAddrs() []netip.Addr {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		if a := p.Addr().Unmap(); isPublic(a) {
			out = append(out, a)
		}
	}
	return out
}

// StorageDir is where certificates live inside a data dir.
func StorageDir(dataDir string) string { return filepath.Join(dataDir, "certs") }
