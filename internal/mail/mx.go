package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"strconv"
	"strings"

	"moat/internal/maildns"
)

// Direct delivers each message to its recipients' mail exchangers itself,
// signed with DKIM. TLS is used whenever the exchanger offers it, without
// checking its certificate: that is how mail between servers is sent
// (RFC 7435), and a refusal to deliver would not make it safer.
type Direct struct {
	// Resolver is the DNS server for MX and address lookups ("host:port");
	// the system's when empty.
	Resolver string
	// Port is the exchangers' SMTP port: 25.
	Port int
	// Hostname is said in EHLO.
	Hostname string
	// Domain and Keys sign every message (d=Domain); no keys, no
	// signature.
	Domain string
	Keys   []maildns.Key
	// Dial connects; a net.Dialer when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (x Direct) String() string { return "direct to each recipient's MX" }

// Send implements Transport: the recipients are grouped by domain, and
// each domain's exchangers are tried in order of preference.
func (x Direct) Send(ctx context.Context, from string, to []string, data []byte) []Result {
	out := make([]Result, len(to))
	if len(x.Keys) > 0 {
		signed, err := maildns.Sign(data, x.Domain, x.Keys)
		if err != nil {
			return temporary(to, fmt.Errorf("DKIM signature: %w", err))
		}
		data = signed
	}
	byDomain := map[string][]int{}
	var order []string
	for i, rcpt := range to {
		_, d, _ := strings.Cut(rcpt, "@")
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if _, ok := byDomain[d]; !ok {
			order = append(order, d)
		}
		byDomain[d] = append(byDomain[d], i)
	}
	for _, d := range order {
		idx := byDomain[d]
		rcpts := make([]string, len(idx))
		for j, i := range idx {
			rcpts[j] = to[i]
		}
		res := x.sendDomain(ctx, d, from, rcpts, data)
		for j, i := range idx {
			out[i] = res[j]
		}
	}
	return out
}

func (x Direct) sendDomain(ctx context.Context, domain, from string, to []string, data []byte) []Result {
	mxs, err := maildns.LookupMX(ctx, x.Resolver, domain)
	if err != nil {
		var le *maildns.LookupError
		res := temporary(to, fmt.Errorf("where mail for %s goes: %w", domain, err))
		if errors.As(err, &le) && le.Permanent {
			for i := range res {
				res[i].Permanent = true
			}
		}
		return res
	}
	var last []Result
	for _, mx := range mxs {
		addrs, err := maildns.LookupAddrs(ctx, x.Resolver, mx.Host)
		if err != nil || len(addrs) == 0 {
			last = temporary(to, fmt.Errorf("MX %s of %s has no address: %v", mx.Host, domain, err))
			continue
		}
		for _, a := range addrs {
			res, reached := x.sendHost(ctx, mx.Host, a, from, to, data)
			if reached {
				return res
			}
			last = res
		}
	}
	if last == nil {
		last = temporary(to, fmt.Errorf("no MX for %s", domain))
	}
	return last
}

// sendHost tries one exchanger; reached is false when it could not be
// talked to at all, so that the next one is tried.
func (x Direct) sendHost(ctx context.Context, host string, a netip.Addr, from string, to []string, data []byte) (res []Result, reached bool) {
	port := x.Port
	if port == 0 {
		port = 25
	}
	where := fmt.Sprintf("MX %s (%s)", host, a)
	conn, err := dial(ctx, x.Dial, net.JoinHostPort(a.String(), strconv.Itoa(port)))
	if err != nil {
		return temporary(to, fmt.Errorf("%s: %w", where, err)), false
	}
	defer conn.Close()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return temporary(to, fmt.Errorf("%s: %w", where, err)), false
	}
	defer c.Close()
	if err := c.Hello(x.Hostname); err != nil {
		return temporary(to, fmt.Errorf("%s: EHLO: %w", where, err)), false
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}); err != nil {
			return temporary(to, fmt.Errorf("%s: STARTTLS: %w", where, err)), false
		}
	}
	return transact(c, where, from, to, data), true
}
