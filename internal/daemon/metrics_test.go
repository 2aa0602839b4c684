package daemon

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Metrics answer on the admin listener and not on the public ports.
func TestMetricsOnlyOnAdmin(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.dns.Set(e.host("app"), loopback)
	e.addApp("app", e.host("app"))
	e.waitCert(e.host("app"), 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())
	get(t, c, e.url(e.host("app"), "/"))

	resp, err := http.Get("http://" + e.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`moat_http_requests_total{app="app",code="200"} 1`,
		`moat_certificate_expiry_timestamp_seconds{domain="` + e.host("app") + `"}`,
		"moat_upstream_response_seconds_bucket",
		"moat_cache_requests_total",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if resp, err := http.Get("http://" + e.admin + "/debug/pprof/"); err != nil || resp.StatusCode != 200 {
		t.Errorf("profiles on the loopback admin listener: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// On the public HTTPS port /metrics is the app's path like any other.
	_, public := get(t, c, e.url(e.host("app"), "/metrics"))
	if strings.Contains(public, "moat_") {
		t.Errorf("the public port serves metrics: %.200s", public)
	}
	if !strings.HasPrefix(public, "hello from") {
		t.Errorf("public /metrics: %q, want the app's answer", public)
	}
	if !strings.Contains(e.accessLog.String(), `"path":"/metrics"`) {
		t.Errorf("access log lacks the request:\n%s", e.accessLog.String())
	}
}
