package edge

import (
	"context"
	"net/http"
	"net/netip"
	"strings"

	"moat/internal/config"
)

// realIP decides who the client is. Forwarding headers are believed only
// from peers the config says are proxies: anyone else could write any
// address into them.
type realIP struct {
	trusted []netip.Prefix
	// cloudflare is nil unless Cloudflare mode is on.
	cloudflare []netip.Prefix
}

func newRealIP(s config.Server) realIP {
	var ri realIP
	for _, p := range s.TrustedProxies {
		if pr, err := config.ParsePrefix(p); err == nil {
			ri.trusted = append(ri.trusted, pr)
		}
	}
	if s.Cloudflare.Enabled {
		ri.cloudflare = config.CloudflareRanges()
		if len(s.Cloudflare.Ranges) > 0 {
			ri.cloudflare = nil
			for _, p := range s.Cloudflare.Ranges {
				if pr, err := config.ParsePrefix(p); err == nil {
					ri.cloudflare = append(ri.cloudflare, pr)
				}
			}
		}
	}
	return ri
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// client returns the client's address for a request from peer: from a
// Cloudflare address, CF-Connecting-IP; from a trusted proxy, the
// right-most address in X-Forwarded-For that is not itself a trusted
// proxy; otherwise the peer.
func (ri realIP) client(r *http.Request, peer netip.Addr) netip.Addr {
	if len(ri.cloudflare) > 0 && contains(ri.cloudflare, peer) {
		if a, err := netip.ParseAddr(strings.TrimSpace(r.Header.Get("CF-Connecting-IP"))); err == nil {
			return a.Unmap()
		}
		return peer
	}
	if len(ri.trusted) == 0 || !contains(ri.trusted, peer) {
		return peer
	}
	client := peer
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		parts := strings.Split(values[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client // garbage: stop at the last address we could trust
			}
			client = a.Unmap()
			if !contains(ri.trusted, client) {
				return client
			}
		}
	}
	return client
}

type clientKey struct{}

// ClientIP is the real client address of a request that passed the edge,
// for the layers after it (the limiter, the guard, the activity log).
func ClientIP(ctx context.Context) (netip.Addr, bool) {
	a, ok := ctx.Value(clientKey{}).(netip.Addr)
	return a, ok
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
