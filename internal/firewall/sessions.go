package firewall

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Session is an open TCP connection to a local port: an SSH session a
// change must not cut.
type Session struct {
	Peer netip.Addr
	Port uint16
}

// EstablishedPeers lists the remote addresses of the established TCP
// connections to a local port, from /proc/net/tcp and /proc/net/tcp6 (of
// the calling process's network namespace).
func EstablishedPeers(port uint16) []netip.Addr {
	var out []netip.Addr
	for _, c := range EstablishedConns(port) {
		if !containsAddr(out, c.Addr()) {
			out = append(out, c.Addr())
		}
	}
	return out
}

// EstablishedConns lists the remote ends (address and port) of the
// established TCP connections to a local port.
func EstablishedConns(port uint16) []netip.AddrPort {
	var out []netip.AddrPort
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		out = append(out, parseProcNetTCP(string(data), port)...)
	}
	return out
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// parseProcNetTCP reads the peers of established connections to port from
// the text of /proc/net/tcp or tcp6: "sl local_address rem_address st …",
// addresses as hex words in the kernel's byte order, state 01 established.
func parseProcNetTCP(text string, port uint16) []netip.AddrPort {
	var out []netip.AddrPort
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		_, lport, ok := hexAddr(f[1])
		if !ok || lport != port {
			continue
		}
		peer, pport, ok := hexAddr(f[2])
		if ok {
			out = append(out, netip.AddrPortFrom(peer.Unmap(), pport))
		}
	}
	return out
}

// hexAddr decodes "0100007F:0016" (IPv4) or a 32-digit IPv6 address: the
// address as 32-bit words in host byte order (little-endian here), the
// port in big-endian hex.
func hexAddr(s string) (netip.Addr, uint16, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, false
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	a, _ := netip.AddrFromSlice(raw)
	return a, uint16(port), true
}
