package maildns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// resolvConf lists the system's resolvers, asked when a caller names none.
const resolvConf = "/etc/resolv.conf"

// queryTimeout bounds one query to one server when ctx has no earlier
// deadline, so a server that never answers costs seconds, not forever.
const queryTimeout = 3 * time.Second

// ednsSize is the UDP payload size moat advertises: large enough for a
// TXT answer with an RSA key, small enough to avoid IP fragmentation
// (the 2020 DNS flag day's recommendation).
const ednsSize = 1232

// MX is one mail exchanger.
type MX struct {
	Host string // without the trailing dot
	Pref uint16 // lower is more preferred
}

// LookupError is why a name could not be resolved for mail.
type LookupError struct {
	// Domain is the name looked up.
	Domain string
	// Permanent is true when asking again will not help: the domain does
	// not exist or says it takes no mail. A sender bounces the message
	// then, and otherwise keeps it queued and retries.
	Permanent bool
	// Err is what went wrong.
	Err error
}

// Error says what was looked up and what went wrong.
func (e *LookupError) Error() string {
	return "looking up " + e.Domain + ": " + e.Err.Error()
}

// Unwrap returns Err, so errors.Is sees context.DeadlineExceeded.
func (e *LookupError) Unwrap() error { return e.Err }

var (
	errNoSuchDomain = errors.New("no such domain (NXDOMAIN)")
	errNullMX       = errors.New("the domain accepts no mail (null MX, RFC 7505)")
	errNoMailHost   = errors.New("the domain has no MX record and no A or AAAA record, so no host takes its mail")
	errNoAddress    = errors.New("no A or AAAA record")
)

// LookupMX returns where mail for domain goes, most preferred first, with
// equal preferences in random order so that load spreads as RFC 5321
// section 5.1 asks. A domain without MX records gets its own name as the
// one exchanger (the implicit MX) if it has an A or AAAA record.
//
// resolver is the name server to ask as "host:port"; when empty, the
// servers in /etc/resolv.conf are asked in turn. Errors are
// *LookupError; a null MX (RFC 7505) and NXDOMAIN are permanent, a
// timeout or a server failure is not.
func LookupMX(ctx context.Context, resolver string, domain string) ([]MX, error) {
	name, err := domainName(domain)
	if err != nil {
		return nil, &LookupError{Domain: domain, Permanent: true, Err: err}
	}
	srvs, err := servers(resolver)
	if err != nil {
		return nil, &LookupError{Domain: name, Err: err}
	}
	r, err := query(ctx, srvs, name, dns.TypeMX)
	if err != nil {
		return nil, &LookupError{Domain: name, Err: fmt.Errorf("MX: %w", err)}
	}
	if r.Rcode == dns.RcodeNameError {
		return nil, &LookupError{Domain: name, Permanent: true, Err: errNoSuchDomain}
	}
	var mxs []MX
	null := false
	for _, rr := range r.Answer {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue // The CNAMEs that led to the MX records.
		}
		host := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if host == "" {
			null = true
			continue
		}
		mxs = append(mxs, MX{Host: host, Pref: mx.Preference})
	}
	if len(mxs) == 0 && null {
		return nil, &LookupError{Domain: name, Permanent: true, Err: errNullMX}
	}
	// RFC 7505 forbids a null MX beside real ones; when a domain has both
	// anyway, the real ones are the better guess at the owner's intent.
	if len(mxs) > 0 {
		rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
		slices.SortStableFunc(mxs, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
		return mxs, nil
	}

	if _, err := lookupAddrs(ctx, srvs, name); err != nil {
		var le *LookupError
		if errors.As(err, &le) && le.Permanent {
			return nil, &LookupError{Domain: name, Permanent: true, Err: errNoMailHost}
		}
		return nil, err
	}
	return []MX{{Host: name}}, nil
}

// LookupAddrs returns the A and AAAA addresses of host, IPv4 first, through
// resolver as LookupMX does, for dialling a mail exchanger. IPv4 comes
// first because that is where a fresh server's reverse DNS is most often
// set, which large receivers insist on. When one of the two queries fails
// and the other returns addresses, those are returned: a host to try now
// beats a retry later. Errors are *LookupError; NXDOMAIN and a name
// without addresses are permanent.
func LookupAddrs(ctx context.Context, resolver string, host string) ([]netip.Addr, error) {
	name, err := domainName(host)
	if err != nil {
		return nil, &LookupError{Domain: host, Permanent: true, Err: err}
	}
	srvs, err := servers(resolver)
	if err != nil {
		return nil, &LookupError{Domain: name, Err: err}
	}
	return lookupAddrs(ctx, srvs, name)
}

