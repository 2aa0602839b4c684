package edge

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the edge's Prometheus metrics. They are registered on the
// registry the daemon serves on its admin listener, never on the public
// ports.
type Metrics struct {
	requests *prometheus.CounterVec
	limited  *prometheus.CounterVec
	cache    *prometheus.CounterVec
	upstream *prometheus.HistogramVec
}

// NewMetrics creates the edge's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_http_requests_total", Help: "Requests answered by the edge, by app and status code.",
		}, []string{"app", "code"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_ratelimit_rejections_total", Help: "Requests refused by the rate limiter, by app.",
		}, []string{"app"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_cache_requests_total", Help: "Output cache outcomes (HIT, MISS, BYPASS), by app.",
		}, []string{"app", "status"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_upstream_response_seconds", Help: "Time until the app's response headers arrive, by app.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"app"}),
	}
	reg.MustRegister(m.requests, m.limited, m.cache, m.upstream)
	return m
}

// observe counts one finished request.
func (m *Metrics) observe(app string, rec *recorder) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(app, strconv.Itoa(rec.status)).Inc()
	if rec.limited {
		m.limited.WithLabelValues(app).Inc()
	}
	if rec.cache != "" {
		m.cache.WithLabelValues(app, rec.cache).Inc()
	}
}

// timedTransport measures how long an app takes to answer.
type timedTransport struct {
	next http.RoundTripper
	hist prometheus.Observer
}

func (t timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	t.hist.Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *Metrics) transport(app string, next http.RoundTripper) http.RoundTripper {
	if m == nil {
		return next
	}
	return timedTransport{next: next, hist: m.upstream.WithLabelValues(app)}
}
