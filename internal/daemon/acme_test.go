package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"io/fs"
	"net/http"
	"net/netip"
	"path/filepath"
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
			e.dns.Set(e.host("app"), loopback)
			e.addApp("app", e.host("app"))
			st := e.waitCert(e.host("app"), 30*time.Second, isValid)
			if time.Until(st.NotAfter) < time.Hour {
				t.Errorf("valid until %v: want Pebble's long default", st.NotAfter)
			}
			resp, body := get(t, e.httpsClient(e.pebble.Roots()), e.url(e.host("app"), "/"))
			if resp.StatusCode != 200 || body != "hello from "+e.host("app")+":"+strconv.Itoa(e.httpsPort)+" via https" {
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
			leaf, err := e.servedCert(e.host("app"), e.pebble.Roots())
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("certificate key %T, want ECDSA P-256", leaf.PublicKey)
			}
			assertPrivate(t, e.dir)
			if !contains(e.pebble.Orders(), e.host("app")) {
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
	e.dns.Set(e.host("app"), loopback)
	e.dns.Set(e.host("stranger"), loopback)
	e.addApp("app", e.host("app"))
	e.waitCert(e.host("app"), 30*time.Second, isValid)
	if _, err := e.servedCert(e.host("stranger"), e.pebble.Roots()); err == nil {
		t.Fatal("handshake for stranger.test succeeded; want it refused")
	}
	time.Sleep(time.Second) // an order, if one were placed, would be placed by now
	if contains(e.pebble.Orders(), e.host("stranger")) {
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
	alerts := e.webhookAlerts()
	e.dns.Set(e.host("app"), loopback)
	e.addApp("app", e.host("app"))
	first := e.waitCert(e.host("app"), 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())
	c.Transport.(*http.Transport).DisableKeepAlives = true // every request a new handshake

	var failures atomic.Int64
	var requests atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // also when the test stops early
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			resp, err := c.Get(e.url(e.host("app"), "/"))
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
	renewed := e.waitCert(e.host("app"), 45*time.Second, func(s certs.Status) bool {
		return s.State == certs.Valid && s.NotAfter.After(first.NotAfter)
	})
	leaf, err := e.servedCert(e.host("app"), e.pebble.Roots())
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
	failed := e.waitCert(e.host("app"), 45*time.Second, func(s certs.Status) bool { return s.State == certs.RenewalFailed })
	if failed.Message == "" || failed.NextRetry.IsZero() || !strings.Contains(failed.Message, "connect") {
		t.Errorf("renewal failure status %+v: want the reason (connection refused) and the next retry", failed)
	}
	if leaf, err := e.servedCert(e.host("app"), e.pebble.Roots()); err != nil {
		t.Errorf("after the failed renewal the handshake fails: %v", err)
	} else if !leaf.NotAfter.Equal(failed.NotAfter) {
		t.Errorf("after the failed renewal the edge serves a certificate valid until %v; want the current one, valid until %v", leaf.NotAfter, failed.NotAfter)
	}
	select {
	case a := <-alerts:
		if a.Kind != "cert.renewal-failed" || a.Subject != e.host("app") || !strings.Contains(a.Message, "connect") {
			t.Errorf("webhook alert %+v: want the renewal failure of app.test with its reason", a)
		}
	case <-time.After(10 * time.Second):
		t.Error("no webhook alert for the renewal failure")
	}
	if out := e.moat("status"); !strings.Contains(out, "renewal-failed: ") || !strings.Contains(out, "connect") || !strings.Contains(out, "next try") {
		t.Errorf("moat status does not show the renewal failure with its reason and next try:\n%s", out)
	}
	var log []store.Entry
	if err := e.client.Do(context.Background(), "GET", "/v1/activity?target="+e.host("app"), nil, &log); err != nil {
		t.Fatal(err)
	}
	var actions []string
	var issuedUntil, renewedUntil string
	for _, en := range log { // newest first
		switch en.Action {
		case "cert.issued":
			issuedUntil = en.Detail
		case "cert.renewed":
			renewedUntil = en.Detail // ends on the first renewal
		}
	}
	if issuedUntil == "" || renewedUntil == "" || renewedUntil <= issuedUntil {
		t.Errorf("first renewal logged %q after issuance %q: want a later expiry", renewedUntil, issuedUntil)
	}
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
	e.dns.Set(e.host("elsewhere"), netip.MustParseAddr("127.0.0.2"))
	e.dns.Set(e.host("orange"), netip.MustParseAddr("104.16.1.1"))
	e.addApp("app", e.host("elsewhere"), e.host("orange"), e.host("missing"))

	tests := []struct{ domain, want string }{
		{e.host("elsewhere"), e.host("elsewhere") + " resolves to 127.0.0.2 but this server is 127.0.0.1: create an A (or AAAA) record for " + e.host("elsewhere") + " pointing to 127.0.0.1, or a CNAME to moat.test"},
		{e.host("orange"), "Cloudflare's proxy (the orange cloud)"},
		{e.host("missing"), e.host("missing") + " does not exist in DNS"},
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
	e.dns.Set(e.host("elsewhere"), loopback)
	e.waitCert(e.host("elsewhere"), 30*time.Second, isValid)
}

// assertPrivate checks that no secret in the data dir (private keys, the
// store, ACME account keys) is readable by anyone but its owner.
func assertPrivate(t *testing.T, dir string) {
	t.Helper()
	keys := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if strings.HasSuffix(name, ".key") || strings.HasPrefix(name, "moat.db") {
			keys++
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v: secrets must be 0600", path, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys < 3 {
		t.Errorf("found %d secret files under %s; want the store, the account key and the certificate key", keys, dir)
	}
}
