package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Access is what a new set of rules must leave open, and why.
type Access struct {
	// Caller is where the change comes from, when it comes over SSH (the
	// client address of SSH_CONNECTION, or the API caller's address);
	// invalid when not over SSH.
	Caller netip.Addr
	// SSHPort is the port of the caller's SSH connection (the server
	// port of SSH_CONNECTION); 0 when not known.
	SSHPort uint16
	// Sessions are the SSH sessions open right now (to sshd's ports):
	// the owner's may be among them even when Caller is unknown (sudo
	// drops SSH_CONNECTION).
	Sessions []Session
	// HTTP01Domains are the domains whose certificates renew over the
	// HTTP-01 challenge, which the CA checks on HTTPPort.
	HTTP01Domains []string
	HTTPPort      uint16
	// EdgeServes says that the edge serves apps on HTTPSPort.
	EdgeServes bool
	HTTPSPort  uint16
}

// ErrLockout marks a refusal that --force may override: the new rules
// would drop the caller's own SSH connection.
var ErrLockout = errors.New("the new rules would cut off your SSH connection")

// Guard returns why rules must not be applied, or nil. The certificate
// and edge checks always hold; the SSH check is skipped with force (for
// an owner who knows better, ideally with a confirmation window).
func Guard(rules []Rule, a Access, force bool) error {
	var errs []error
	if len(a.HTTP01Domains) > 0 && a.HTTPPort != 0 && !openToAll(rules, a.HTTPPort) {
		errs = append(errs, fmt.Errorf("refused: these rules close %d/tcp to the world (over IPv4 or IPv6), and the certificates of %s renew over HTTP-01, which the CA checks on port %d from addresses nobody can list in advance. Keep %d/tcp open to any source, or move those domains to TLS-ALPN-01 (server.acme.challenges: [tls-alpn-01])",
			a.HTTPPort, strings.Join(a.HTTP01Domains, ", "), a.HTTPPort, a.HTTPPort))
	}
	if a.EdgeServes && a.HTTPSPort != 0 && !openToAll(rules, a.HTTPSPort) {
		errs = append(errs, fmt.Errorf("refused: these rules close %d/tcp to the world (over IPv4 or IPv6), and the edge serves every app's HTTPS on it: the apps would go offline for their visitors. Keep %d/tcp open to any source, or remove the apps first",
			a.HTTPSPort, a.HTTPSPort))
	}
	if !force && a.Caller.IsValid() && a.SSHPort != 0 && !Allows(rules, "tcp", a.Caller.WithZone(""), a.SSHPort) {
		errs = append(errs, fmt.Errorf("%w: you are connected from %s to port %d, and no rule lets %s reach %d/tcp. Add `moat firewall allow %d/tcp from %s` first; or, if you are sure, apply with --force and --confirm-within 60s, so that the old rules come back by themselves if you are cut off",
			ErrLockout, a.Caller, a.SSHPort, a.Caller, a.SSHPort, a.SSHPort, a.Caller))
	}
	if !force {
		for _, s := range a.Sessions {
			peer := s.Peer.WithZone("")
			if peer.IsLoopback() || (peer == a.Caller.WithZone("") && s.Port == a.SSHPort) || Allows(rules, "tcp", peer, s.Port) {
				continue
			}
			errs = append(errs, fmt.Errorf("%w: an SSH session is open from %s to port %d (yours, perhaps, if you ran this through sudo), and no rule lets %s reach %d/tcp. Add `moat firewall allow %d/tcp from %s` first; or, if you are sure, apply with --force and --confirm-within 60s",
				ErrLockout, peer, s.Port, peer, s.Port, s.Port, peer))
		}
	}
	return errors.Join(errs...)
}

// openToAll reports whether a TCP port is open to any source, over IPv4
// and IPv6 (a rule "from 0.0.0.0/0" leaves IPv6 closed).
func openToAll(rules []Rule, port uint16) bool {
	return Allows(rules, "tcp", netip.IPv4Unspecified(), port) && Allows(rules, "tcp", netip.IPv6Unspecified(), port)
}

// SSHCaller reads SSH_CONNECTION ("client-ip client-port server-ip
// server-port"): where the caller is connected from, and sshd's port.
func SSHCaller(sshConnection string) (netip.Addr, uint16, bool) {
	f := strings.Fields(sshConnection)
	if len(f) != 4 {
		return netip.Addr{}, 0, false
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return netip.Addr{}, 0, false
	}
	p, err := strconv.ParseUint(f[3], 10, 16)
	if err != nil || p == 0 {
		return netip.Addr{}, 0, false
	}
	return a.Unmap(), uint16(p), true
}
