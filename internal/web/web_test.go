package web

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"moat/internal/certs"
	"moat/internal/config"
)

func TestStatusPage(t *testing.T) {
	h := Status(slog.New(slog.DiscardHandler), func() View {
		return View{
			Title:        "moat",
			Apps:         []config.App{{Name: "gitea", Domains: []string{"git.example.com"}, Upstream: "http://127.0.0.1:3000"}},
			Certificates: []certs.Status{{Domain: "git.example.com", State: certs.WaitingDNS, Message: "<script>alert(1)</script>"}},
		}
	})
	tests := []struct {
		path     string
		code     int
		contains []string
	}{
		{"/", 200, []string{"gitea", "git.example.com", "waiting-dns", "&lt;script&gt;"}},
		{"/other", 404, nil},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		res := rec.Result()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != tt.code {
			t.Errorf("%s: %d, want %d", tt.path, res.StatusCode, tt.code)
		}
		for _, c := range tt.contains {
			if !strings.Contains(string(body), c) {
				t.Errorf("%s: page lacks %q", tt.path, c)
			}
		}
		if tt.code == 200 {
			if strings.Contains(string(body), "<script>") {
				t.Error("page contains an unescaped script tag")
			}
			if got := res.Header.Get("Content-Security-Policy"); got != CSP || !strings.Contains(got, "default-src 'none'") {
				t.Errorf("CSP %q", got)
			}
		}
	}
}
