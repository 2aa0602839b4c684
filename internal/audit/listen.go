package audit

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Scope is how far a listening address can be reached from.
type Scope string

// The scopes, from the narrowest.
const (
	Loopback Scope = "loopback" // 127.0.0.0/8, ::1: this machine only
	Private  Scope = "private"  // RFC 1918, CGNAT, ULA, link-local: a private network
	Public   Scope = "public"   // one public address
	Wildcard Scope = "wildcard" // 0.0.0.0 or ::, every address the machine has
)

// Listener is a socket that waits for connections (TCP) or datagrams
// (UDP), and the process that holds it.
type Listener struct {
	Proto string         `json:"proto"` // tcp or udp
	Addr  netip.AddrPort `json:"addr"`
	Scope Scope          `json:"scope"`
	Inode uint64         `json:"-"`
	// PID and Process name the holder; zero and empty when it is not
	// known (a socket of another namespace's process, say).
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// Port is the listener's port as moat writes it, like 5432/tcp.
func (l Listener) Port() string { return fmt.Sprintf("%d/%s", l.Addr.Port(), l.Proto) }

// Who is the process's name, or what is known of it.
func (l Listener) Who() string {
	if l.Process == "" {
		return "a process moat cannot name"
	}
	return l.Process
}

// ScopeOf classifies an address.
func ScopeOf(a netip.Addr) Scope {
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return Wildcard
	case a.IsLoopback():
		return Loopback
	case a.IsPrivate(), a.IsLinkLocalUnicast(), cgnat.Contains(a):
		return Private
	}
	return Public
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Sockets reads the listening sockets of one network namespace: that of
// the process netPID ("self" for moat's own) as proc (/proc) shows it,
// each named by the process that holds it.
func Sockets(proc, netPID string) ([]Listener, error) {
	var out []Listener
	for _, f := range []struct{ file, proto string }{{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"}} {
		path := filepath.Join(proc, netPID, "net", f.file)
		ls, err := readTable(path, f.proto)
		if os.IsNotExist(err) && strings.HasSuffix(f.file, "6") {
			continue // no IPv6 here
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	owners := socketOwners(proc)
	for i := range out {
		if o, ok := owners[out[i].Inode]; ok {
			out[i].PID, out[i].Process = o.pid, o.name
		}
	}
	slices.SortFunc(out, func(a, b Listener) int {
		if c := int(a.Addr.Port()) - int(b.Addr.Port()); c != 0 {
			return c
		}
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return a.Addr.Addr().Compare(b.Addr.Addr())
	})
	return out, nil
}

// readTable reads one of /proc/net/{tcp,tcp6,udp,udp6}: the TCP sockets
// in LISTEN, and the UDP sockets bound and not connected.
func readTable(path, proto string) ([]Listener, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Listener
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for n := 2; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		local, err := hexAddrPort(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s, line %d: %w", path, n, err)
		}
		remote, err := hexAddrPort(fields[2])
		if err != nil {
			return nil, fmt.Errorf("%s, line %d: %w", path, n, err)
		}
		switch {
		case proto == "tcp" && fields[3] != "0A": // not LISTEN
			continue
		case proto == "udp" && (remote.Port() != 0 || fields[3] != "07"): // connected: a client
			continue
		}
		inode, _ := strconv.ParseUint(fields[9], 10, 64)
		out = append(out, Listener{Proto: proto, Addr: netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), Scope: ScopeOf(local.Addr()), Inode: inode})
	}
	return out, sc.Err()
}

// hexAddrPort reads the kernel's ADDR:PORT, the address in 32-bit words
// of host byte order (little-endian here), the port big-endian.
func hexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: not an address", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: not a port", s)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

type owner struct {
	pid  int
	name string
}

// socketOwners maps socket inodes to the processes that hold them, from
// every /proc/PID/fd; processes it may not read are left out.
func socketOwners(proc string) map[uint64]owner {
	out := map[uint64]owner{}
	pids, _ := os.ReadDir(proc)
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join(proc, p.Name(), "fd"))
		if err != nil {
			continue
		}
		var name string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(proc, p.Name(), "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, seen := out[inode]; seen {
				continue // a socket shared after fork: its first holder
			}
			if name == "" {
				b, _ := os.ReadFile(filepath.Join(proc, p.Name(), "comm"))
				name = strings.TrimSpace(string(b))
			}
			out[inode] = owner{pid: pid, name: name}
		}
	}
	return out
}

// Proc is where the listening sockets are read: Root is /proc (when
// empty); NetPID is a process whose network namespace is looked at,
// "self" (when empty) for moat's own.
type Proc struct {
	Root, NetPID string
}

// Sockets reads the listening sockets as p says.
func (p Proc) Sockets() ([]Listener, error) {
	root, pid := p.Root, p.NetPID
	if root == "" {
		root = "/proc"
	}
	if pid == "" {
		pid = "self"
	}
	return Sockets(root, pid)
}
