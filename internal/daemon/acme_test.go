package daemon

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/store"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// An app's domain gets a certificate from Pebble over each challenge type,
// and a client that trusts only Pebble's root reaches the app through moat
// with the security headers.
func TestIssueAndServe(t *testing.T) {
	t.Parallel()
	for _, ch := range []string{config.ChallengeHTTP01, config.ChallengeTLSALPN01} {
		t.Run(ch, func(t *testing.T) {
			t.Parallel()
			e := startEnv(t, withChallenges(ch))
			e.dns.Set("app.test", loopback)
			e.addApp("app", "app.test")
			st := e.waitCert("app.test", 30*time.Second, isValid)
			if time.Until(st.NotAfter) < time.Hour {
				t.Errorf("valid until %v: want Pebble's long default", st.NotAfter)
			}
			resp, body := get(t, e.httpsClient(e.pebble.Roots()), e.url("app.test", "/"))
			if resp.StatusCode != 200 || body != "hello from app.test:"+strconv.Itoa(e.httpsPort)+" via https" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			for k, v := range map[string]string{
				"Strict-Transport-Security": "max-age=31536000",
				"X-Content-Type-Options":    "nosniff",
				"X-Frame-Options":           "SAMEORIGIN",
				"Referrer-Policy":           "same-origin",
			} {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if !contains(e.pebble.Orders(), "app.test") {
				t.Errorf("Pebble orders %v: want one for app.test", e.pebble.Orders())
			}
		})
	}
}

// A name that is no app's domain gets no certificate, and no order is
// placed for it.
func TestUnlistedDomainGetsNothing(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.dns.Set("app.test", loopback)
	e.dns.Set("stranger.test", loopback)
	e.addApp("app", "app.test")
	e.waitCert("app.test", 30*time.Second, isValid)
	if _, err := e.servedCert("stranger.test", e.pebble.Roots()); err == nil {
		t.Fatal("handshake for stranger.test succeeded; want it refused")
	}
	time.Sleep(time.Second) // an order, if one were placed, would be placed by now
	if contains(e.pebble.Orders(), "stranger.test") {
		t.Errorf("Pebble got an order for stranger.test: %v", e.pebble.Orders())
	}
}

// Short-lived certificates renew before they expire while requests keep
// succeeding; then, with Pebble stopped, the renewal failure shows in the
// status and the activity log with its reason, and the old certificate
// keeps serving.
func TestRenewalAndRenewalFailure(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withValidity(30*time.Second))
	e.dns.Set("app.test", loopback)
	e.addApp("app", "app.test")
	first := e.waitCert("app.test", 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())

	var failures atomic.Int64
	var requests atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			resp, err := c.Get(e.url("app.test", "/"))
			requests.Add(1)
			if err != nil || resp.StatusCode != 200 {
				failures.Add(1)
				t.Logf("request during renewal: %v", err)
			}
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	renewed := e.waitCert("app.test", 45*time.Second, func(s certs.Status) bool {
		return s.State == certs.Valid && s.NotAfter.After(first.NotAfter)
	})
	leaf, err := e.servedCert("app.test", e.pebble.Roots())
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.After(first.NotAfter) {
		t.Errorf("served certificate valid until %v; want the renewed one (until %v)", leaf.NotAfter, renewed.NotAfter)
	}
	cancel()
	wg.Wait()
	if failures.Load() > 0 || requests.Load() < 10 {
		t.Errorf("%d of %d requests failed across the renewal", failures.Load(), requests.Load())
	}

	e.pebble.Stop()
	failed := e.waitCert("app.test", 45*time.Second, func(s certs.Status) bool { return s.State == certs.RenewalFailed })
	if failed.Message == "" || failed.NextRetry.IsZero() || !strings.Contains(failed.Message, "connect") {
		t.Errorf("renewal failure status %+v: want the reason (connection refused) and the next retry", failed)
	}
	if leaf, err := e.servedCert("app.test", e.pebble.Roots()); err != nil {
		t.Errorf("after the failed renewal the handshake fails: %v", err)
	} else if !leaf.NotAfter.Equal(failed.NotAfter) {
		t.Errorf("after the failed renewal the edge serves a certificate valid until %v; want the current one, valid until %v", leaf.NotAfter, failed.NotAfter)
	}
	if out := e.moat("status"); !strings.Contains(out, "renewal-failed: ") || !strings.Contains(out, "connect") || !strings.Contains(out, "next try") {
		t.Errorf("moat status does not show the renewal failure with its reason and next try:\n%s", out)
	}
	var log []store.Entry
	if err := e.client.Do(context.Background(), "GET", "/v1/activity?target=app.test", nil, &log); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, en := range log {
		actions = append(actions, en.Action)
		if en.Action == "cert.renewal-failed" && !strings.Contains(en.Detail, "connect") {
			t.Errorf("activity entry %+v: want the reason", en)
		}
	}
	for _, want := range []string{"cert.issued", "cert.renewed", "cert.renewal-failed"} {
		if !contains(actions, want) {
			t.Errorf("activity for app.test %v: want %s", actions, want)
		}
	}
}

// A domain whose DNS points elsewhere is held back with a plain-words
// status and no order; once DNS is fixed, it gets its certificate.
func TestDNSPrecheck(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.dns.Set("elsewhere.test", netip.MustParseAddr("127.0.0.2"))
	e.dns.Set("orange.test", netip.MustParseAddr("104.16.1.1"))
	e.addApp("app", "elsewhere.test", "orange.test", "missing.test")

	tests := []struct{ domain, want string }{
		{"elsewhere.test", "elsewhere.test resolves to 127.0.0.2 but this server is 127.0.0.1: create an A (or AAAA) record for elsewhere.test pointing to 127.0.0.1, or a CNAME to moat.test"},
		{"orange.test", "Cloudflare's proxy (the orange cloud)"},
		{"missing.test", "missing.test does not exist in DNS"},
	}
	for _, tt := range tests {
		st := e.waitCert(tt.domain, 15*time.Second, func(s certs.Status) bool { return s.State == certs.WaitingDNS })
		if !strings.Contains(st.Message, tt.want) || st.NextRetry.IsZero() {
			t.Errorf("%s: status %+v, want a message with %q and a next retry", tt.domain, st, tt.want)
		}
	}
	for _, o := range e.pebble.Orders() {
		t.Errorf("Pebble got an order for %s while DNS did not point here", o)
	}
	e.dns.Set("elsewhere.test", loopback)
	e.waitCert("elsewhere.test", 30*time.Second, isValid)
}
