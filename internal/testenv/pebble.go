package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// newOrderPath is the path of Pebble's new-order endpoint (unexported in
// package wfe; it is also what Pebble's directory lists as "newOrder").
const newOrderPath = "/order-plz"

// PebbleOptions configures StartPebble.
type PebbleOptions struct {
	// HTTPPort and TLSPort are the ports Pebble's VA connects to, at the
	// address the name resolves to, to validate HTTP-01 and TLS-ALPN-01
	// challenges. A challenge type whose port is 0 cannot be validated.
	HTTPPort, TLSPort int

	// DNSServer is the host:port of the DNS server the VA resolves names
	// with, over TCP (for example StartDNS(t).Addr()). Required. The VA
	// connects to the first address it gets, trying AAAA records before A.
	DNSServer string

	// CertValidity is the validity period of issued certificates, rounded
	// up to whole seconds; 0 means Pebble's default (90 days). Issued
	// certificates have NotBefore at issuance and
	// NotAfter = NotBefore + CertValidity - 1s.
	CertValidity time.Duration
}

// Pebble is a running Pebble ACME server. Its ACME API listens over HTTPS on
// 127.0.0.1 at a random port, with a certificate trusted by APITrust.
type Pebble struct {
	// DirectoryURL is the URL of the ACME directory.
	DirectoryURL string
	// APITrust trusts the HTTPS certificate of the ACME API.
	APITrust *x509.CertPool
	// APITrustPEM is the same root in PEM, for a client configured by file.
	APITrustPEM []byte

	addr     string // host:port of the ACME API
	tlsCert  tls.Certificate
	handler  http.Handler
	log      *log.Logger
	rootsPEM []byte

	mu     sync.Mutex
	srv    *http.Server  // nil when stopped
	served chan struct{} // closed when srv.Serve returns
	orders []string
}

// StartPebble runs Pebble in-process and stops it when the test ends.
// Pebble logs to stderr when testing.Verbose() and is silent otherwise.
//
// Pebble reads some settings only from environment variables, so
// StartPebble sets PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0 in the
// process environment (with os.Setenv, not t.Setenv, so that parallel tests
// may call it) unless they are already set. Other PEBBLE_* variables, such
// as PEBBLE_AUTHZREUSE (default: reuse a valid authorization 50% of the
// time), are left as they are.
func StartPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	if opts.DNSServer == "" {
		t.Fatal("testenv: PebbleOptions.DNSServer is required")
	}
	if opts.CertValidity < 0 {
		t.Fatalf("testenv: negative PebbleOptions.CertValidity %v", opts.CertValidity)
	}
	// Pebble's VA and WFE read these only from the environment, when created.
	for key, value := range map[string]string{
		// Validate challenges at once, not after a random 0-4s sleep.
		"PEBBLE_VA_NOSLEEP": "1",
		// Do not reject 5% of good nonces: clients retry, but the retries
		// would make Orders and request counts nondeterministic.
		"PEBBLE_WFE_NONCEREJECT": "0",
	} {
		if _, ok := os.LookupEnv(key); !ok {
			if err := os.Setenv(key, value); err != nil {
				t.Fatalf("testenv: setting %s for Pebble: %v", key, err)
			}
		}
	}

	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.LstdFlags|log.Lmicroseconds)
	}

	// Wire Pebble as cmd/pebble/main.go does, with its default settings: a
	// single chain (no alternate roots) with one intermediate, no OCSP, no
	// EAB, no blocked domains. ECDSA keeps key generation fast.
	validity := uint64((opts.CertValidity + time.Second - 1) / time.Second) // 0: Pebble's default
	profiles := map[string]ca.Profile{
		// With a single profile, orders that name none get this one.
		"default": {Description: "moat testenv profile", ValidityPeriod: validity},
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, opts.HTTPPort, opts.TLSPort, false, opts.DNSServer, store)
	frontEnd := wfe.New(logger, store, validator, authority,
		[]string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	var rootsPEM []byte
	for i := range authority.GetNumberOfRootCerts() {
		block := &pem.Block{Type: "CERTIFICATE", Bytes: authority.GetRootCert(i).DER}
		rootsPEM = append(rootsPEM, pem.EncodeToMemory(block)...)
	}

	tlsCert, trust, trustDER, err := newAPICert()
	if err != nil {
		t.Fatalf("testenv: creating Pebble's HTTPS certificate: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listening for Pebble's ACME API: %v", err)
	}

	p := &Pebble{
		APITrust:    trust,
		APITrustPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: trustDER}),
		addr:        ln.Addr().String(),
		tlsCert:     tlsCert,
		log:         logger,
		rootsPEM:    rootsPEM,
	}
	p.DirectoryURL = "https://" + p.addr + wfe.DirectoryPath
	p.handler = p.recordOrders(frontEnd.Handler())
	p.serve(ln)
	t.Cleanup(p.Stop)
	return p
}

