package certs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"moat/internal/config"
)

// probePrefix is the path under which the edge answers moat's own
// reachability probe, beside the ACME challenges.
const probePrefix = "/.well-known/acme-challenge/moat-probe-"

// precheck decides whether an order for a domain can succeed, before
// spending the CA's rate limits on one that cannot.
type precheck struct {
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// server lists this machine's public addresses.
	server func() []netip.Addr
	// probe asks http://domain/ on addr whether it reaches this moat.
	probe func(ctx context.Context, domain string, addr netip.Addr) bool
	// serverName is the server's own domain, offered as a CNAME target.
	serverName string
}

// check returns "" when the domain reaches this server, or what is wrong
// and how to fix it, in plain words.
func (p *precheck) check(ctx context.Context, domain string) string {
	addrs, err := p.lookup(ctx, domain)
	server := p.server()
	target := addrList(server)
	if target == "" {
		target = "this server's public address"
	}
	fix := fmt.Sprintf("create an A (or AAAA) record for %s pointing to %s", domain, target)
	if p.serverName != "" && p.serverName != domain {
		fix += ", or a CNAME to " + p.serverName
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("%s does not exist in DNS: %s", domain, fix)
	case err != nil:
		return fmt.Sprintf("looking up %s failed (%v): check that the domain's DNS servers answer, then %s", domain, err, fix)
	case len(addrs) == 0:
		return fmt.Sprintf("%s has no A or AAAA record: %s", domain, fix)
	}
	// Every address must reach this server: the CA may try any of them.
	// Behind NAT or a proxy a record names another address, and what
	// matters is whether HTTP to it reaches this moat; an address that is
	// not public (loopback, private) is never one the CA can reach, unless
	// it is listed as this server's own.
	var good, bad []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case slices.Contains(server, a),
			isPublic(a) && p.probe != nil && p.probe(ctx, domain, a):
			good = append(good, a)
		default:
			bad = append(bad, a)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	if len(good) > 0 {
		return fmt.Sprintf("%s resolves to %s, which reaches this server, but also to %s, which does not: the CA may use any of them, so remove the record for %s or point it to %s",
			domain, addrList(good), addrList(bad), addrList(bad), target)
	}
	addrs = bad
	for _, a := range addrs {
		if inCloudflare(a) {
			return fmt.Sprintf("%s resolves to %s, an address of Cloudflare's proxy (the orange cloud), and requests to it do not reach this server: "+
				"in Cloudflare's DNS settings set the record to DNS only (grey cloud) pointing to %s; "+
				"to keep the proxy, let it pass /.well-known/acme-challenge/ over plain HTTP and set SSL/TLS to Full (strict), which works with the certificate moat obtains",
				domain, a, target)
		}
	}
	if len(server) == 0 {
		return fmt.Sprintf("%s resolves to %s, which does not reach this server: %s (or set server.public_ips)", domain, addrList(addrs), fix)
	}
	return fmt.Sprintf("%s resolves to %s but this server is %s: %s", domain, addrList(addrs), target, fix)
}

// isPublic reports whether a CA on the internet could reach the address.
func isPublic(a netip.Addr) bool {
	return a.IsGlobalUnicast() && !a.IsPrivate()
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// httpProbe returns a probe that asks addr:port for a token this moat
// serves, with dial deciding which addresses may be reached.
func httpProbe(port string, dial func(ctx context.Context, network, addr string) (net.Conn, error), token func(domain string) (string, func())) func(context.Context, string, netip.Addr) bool {
	return func(ctx context.Context, domain string, a netip.Addr) bool {
		tok, done := token(domain)
		defer done()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c := &http.Client{
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return dial(ctx, network, net.JoinHostPort(a.String(), port))
				},
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+domain+probePrefix+tok, nil)
		if err != nil {
			return false
		}
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return resp.StatusCode == http.StatusOK && string(body) == tok
	}
}

func inCloudflare(a netip.Addr) bool {
	for _, p := range config.CloudflareRanges() {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}
