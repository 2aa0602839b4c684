package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/certs"
	"moat/internal/config"
)

// fiftyApps is a site with 50 apps and a signed-in session's cookie.
func fiftyApps(t testing.TB) (*site, *http.Cookie) {
	t.Helper()
	s := newSite(t)
	for i := range 50 {
		s.addApp(t, config.App{Name: fmt.Sprintf("app%02d", i), Domains: []string{fmt.Sprintf("app%02d.example.com", i), fmt.Sprintf("www.app%02d.example.com", i)}, Upstream: "http://127.0.0.1:3000"})
	}
	ctx := context.Background()
	if _, err := s.auth.AddAccount(ctx, auth.Actor{Who: "root", From: "unix"}, "owner@example.com", "", auth.RoleAdmin, testPassword); err != nil {
		t.Fatal(err)
	}
	in, err := s.auth.SignIn(ctx, auth.Client{}, "owner@example.com", testPassword)
	if err != nil {
		t.Fatal(err)
	}
	full, err := s.auth.Second(ctx, auth.Client{}, in.Token, auth.FactorEmail, s.lastCode(t))
	if err != nil {
		t.Fatal(err)
	}
	return s, &http.Cookie{Name: api.CookieName, Value: full.Token}
}

var assetRE = regexp.MustCompile(`(?:href|src)="(/assets/[^"]+)"`)

// TestOverviewWeight: the Overview with 50 apps and every file it loads
// stay under 100 KB uncompressed, with no web font.
func TestOverviewWeight(t *testing.T) {
	s, cookie := fiftyApps(t)
	get := func(path string) []byte {
		t.Helper()
		req, _ := http.NewRequest("GET", s.srv.URL+path, nil)
		req.AddCookie(cookie)
		resp, err := s.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		return b
	}
	page := get("/")
	total := len(page)
	files := map[string]int{"/": len(page)}
	for _, m := range assetRE.FindAllSubmatch(page, -1) {
		n := len(get(string(m[1])))
		files[string(m[1])] = n
		total += n
	}
	t.Logf("Overview with 50 apps: %d bytes in all: %v", total, files)
	if total > 100<<10 {
		t.Errorf("the Overview and its files weigh %d bytes, over 100 KB", total)
	}
	if regexp.MustCompile(`@font-face|\.woff`).Match(get("/assets/moat.css")) {
		t.Error("the dashboard loads a web font")
	}
}

// BenchmarkOverview50Apps is the server's time to answer the Overview
// with 50 apps: the API's status, firewall, guard and activity asked in
// this process, and the page drawn.
func BenchmarkOverview50Apps(b *testing.B) {
	s, cookie := fiftyApps(b)
	h := s.srv.Config.Handler
	req := httptest.NewRequest("GET", "https://moat.test/", nil)
	req.AddCookie(cookie)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

func TestCertWords(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		c      certs.Status
		daemon bool
		want   string
		class  string
	}{
		{certs.Status{State: certs.Valid, NotAfter: now.Add(89 * 24 * time.Hour)}, true, "certificate valid until 6 Mar 2027 10:00 UTC (89 days left)", "good"},
		{certs.Status{State: certs.WaitingDNS, Message: "git.example.com points to 198.51.100.1, not this server (203.0.113.7): set its A record", NextRetry: now.Add(time.Minute)}, true,
			"waiting for DNS: git.example.com points to 198.51.100.1, not this server (203.0.113.7): set its A record; moat tries again at 7 Dec 2026 10:01 UTC", "wait"},
		{certs.Status{State: certs.RenewalFailed, Message: "the CA refused: rate limited", NotAfter: now.Add(10 * 24 * time.Hour), NextRetry: now.Add(time.Hour)}, true,
			"renewal failed: the CA refused: rate limited; the current certificate is still valid until 17 Dec 2026 10:00 UTC; moat tries again at 7 Dec 2026 11:00 UTC", "bad"},
		{certs.Status{State: certs.Failed, Message: "timeout"}, true, "no certificate yet: timeout", "bad"},
		{certs.Status{State: certs.Issuing}, true, "a certificate is being ordered", "wait"},
		{certs.Status{}, false, "no certificate state: moat's daemon is not running", "wait"},
	} {
		got, class := certWords(tc.c, tc.daemon, now)
		if got != tc.want || class != tc.class {
			t.Errorf("%s: %q (%s), want %q (%s)", tc.c.State, got, class, tc.want, tc.class)
		}
	}
}
