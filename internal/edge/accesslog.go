package edge

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// recorder wraps a response to learn what happened to it: status, bytes,
// and what the limiter and the cache did, for the access log and metrics.
type recorder struct {
	http.ResponseWriter
	status  int
	bytes   int64
	limited bool
	cache   string
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.status = code // 1xx hints come before the real status
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack (streaming,
// WebSockets) on the connection's own writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush passes streaming through at once.
func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	http.NewResponseController(r.ResponseWriter).Flush()
}

// SetLimited is called by the rate limiter when it refuses the request.
func (r *recorder) SetLimited() { r.limited = true }

// SetCacheStatus is called by the output cache with HIT, MISS or BYPASS.
func (r *recorder) SetCacheStatus(s string) { r.cache = s }

// logAccess writes one JSON access-log line.
func logAccess(l *slog.Logger, r *http.Request, rec *recorder, app string, client string, took time.Duration) {
	status := rec.status
	if status == 0 {
		status = http.StatusSwitchingProtocols // hijacked (WebSocket) or nothing written
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("client", client),
		slog.String("host", r.Host),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes", rec.bytes),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
		slog.String("app", app),
		slog.String("cache", rec.cache),
		slog.Bool("limited", rec.limited),
	)
}
