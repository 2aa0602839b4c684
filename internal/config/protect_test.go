package config

import (
	"testing"
	"time"
)

// The edge-protection settings: rate limits, trusted proxies, Cloudflare,
// the cache and the admin listener.
func TestValidateProtection(t *testing.T) {
	good := func() State {
		return State{Apps: []App{{Name: "blog", Domains: []string{"blog.example.com"}, Upstream: "http://127.0.0.1:3000"}}}
	}
	tests := []struct {
		name   string
		mutate func(*State)
		want   []wantErr
	}{
		{"good limits", func(s *State) {
			s.Server.RateLimit = RateLimit{Requests: 600, Per: "minute", Burst: 50, IPv6Prefix: 56, Allow: []string{"203.0.113.7", "10.0.0.0/8"}}
			s.Apps[0].RateLimit = RateLimit{Requests: 10, Per: "second"}
			s.Server.TrustedProxies = []string{"127.0.0.1", "10.1.0.0/16"}
			s.Server.Cloudflare = Cloudflare{Enabled: true, Ranges: []string{"173.245.48.0/20"}}
			s.Apps[0].Cache.TTL = "0s"
		}, nil},
		{"negative requests", func(s *State) { s.Server.RateLimit.Requests = -1 },
			[]wantErr{{"server.rate_limit.requests", "-1", "is not a count", "write how many requests a client may make per period, like 150"}}},
		{"per without requests", func(s *State) { s.Server.RateLimit.Per = "second" },
			[]wantErr{{"server.rate_limit.requests", "", "is missing", "give requests with per and burst, like requests: 150, per: minute"}}},
		{"bad period", func(s *State) { s.Apps[0].RateLimit = RateLimit{Requests: 5, Per: "fortnight"} },
			[]wantErr{{"apps[0].rate_limit.per", "fortnight", "is not a period", "write second, minute, or a duration from 1s to 24h like 10s"}}},
		{"ipv6 prefix on an app", func(s *State) { s.Apps[0].RateLimit = RateLimit{Requests: 5, IPv6Prefix: 64} },
			[]wantErr{{"apps[0].rate_limit.ipv6_prefix", "64", "is a server setting", "set server.rate_limit.ipv6_prefix instead"}}},
		{"ipv6 prefix too short", func(s *State) { s.Server.RateLimit.IPv6Prefix = 8 },
			[]wantErr{{"server.rate_limit.ipv6_prefix", "8", "is not a prefix length", "write how many leading bits make one IPv6 client, like 64 (the default)"}}},
		{"bad allow entry", func(s *State) { s.Server.RateLimit.Allow = []string{"10.0.0.0/33"} },
			[]wantErr{{"server.rate_limit.allow[0]", "10.0.0.0/33", "is not an IP address or CIDR", "write an address or network that is never limited, like 203.0.113.7 or 10.0.0.0/8"}}},
		{"bad trusted proxy", func(s *State) { s.Server.TrustedProxies = []string{"proxy.example.com"} },
			[]wantErr{{"server.trusted_proxies[0]", "proxy.example.com", "is not an IP address or CIDR", "write the proxy's address or network, like 10.0.0.2 or 10.0.0.0/24"}}},
		{"bad cloudflare range", func(s *State) { s.Server.Cloudflare.Ranges = []string{"cloudflare"} },
			[]wantErr{{"server.cloudflare.ranges[0]", "cloudflare", "is not a CIDR", "write a network like 173.245.48.0/20, or leave ranges out to use the built-in list"}}},
		{"bad cache ttl", func(s *State) { s.Apps[0].Cache.TTL = "forever" },
			[]wantErr{{"apps[0].cache.ttl", "forever", "is not a duration", "write how long responses are kept, like 3s, or 0s to turn the cache off"}}},
		{"bad admin listen", func(s *State) { s.Server.Listen.Admin = "localhost" },
			[]wantErr{{"server.listen.admin", "localhost", "is not host:port", "write host:port or :port, like :443 or 127.0.0.1:8443"}}},
		{"bad access log", func(s *State) { s.Server.AccessLog = "maybe" },
			[]wantErr{{"server.access_log", "maybe", "is neither on nor off", "write on or off"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.mutate(&s)
			checkErrors(t, s.Validate(), tt.want)
		})
	}
}

func TestProtectionDefaults(t *testing.T) {
	var a App
	if a.CacheTTL() != 3*time.Second {
		t.Errorf("default cache TTL %v", a.CacheTTL())
	}
	a.Cache.TTL = "0s"
	if a.CacheTTL() != 0 {
		t.Errorf("0s TTL gives %v", a.CacheTTL())
	}
	for per, want := range map[string]time.Duration{"": time.Minute, "minute": time.Minute, "second": time.Second, "10s": 10 * time.Second} {
		if got := (RateLimit{Per: per}).PerDuration(); got != want {
			t.Errorf("per %q: %v, want %v", per, got, want)
		}
	}
	if (Server{}).AdminAddr() != "127.0.0.1:9180" {
		t.Error("admin listener not on loopback by default")
	}
	for in, want := range map[string]string{"10.0.0.7/8": "10.0.0.0/8", "203.0.113.7": "203.0.113.7/32", "::ffff:1.2.3.4": "1.2.3.4/32", "2001:db8::1": "2001:db8::1/128"} {
		if p, err := ParsePrefix(in); err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
}