// newAPICert returns a certificate for 127.0.0.1 and localhost, issued by a
// new self-signed CA, and a pool that trusts that CA.
func newAPICert(names ...string) (tls.Certificate, *x509.CertPool, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "moat testenv Pebble API CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("parsing CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("generating key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     append([]string{"localhost"}, names...),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("creating certificate: %w", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool, caDER, nil
}

// serve serves the ACME API on ln until Stop.
func (p *Pebble) serve(ln net.Listener) {
	srv := &http.Server{
		Handler:           p.handler,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{p.tlsCert}},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          p.log,
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		err := srv.ServeTLS(ln, "", "")
		if !errors.Is(err, http.ErrServerClosed) {
			p.log.Printf("testenv: serving Pebble's ACME API: %v", err)
		}
	}()
	p.srv, p.served = srv, served
}

// Stop stops the ACME API server and closes its connections, so that
// clients get "connection refused" until Start. Pebble's state is kept.
// Stopping a stopped Pebble does nothing.
func (p *Pebble) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv == nil {
		return
	}
	_ = p.srv.Close() // Only reports the listener's Close error.
	<-p.served
	p.srv, p.served = nil, nil
}

// Start restarts the ACME API server, after Stop, on the same address and
// with the same state (accounts, orders, roots). Starting a running Pebble
// does nothing. It fails if another process has taken the port meanwhile.
func (p *Pebble) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("testenv: restarting Pebble's ACME API: %w", err)
	}
	p.serve(ln)
	return nil
}

// RootsPEM returns the PEM-encoded root certificate(s) that certificates
// issued by Pebble chain to. Pebble generates them at start.
func (p *Pebble) RootsPEM() []byte {
	return bytes.Clone(p.rootsPEM)
}

// Roots returns a new pool of the root certificate(s) that certificates
// issued by Pebble chain to. Issued chains also need Pebble's intermediate,
// which it sends along with the leaf.
func (p *Pebble) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.rootsPEM)
	return pool
}

// Orders returns the identifier values (DNS names, or IP addresses) of
// every new-order request Pebble has received, in the order received,
// whether or not Pebble accepted the order.
func (p *Pebble) Orders() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.orders...)
}

// recordOrders wraps Pebble's ACME handler to record the identifiers of
// new-order requests.
func (p *Pebble) recordOrders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == newOrderPath {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, "reading request body", http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if names, err := orderIdentifiers(body); err != nil {
				p.log.Printf("testenv: not recording new-order request: %v", err)
			} else {
				p.mu.Lock()
				p.orders = append(p.orders, names...)
				p.mu.Unlock()
			}
		}
		next.ServeHTTP(w, r)
	})
}

// orderIdentifiers returns the identifier values in a new-order request,
// a JWS in flattened JSON serialization (RFC 8555 section 6.2).
func orderIdentifiers(body []byte) ([]string, error) {
	var jws struct {
		Payload string `json:"payload"`
	}
	if err := json.Unmarshal(body, &jws); err != nil {
		return nil, fmt.Errorf("decoding JWS: %w", err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return nil, fmt.Errorf("decoding JWS payload: %w", err)
	}
	var order struct {
		Identifiers []struct {
			Value string `json:"value"`
		} `json:"identifiers"`
	}
	if err := json.Unmarshal(payload, &order); err != nil {
		return nil, fmt.Errorf("decoding new-order payload: %w", err)
	}
	names := make([]string, len(order.Identifiers))
	for i, id := range order.Identifiers {
		names[i] = id.Value
	}
	return names, nil
}
