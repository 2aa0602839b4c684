package edge

import (
	"fmt"
	"net/http"

	"moat/internal/config"
	"moat/internal/ratelimit"
)

// limits turns the rate-limit settings into the limiter's policies.
type limits struct {
	server   config.RateLimit
	v6Prefix int
	allow    *ratelimit.Allowlist
}

func newLimits(s config.Server) (limits, error) {
	l := limits{server: s.RateLimit, v6Prefix: s.RateLimit.IPv6Prefix}
	if l.v6Prefix == 0 {
		l.v6Prefix = ratelimit.DefaultV6Prefix
	}
	allow, err := ratelimit.ParseAllowlist(s.RateLimit.Allow)
	if err != nil {
		return l, fmt.Errorf("server.rate_limit.allow: %w", err)
	}
	l.allow = allow
	return l, nil
}

func rule(r config.RateLimit) ratelimit.Rule {
	if r.Requests == 0 {
		return ratelimit.DefaultRule()
	}
	return ratelimit.Rule{Requests: r.Requests, Per: r.PerDuration(), Burst: r.Burst}
}

// policy returns the limiter policy of an app, or nil when the app is not
// limited. An app with its own limit counts in its own buckets (scope);
// the others share the server's.
func (l limits) policy(scope uint32, app config.RateLimit) (ratelimit.Policy, error) {
	r, own := l.server, app.Requests > 0
	if own {
		r = app
	}
	if app.Off || (!own && l.server.Off) {
		return nil, nil
	}
	if !own {
		scope = 0
	}
	ru := rule(r)
	if err := ru.Validate(); err != nil {
		return nil, err
	}
	v6, allow := l.v6Prefix, l.allow
	return func(req *http.Request) (ratelimit.Rule, ratelimit.Key, bool) {
		ip, _ := ClientIP(req.Context())
		if allow.Contains(ip) {
			return ru, ratelimit.Key{}, false
		}
		return ru, ratelimit.KeyFor(scope, ip, v6), true
	}, nil
}
