package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/acme"
)

// resolver returns a Go resolver that sends every query to d.
func resolver(d *DNS) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, d.Addr())
		},
	}
}

func TestDNS(t *testing.T) {
	t.Parallel()
	d := StartDNS(t)
	r := resolver(d)
	ctx := t.Context()
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")

	d.Set("Host.Example.TEST.", v4, v6)
	d.SetCNAME("alias.example.test", "HOST.example.test")

	for _, name := range []string{"host.example.test", "HOST.EXAMPLE.TEST.", "alias.example.test"} {
		got, err := r.LookupNetIP(ctx, "ip", name)
		if err != nil {
			t.Fatalf("LookupNetIP(%q): %v", name, err)
		}
		slices.SortFunc(got, netip.Addr.Compare)
		if want := []netip.Addr{v4, v6}; !slices.Equal(got, want) {
			t.Errorf("LookupNetIP(%q) = %v, want %v", name, got, want)
		}
	}
	if cname, err := r.LookupCNAME(ctx, "alias.example.test"); err != nil || cname != "host.example.test." {
		t.Errorf(`LookupCNAME("alias.example.test") = %q, %v; want "host.example.test."`, cname, err)
	}

	d.Set("host.example.test") // Removes it.
	for _, name := range []string{"host.example.test", "alias.example.test", "unknown.example.test"} {
		_, err := r.LookupNetIP(ctx, "ip", name)
		if dnsErr := (*net.DNSError)(nil); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("LookupNetIP(%q) error = %v, want not found", name, err)
		}
	}

	// Over TCP too (Pebble's VA uses TCP), and CAA gets an empty NOERROR.
	d.Set("tcp.example.test", v4)
	for _, q := range []struct {
		qtype   uint16
		answers int
	}{{dns.TypeA, 1}, {dns.TypeCAA, 0}} {
		msg := new(dns.Msg).SetQuestion("tcp.example.test.", q.qtype)
		resp, _, err := (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, msg, d.Addr())
		if err != nil {
			t.Fatalf("TCP query %s: %v", dns.TypeToString[q.qtype], err)
		}
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != q.answers {
			t.Errorf("TCP query %s: rcode %s, %d answers; want NOERROR, %d answers",
				dns.TypeToString[q.qtype], dns.RcodeToString[resp.Rcode], len(resp.Answer), q.answers)
		}
	}

	// Concurrent updates and queries (run with -race).
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			name := fmt.Sprintf("c%d.example.test", i)
			for range 20 {
				d.Set(name, v4)
				if _, err := r.LookupNetIP(ctx, "ip4", name); err != nil {
					t.Errorf("LookupNetIP(%q): %v", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestPebble(t *testing.T) {
	t.Parallel()
	const (
		name     = "www.moat.test"
		validity = time.Hour
	)
	d := StartDNS(t)
	d.Set(name, netip.MustParseAddr("127.0.0.1"))
	challenges := startHTTP01Server(t)

	p := StartPebble(t, PebbleOptions{
		HTTPPort:     challenges.port,
		DNSServer:    d.Addr(),
		CertValidity: validity,
	})
	httpClient := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.APITrust},
	}}
	t.Cleanup(httpClient.CloseIdleConnections)

	if err := getDirectory(httpClient, p.DirectoryURL); err != nil {
		t.Fatal(err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	client := &acme.Client{Key: key, DirectoryURL: p.DirectoryURL, HTTPClient: httpClient}
	if _, err := client.Register(t.Context(), &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("registering ACME account: %v", err)
	}

	chain := issue(t, client, challenges, name)
	leaf := chain[0]
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       name,
		Roots:         p.Roots(),
		Intermediates: intermediates,
	}); err != nil {
		t.Errorf("issued certificate does not verify against Roots(): %v", err)
	}
	if got := p.Orders(); !slices.Equal(got, []string{name}) {
		t.Errorf("Orders() = %q, want [%q]", got, name)
	}
	// Pebble sets NotAfter = NotBefore + validity - 1s.
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < validity-2*time.Second || got > validity {
		t.Errorf("issued certificate is valid for %v, want about %v", got, validity)
	}

	p.Stop()
	if err := getDirectory(httpClient, p.DirectoryURL); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after Stop, fetching directory: error %v, want connection refused", err)
	}

	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := getDirectory(httpClient, p.DirectoryURL); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	// The account survived the restart.
	issue(t, client, challenges, name)
	if got := p.Orders(); !slices.Equal(got, []string{name, name}) {
		t.Errorf("after second order, Orders() = %q, want [%q %q]", got, name, name)
	}
}

func TestPebbleRootsPEM(t *testing.T) {
	t.Parallel()
	p := StartPebble(t, PebbleOptions{DNSServer: StartDNS(t).Addr()})
	block, rest := pem.Decode(p.RootsPEM())
	if block == nil || len(rest) != 0 {
		t.Fatalf("RootsPEM() is not one PEM block: %q", p.RootsPEM())
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !root.IsCA || !strings.HasPrefix(root.Subject.CommonName, "Pebble Root CA") {
		t.Errorf("RootsPEM() holds %q (CA: %t), want a Pebble root CA", root.Subject, root.IsCA)
	}
}

// getDirectory fetches and decodes the ACME directory at url.
func getDirectory(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("fetching ACME directory: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching ACME directory: status %s", resp.Status)
	}
	var dir struct {
		NewOrder string `json:"newOrder"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return fmt.Errorf("decoding ACME directory: %w", err)
	}
	if dir.NewOrder == "" {
		return errors.New("ACME directory has no newOrder URL")
	}
	return nil
}

// http01Server answers HTTP-01 challenges on 127.0.0.1:port.
type http01Server struct {
	port      int
	responses sync.Map // path -> key authorization
}

func startHTTP01Server(t *testing.T) *http01Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http01Server{port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			resp, ok := s.responses.Load(r.URL.Path)
			if !ok {
				http.NotFound(w, r)
				return
			}
			fmt.Fprint(w, resp)
		}),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// issue gets a certificate for name from client's CA, solving HTTP-01
// challenges with s, and returns the issued chain, leaf first.
func issue(t *testing.T, client *acme.Client, s *http01Server, name string) []*x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		t.Fatalf("creating order: %v", err)
	}
	for _, url := range order.AuthzURLs {
		authz, err := client.GetAuthorization(ctx, url)
		if err != nil {
			t.Fatalf("getting authorization: %v", err)
		}
		if authz.Status == acme.StatusValid {
			continue // Pebble reused an earlier authorization.
		}
		i := slices.IndexFunc(authz.Challenges, func(c *acme.Challenge) bool { return c.Type == "http-01" })
		if i < 0 {
			t.Fatal("no http-01 challenge offered")
		}
		chal := authz.Challenges[i]
		resp, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			t.Fatal(err)
		}
		s.responses.Store(client.HTTP01ChallengePath(chal.Token), resp)
		if _, err := client.Accept(ctx, chal); err != nil {
			t.Fatalf("accepting challenge: %v", err)
		}
		if _, err := client.WaitAuthorization(ctx, url); err != nil {
			t.Fatalf("waiting for authorization: %v", err)
		}
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		t.Fatalf("waiting for order: %v", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ders, _, err := client.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		t.Fatalf("finalizing order: %v", err)
	}
	chain := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		if chain[i], err = x509.ParseCertificate(der); err != nil {
			t.Fatalf("parsing issued certificate: %v", err)
		}
	}
	return chain
}
