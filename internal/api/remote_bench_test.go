package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/secret"
	"moat/internal/store"
)

// BenchmarkSignInPassword is the server's cost of a sign-in's password
// step with the shipped argon2id parameters (secret.Default): the hash,
// the pending session and the mailed code. Each sign-in comes from its
// own address, as the per-address limit would otherwise hold them.
// Run it on one core: go test -run - -bench SignIn -cpu 1 ./internal/api
func BenchmarkSignInPassword(b *testing.B) {
	rg := newRemoteWith(b, secret.Default)
	rg.account("owner@example.com", auth.RoleAdmin)
	body := fmt.Sprintf(`{"email":"owner@example.com","password":%q}`, testPassword)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		req := httptest.NewRequest("POST", "https://moat.example.com/v1/auth/signin", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(fromHeader, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		w := httptest.NewRecorder()
		rg.handler.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("sign-in %d: %d %s", i, w.Code, w.Body)
		}
	}
}

// BenchmarkAppsWithToken is GET /v1/apps with a Bearer token, through the
// HTTPS API's whole handler (token check, authorization, the store's
// state, JSON), without the TLS connection.
// Run it on one core: go test -run - -bench AppsWithToken -cpu 1 ./internal/api
func BenchmarkAppsWithToken(b *testing.B) {
	rg := newRemote(b)
	a := rg.account("owner@example.com", auth.RoleAdmin)
	ctx := context.Background()
	tok, _, err := rg.auth.CreateToken(ctx, auth.Actor{Who: "owner@example.com", From: "test"}, a.ID, "bench", auth.ScopeRead, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	st, _, err := rg.st.State(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		st.Apps = append(st.Apps, config.App{Name: fmt.Sprintf("app%d", i), Domains: []string{fmt.Sprintf("app%d.example.com", i)}, Upstream: "http://127.0.0.1:3000"})
	}
	if _, err := rg.st.Update(ctx, store.Actor{Who: "test", From: "test"}, false, func(s *config.State) error { *s = st; return nil }); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "https://moat.example.com/v1/apps", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		rg.handler.ServeHTTP(w, req)
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "app9") {
			b.Fatalf("GET /v1/apps: %d %s", w.Code, w.Body)
		}
	}
}
