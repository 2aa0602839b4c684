package edge

import (
	"net/http"
	"net/netip"
)

// Bans says whether a client is banned: the brute-force guard's list.
type Bans interface {
	Banned(addr netip.Addr) bool
}

// banCheck refuses a banned client before anything else of the app's
// chain runs. The kernel drops a banned address itself; this check is for
// the clients it cannot see, behind a trusted proxy (behind Cloudflare the
// kernel sees Cloudflare's address, and only the edge knows the real one).
func banCheck(bans Bans, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if client, ok := ClientIP(r.Context()); ok && bans.Banned(client) {
			w.Header().Set("Cache-Control", "no-store")
			plain(w, http.StatusForbidden, "403 Forbidden: your address is banned for repeated failed logins. Try again later.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withBanCheck puts the ban check in front of moat's own pages too; nil
// stays nil (404).
func withBanCheck(bans Bans, h http.Handler) http.Handler {
	if bans == nil || h == nil {
		return h
	}
	return banCheck(bans, h)
}