// lookupAddrs asks for the A and AAAA records of name at once.
func lookupAddrs(ctx context.Context, srvs []string, name string) ([]netip.Addr, error) {
	type result struct {
		addrs []netip.Addr
		nx    bool
		err   error
	}
	ask := func(qtype uint16) result {
		r, err := query(ctx, srvs, name, qtype)
		if err != nil {
			return result{err: fmt.Errorf("%s: %w", dns.TypeToString[qtype], err)}
		}
		var res result
		res.nx = r.Rcode == dns.RcodeNameError
		for _, rr := range r.Answer {
			var a netip.Addr
			switch rr := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(rr.AAAA)
			}
			if a.IsValid() && !slices.Contains(res.addrs, a) {
				res.addrs = append(res.addrs, a)
			}
		}
		return res
	}
	var v4, v6 result
	var wg sync.WaitGroup
	wg.Go(func() { v4 = ask(dns.TypeA) })
	wg.Go(func() { v6 = ask(dns.TypeAAAA) })
	wg.Wait()

	if addrs := append(v4.addrs, v6.addrs...); len(addrs) > 0 {
		return addrs, nil
	}
	if err := errors.Join(v4.err, v6.err); err != nil {
		return nil, &LookupError{Domain: name, Err: err}
	}
	if v4.nx || v6.nx {
		return nil, &LookupError{Domain: name, Permanent: true, Err: errNoSuchDomain}
	}
	return nil, &LookupError{Domain: name, Permanent: true, Err: errNoAddress}
}

// servers returns the name servers to ask, as host:port: resolver alone,
// or the system's when it is empty.
func servers(resolver string) ([]string, error) {
	if resolver != "" {
		if _, _, err := net.SplitHostPort(resolver); err != nil {
			return nil, fmt.Errorf("resolver %q: want host:port: %w", resolver, err)
		}
		return []string{resolver}, nil
	}
	conf, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("reading the system's resolvers: %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("reading the system's resolvers: no nameserver in %s", resolvConf)
	}
	srvs := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		srvs[i] = net.JoinHostPort(s, conf.Port)
	}
	return srvs, nil
}

// query asks the servers in turn for the qtype records of name and
// returns the first answer that settles the question: NOERROR, or
// NXDOMAIN. Other answers (SERVFAIL, REFUSED) and network errors move on
// to the next server; when none settles it, the error says what each did.
func query(ctx context.Context, srvs []string, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(ednsSize, false)
	var errs serverErrors
	for _, srv := range srvs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := exchange(ctx, srv, m)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("name server %s: %w", srv, err))
		case r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError:
			return r, nil
		default:
			errs = append(errs, fmt.Errorf("name server %s answered %s", srv, dns.RcodeToString[r.Rcode]))
		}
	}
	return nil, errs
}

// exchange sends m to srv over UDP, and again over TCP when the answer
// comes back truncated.
func exchange(ctx context.Context, srv string, m *dns.Msg) (*dns.Msg, error) {
	r, err := exchangeOver(ctx, "udp", srv, m)
	if err == nil && r.Truncated {
		r, err = exchangeOver(ctx, "tcp", srv, m)
	}
	return r, err
}

// exchangeOver sends m to srv over network and reads the answer.
func exchangeOver(ctx context.Context, network, srv string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: queryTimeout}
	conn, err := c.DialContext(ctx, srv)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The client obeys ctx's deadline but not its cancellation; closing
	// the connection ends a read that is waiting.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		// Say why in ctx's words rather than "use of closed network
		// connection" or "i/o timeout": the read deadline is ctx's, and
		// may expire a moment before ctx says so.
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			return nil, context.DeadlineExceeded
		}
		return nil, err
	}
	// The client matched the ID only; an answer to another question is a
	// stray or a forgery, not this answer.
	if len(r.Question) != 1 || r.Question[0].Qtype != m.Question[0].Qtype || !strings.EqualFold(r.Question[0].Name, m.Question[0].Name) {
		return nil, errors.New("answer is for another question")
	}
	return r, nil
}

// serverErrors is what each name server asked did instead of answering.
type serverErrors []error

func (e serverErrors) Error() string {
	if len(e) == 0 {
		return "no name server to ask"
	}
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e serverErrors) Unwrap() []error { return e }
