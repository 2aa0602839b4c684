package maildns

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// drop, as a response code of testDNS, means the server does not answer.
const drop = -1

// testDNS is a DNS server for one test, answering over UDP and TCP on
// one port of 127.0.0.1 from records given in zone-file syntax. It says
// NXDOMAIN for names it has no records for.
type testDNS struct {
	// rrs are the records by lower-case, fully qualified owner name.
	rrs map[string][]dns.RR
	// rcodes overrides the answer for "name TYPE" (like "example.com. A"),
	// for "name", or for "*" (every query), in that order: the response
	// code to answer with, or drop.
	rcodes map[string]int
	// truncateUDP answers every UDP query with no records and TC set, as
	// a server does when the answer is too big, so clients must ask
	// again over TCP.
	truncateUDP bool
}

// zone parses zone-file lines ("example.com. MX 10 mx.example.com.")
// into records by owner name.
func zone(t *testing.T, lines ...string) map[string][]dns.RR {
	t.Helper()
	rrs := make(map[string][]dns.RR)
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("test zone line %q: %v", l, err)
		}
		name := strings.ToLower(rr.Header().Name)
		rrs[name] = append(rrs[name], rr)
	}
	return rrs
}

// txtLine is the zone-file line of a TXT record holding value, split
// into 255-byte strings as a DNS provider would.
func txtLine(name, value string) string {
	parts := TXTStrings(value)
	for i, p := range parts {
		parts[i] = `"` + p + `"`
	}
	return name + ". 300 IN TXT " + strings.Join(parts, " ")
}

// start serves d until the test ends and returns its "host:port".
func (d *testDNS) start(t *testing.T) string {
	t.Helper()
	pc, ln := listenUDPAndTCP(t)
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)},
		{Listener: ln, Handler: dns.HandlerFunc(d.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		served := make(chan error, 1)
		go func() { served <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-served:
			t.Fatalf("serving test DNS: %v", err)
		}
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Errorf("shutting down test DNS: %v", err)
			}
			<-served
		})
	}
	return pc.LocalAddr().String()
}

// listenUDPAndTCP opens a UDP socket on a free port of 127.0.0.1 and a
// TCP listener on the same port, trying again if that TCP port is taken.
func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listening on UDP: %v", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("listening on TCP at the UDP port: %v", lastErr)
	return nil, nil
}

func (d *testDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		resp := new(dns.Msg)
		resp.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	rcode, forced := d.rcode(name, q.Qtype)
	switch {
	case forced && rcode == drop:
		return
	case forced:
		resp.Rcode = rcode
	default:
		rrs, ok := d.rrs[name]
		if !ok {
			resp.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				resp.Answer = append(resp.Answer, rr)
			}
		}
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(opt.UDPSize(), false)
		size = int(opt.UDPSize())
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		if d.truncateUDP {
			resp.Answer, resp.Truncated = nil, true
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp) // The client retries or times out.
}

// rcode returns the response code forced for name and qtype, if any.
func (d *testDNS) rcode(name string, qtype uint16) (int, bool) {
	for _, k := range []string{fmt.Sprintf("%s %s", name, dns.TypeToString[qtype]), name, "*"} {
		if rc, ok := d.rcodes[k]; ok {
			return rc, true
		}
	}
	return 0, false
}

// closedPort returns a 127.0.0.1 address where nothing listens for UDP,
// so queries to it fail at once with "connection refused".
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}
