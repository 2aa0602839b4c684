package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// maxCNAMEChain bounds how many CNAMEs the server follows for one answer.
const maxCNAMEChain = 8

// DNS is an in-process DNS server that is authoritative for every name. It
// answers A, AAAA and CNAME queries from the records given to Set and
// SetCNAME, NXDOMAIN for names it has no records for, and an empty NOERROR
// answer to every CAA query. It serves UDP and TCP on the same port of
// 127.0.0.1. It is safe for concurrent use.
type DNS struct {
	addr string

	mu      sync.RWMutex
	records map[string]dnsRecord // keyed by canonicalName
}

// dnsRecord holds what a name resolves to: either addrs or cname, not both.
type dnsRecord struct {
	addrs []netip.Addr
	cname string   // canonical form, empty if none
	mx    []string // exchangers, most preferred first, canonical form
	txt   []string // one value a record
}

// StartDNS starts a DNS server on 127.0.0.1 at a random port, listening on
// UDP and TCP. It is shut down when the test ends.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	d := &DNS{records: make(map[string]dnsRecord)}

	pc, ln, err := listenUDPAndTCP()
	if err != nil {
		t.Fatalf("testenv: starting DNS server: %v", err)
	}
	d.addr = pc.LocalAddr().String()

	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(d.serveDNS)},
		{Listener: ln, Handler: dns.HandlerFunc(d.serveDNS)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		served := make(chan error, 1)
		go func() { served <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-served:
			t.Fatalf("testenv: serving DNS on %s: %v", d.addr, err)
		}
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Errorf("testenv: shutting down DNS server: %v", err)
			}
			<-served
		})
	}
	return d
}

// listenUDPAndTCP opens a UDP socket on a random port of 127.0.0.1 and a TCP
// listener on the same port, retrying if that TCP port is taken.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listening on UDP: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("listening on TCP at the UDP port: %w", lastErr)
}

// Addr returns the host:port the server listens on, for both UDP and TCP.
func (d *DNS) Addr() string { return d.addr }

// Set makes name resolve to addrs: A records for IPv4 addresses and AAAA
// records for IPv6 ones. It replaces any earlier addresses or CNAME for
// name. Calling Set with no addresses removes name, so that it answers
// NXDOMAIN again. name is case-insensitive, with or without trailing dot.
func (d *DNS) Set(name string, addrs ...netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(addrs) == 0 {
		delete(d.records, canonicalName(name))
		return
	}
	rec := d.records[canonicalName(name)]
	d.records[canonicalName(name)] = dnsRecord{addrs: append([]netip.Addr(nil), addrs...), mx: rec.mx, txt: rec.txt}
}

// SetMX makes hosts the mail exchangers of name, the first the most
// preferred; its addresses and TXT records stay.
func (d *DNS) SetMX(name string, hosts ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.records[canonicalName(name)]
	rec.cname, rec.mx = "", nil
	for _, h := range hosts {
		rec.mx = append(rec.mx, canonicalName(h))
	}
	d.records[canonicalName(name)] = rec
}

// SetTXT makes values the TXT records of name (each split into strings
// of 255 bytes, as a zone file would); no values removes them. Its
// addresses and MX records stay.
func (d *DNS) SetTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.records[canonicalName(name)]
	rec.cname, rec.txt = "", append([]string(nil), values...)
	d.records[canonicalName(name)] = rec
}

// SetCNAME makes name an alias of target, replacing any earlier addresses
// or CNAME for name. Answers for name include the records of target if the
// server has any. Both names are case-insensitive, with or without
// trailing dot.
func (d *DNS) SetCNAME(name, target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[canonicalName(name)] = dnsRecord{cname: canonicalName(target)}
}

// canonicalName returns name lower-cased and fully qualified.
func canonicalName(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}

func (d *DNS) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	// Go's resolver treats a non-authoritative, non-recursive empty answer
	// as a lame referral; say we recurse so every answer is taken as final.
	resp.RecursionAvailable = true
	if len(req.Question) == 1 {
		resp.Answer, resp.Rcode = d.answer(req.Question[0])
	} else {
		resp.Rcode = dns.RcodeFormatError
	}
	_ = w.WriteMsg(resp) // The client retries or times out.
}

// answer returns the answer records and response code for q.
func (d *DNS) answer(q dns.Question) ([]dns.RR, int) {
	if q.Qclass != dns.ClassINET {
		return nil, dns.RcodeRefused
	}
	if q.Qtype == dns.TypeCAA {
		return nil, dns.RcodeSuccess // No CAA records: any CA may issue.
	}

	d.mu.RLock()
	defer d.mu.RUnlock()

	var answer []dns.RR
	owner := q.Name // Answer with the name as asked, case included.
	name := canonicalName(q.Name)
	for range maxCNAMEChain {
		rec, ok := d.records[name]
		if !ok {
			return answer, dns.RcodeNameError
		}
		if rec.cname == "" {
			switch q.Qtype {
			case dns.TypeMX:
				for i, h := range rec.mx {
					answer = append(answer, &dns.MX{Hdr: header(owner, dns.TypeMX), Preference: uint16(10 * (i + 1)), Mx: h})
				}
			case dns.TypeTXT:
				for _, v := range rec.txt {
					answer = append(answer, &dns.TXT{Hdr: header(owner, dns.TypeTXT), Txt: splitTXT(v)})
				}
			}
			return append(answer, addrRRs(owner, q.Qtype, rec.addrs)...), dns.RcodeSuccess
		}
		answer = append(answer, &dns.CNAME{Hdr: header(owner, dns.TypeCNAME), Target: rec.cname})
		if q.Qtype == dns.TypeCNAME {
			return answer, dns.RcodeSuccess
		}
		owner, name = rec.cname, rec.cname
	}
	return answer, dns.RcodeServerFailure // CNAME loop or chain too long.
}

// splitTXT cuts a TXT value into the strings of at most 255 bytes a
// record holds.
func splitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}

// addrRRs returns the records of type qtype (A or AAAA) for addrs.
func addrRRs(owner string, qtype uint16, addrs []netip.Addr) []dns.RR {
	var rrs []dns.RR
	for _, a := range addrs {
		switch {
		case qtype == dns.TypeA && a.Unmap().Is4():
			rrs = append(rrs, &dns.A{Hdr: header(owner, dns.TypeA), A: a.Unmap().AsSlice()})
		case qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			rrs = append(rrs, &dns.AAAA{Hdr: header(owner, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return rrs
}

// header returns the header of a record of type rrtype for owner, with a
// zero TTL so that resolvers do not cache it across Set calls.
func header(owner string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 0}
}
