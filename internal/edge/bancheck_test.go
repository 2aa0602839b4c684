package edge

import (
	"context"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/config"
	"moat/internal/guard"
)

// TestBanCheckBehindAProxy: a client banned by the guard is refused with
// 403 at the edge, though the kernel sees only the trusted proxy's
// address; other clients behind the same proxy pass, and a lifted ban
// lets the client in again. The refusal never reaches the app, nor the
// cache (a banned client's request must not fill it for others).
func TestBanCheckBehindAProxy(t *testing.T) {
	var hits atomic.Int64
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "no-store")
	}))
	bans := guard.NewSet(nil)
	own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("moat's own page")) })
	te := startEdgeOpts(t, protected(config.RateLimit{}, config.App{Name: "app", Domains: []string{"app.localhost"}, Upstream: up}), Options{Bans: bans, Fallback: own})
	ctx := context.Background()
	bans.Ban(ctx, netip.MustParsePrefix("203.0.113.7/32"), time.Hour)
	bans.Ban(ctx, netip.MustParsePrefix("2001:db8:1::/64"), 0)
	for _, h2 := range []bool{false, true} { // the fast lane, and net/http over HTTP/2
		c := te.client(h2)
		url := "https://app.localhost/"
		cases := []struct {
			client string
			want   int
		}{
			{"203.0.113.7", http.StatusForbidden},
			{"2001:db8:1::9", http.StatusForbidden},
			{"203.0.113.8", http.StatusOK},
			{"2001:db8:2::9", http.StatusOK},
		}
		before := hits.Load()
		for _, tc := range cases {
			if resp := getAs(t, c, url, tc.client); resp.StatusCode != tc.want {
				t.Errorf("client %s: %d, want %d", tc.client, resp.StatusCode, tc.want)
			}
		}
		if n := hits.Load() - before; n != 2 {
			t.Errorf("the app saw %d requests, want the 2 from clients not banned", n)
		}
	}
	// moat's own pages refuse a banned client too.
	if resp := getAs(t, te.client(false), "https://localhost/", "203.0.113.7"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("moat's own page to a banned client: %d", resp.StatusCode)
	}
	if resp := getAs(t, te.client(false), "https://localhost/", "203.0.113.8"); resp.StatusCode != http.StatusOK {
		t.Errorf("moat's own page to another client: %d", resp.StatusCode)
	}
	bans.Unban(ctx, netip.MustParsePrefix("203.0.113.7/32"))
	if resp := getAs(t, te.client(false), "https://app.localhost/", "203.0.113.7"); resp.StatusCode != http.StatusOK {
		t.Errorf("after the unban: %d", resp.StatusCode)
	}
}
