package edge

import (
	"net/http"
	"net/netip"
	"testing"

	"moat/internal/config"
)

func TestRealIP(t *testing.T) {
	trusted := newRealIP(config.Server{TrustedProxies: []string{"127.0.0.1", "10.0.0.0/8"}})
	cf := newRealIP(config.Server{Cloudflare: config.Cloudflare{Enabled: true}})
	cfCustom := newRealIP(config.Server{Cloudflare: config.Cloudflare{Enabled: true, Ranges: []string{"127.0.0.0/8"}}})
	none := newRealIP(config.Server{})
	tests := []struct {
		name    string
		ri      realIP
		peer    string
		headers map[string][]string
		want    string
	}{
		{"no proxies: spoofed XFF ignored", none, "198.51.100.7", map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "198.51.100.7"},
		{"untrusted peer: XFF ignored", trusted, "198.51.100.7", map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "198.51.100.7"},
		{"trusted peer: XFF used", trusted, "127.0.0.1", map[string][]string{"X-Forwarded-For": {"203.0.113.9"}}, "203.0.113.9"},
		{"right-most untrusted wins over a spoofed left", trusted, "127.0.0.1", map[string][]string{"X-Forwarded-For": {"6.6.6.6, 203.0.113.9, 10.1.2.3"}}, "203.0.113.9"},
		{"several XFF headers", trusted, "127.0.0.1", map[string][]string{"X-Forwarded-For": {"6.6.6.6", "203.0.113.9, 10.0.0.1"}}, "203.0.113.9"},
		{"all trusted: left-most", trusted, "127.0.0.1", map[string][]string{"X-Forwarded-For": {"10.0.0.2, 10.0.0.1"}}, "10.0.0.2"},
		{"garbage stops the walk", trusted, "127.0.0.1", map[string][]string{"X-Forwarded-For": {"203.0.113.9, nonsense"}}, "127.0.0.1"},
		{"trusted peer, no XFF", trusted, "127.0.0.1", nil, "127.0.0.1"},
		{"v4-mapped XFF", trusted, "127.0.0.1", map[string][]string{"X-Forwarded-For": {"::ffff:203.0.113.9"}}, "203.0.113.9"},
		{"CF header from a stranger ignored", cf, "198.51.100.7", map[string][]string{"Cf-Connecting-Ip": {"1.2.3.4"}}, "198.51.100.7"},
		{"CF header from Cloudflare used", cf, "104.16.0.1", map[string][]string{"Cf-Connecting-Ip": {"203.0.113.9"}}, "203.0.113.9"},
		{"CF v6", cf, "2606:4700::1", map[string][]string{"Cf-Connecting-Ip": {"2001:db8::5"}}, "2001:db8::5"},
		{"CF replaced ranges", cfCustom, "127.0.0.1", map[string][]string{"Cf-Connecting-Ip": {"203.0.113.9"}}, "203.0.113.9"},
		{"replaced ranges drop the built-in", cfCustom, "104.16.0.1", map[string][]string{"Cf-Connecting-Ip": {"203.0.113.9"}}, "104.16.0.1"},
		{"CF bad header", cf, "104.16.0.1", map[string][]string{"Cf-Connecting-Ip": {"x"}}, "104.16.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{Header: http.Header(tt.headers)}
			if got := tt.ri.client(r, netip.MustParseAddr(tt.peer)); got != netip.MustParseAddr(tt.want) {
				t.Errorf("client = %v, want %s", got, tt.want)
			}
		})
	}
}
