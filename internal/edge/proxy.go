package edge

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/upstream"
)

// proxy is one app's way to its upstream. Most requests are a GET or HEAD
// without a body: those take the lean way, where the request's head is
// written straight from the visitor's request onto a pooled connection
// (no copy of the request, no goroutine hand-offs) and the answer is
// copied back. Everything else (bodies, WebSocket and other upgrades, an
// upstream with a path or over HTTPS) goes through httputil.ReverseProxy.
// Both ways follow the same rules, which TestLeanMatchesReverseProxy holds
// them to:
//
//   - the request keeps its Host; X-Forwarded-For is the real client,
//     X-Forwarded-Host and -Proto what the visitor used; whatever
//     Forwarded or X-Forwarded-* the visitor sent is dropped;
//   - hop-by-hop headers (the standard ones and those that Connection
//     names) go neither up nor down; "TE: trailers" goes up;
//   - no User-Agent or Accept-Encoding is made up for the visitor;
//   - the app's answer gets the security headers (route.headers);
//   - 1xx answers (103 Early Hints) are passed on;
//   - a body of unknown length or an event stream is flushed as it comes;
//   - an answer that breaks off mid-body aborts the visitor's response
//     (http.ErrAbortHandler), so that it cannot pass for a whole one.
type proxy struct {
	e    *Edge
	r    *route
	addr string // the upstream's host:port, for the lean way
	lean bool   // the upstream allows the lean way
	rp   *httputil.ReverseProxy
	hist prometheus.Observer // upstream latency; nil without metrics
}

func (e *Edge) newProxy(r *route, up *url.URL) *proxy {
	p := &proxy{e: e, r: r, rp: e.newReverseProxy(r, up)}
	if up.Scheme == "http" && (up.Path == "" || up.Path == "/") && up.RawQuery == "" && up.User == nil && up.Host != "" {
		p.lean = true
		p.addr = up.Host
		if up.Port() == "" {
			p.addr = net.JoinHostPort(up.Hostname(), "80")
		}
	}
	if e.metrics != nil {
		p.hist = e.metrics.upstream.WithLabelValues(r.app)
	}
	return p
}

func (e *Edge) newReverseProxy(r *route, up *url.URL) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Host = pr.In.Host // apps build links from the name the visitor used
			pr.SetXForwarded()
			if ip, ok := ClientIP(pr.In.Context()); ok {
				pr.Out.Header.Set("X-Forwarded-For", ip.String()) // the real client, behind trusted proxies too
			}
			pr.Out.Header.Del(UserHeader)
			pr.Out.Header.Del(EmailHeader)
			if v, ok := visitorOf(pr.In.Context()); ok {
				pr.Out.Header.Set(UserHeader, v.User)
				pr.Out.Header.Set(EmailHeader, v.Email)
			}
		},
		Transport:  e.metrics.transport(r.app, e.transport),
		BufferPool: e.buffers,
		ModifyResponse: func(resp *http.Response) error {
			r.headers.apply(resp.Header)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			e.upstreamFailed(w, req, r, up.Host, err)
		},
		ErrorLog: e.errorLog,
	}
}

// upstreamFailed answers 502 when the app could not be asked.
func (e *Edge) upstreamFailed(w http.ResponseWriter, req *http.Request, r *route, upHost string, err error) {
	if errors.Is(err, context.Canceled) || req.Context().Err() != nil {
		return // the client left
	}
	if errors.Is(err, upstream.ErrInvalidRequest) {
		e.log.Debug("request refused", "app", r.app, "err", err)
		r.headers.apply(w.Header())
		plain(w, http.StatusBadRequest, "400 Bad Request: this request cannot be passed on to the app.")
		return
	}
	e.log.Warn("upstream unreachable", "app", r.app, "upstream", upHost, "err", err)
	r.headers.apply(w.Header())
	plain(w, http.StatusBadGateway, "502 Bad Gateway: the app behind this address is not answering. If it is yours, check that it is running.")
}

// leanRequest reports whether r can take the lean way: GET or HEAD, no
// body, no upgrade, an ordinary path, and a query that ReverseProxy would
// pass on unchanged (it rewrites one with a semicolon or a bad escape).
func leanRequest(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 &&
		r.Header["Upgrade"] == nil && r.Header["Transfer-Encoding"] == nil &&
		r.URL.Opaque == "" && strings.HasPrefix(r.URL.Path, "/") && cleanQuery(r.URL.RawQuery)
}

func cleanQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer watchClient(r)()
	if !p.lean || !leanRequest(r) {
		p.rp.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	resp, err := p.e.transport.Do(r, p.addr, func(bw *bufio.Writer) error { return writeHead(bw, r) }, func(code int, h http.Header) error {
		informational(w, code, h)
		return nil
	})
	if p.hist != nil {
		p.hist.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		p.e.upstreamFailed(w, r, p.r, p.addr, err)
		return
	}
	removeHopByHop(resp.Header)
	p.r.headers.apply(resp.Header)
	dst := w.Header()
	for k, vv := range resp.Header {
		if old, ok := dst[k]; ok {
			dst[k] = append(old[:len(old):len(old)], vv...)
		} else {
			dst[k] = vv
		}
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	if err := p.copyBody(w, resp); err != nil {
		resp.Body.Close()
		panic(http.ErrAbortHandler) // net/http cuts the response off
	}
	resp.Body.Close() // fills resp.Trailer
	if len(resp.Trailer) > 0 {
		http.NewResponseController(w).Flush() // chunked, so that the trailers can follow
		for k, vv := range resp.Trailer {
			for _, v := range vv {
				dst.Add(http.TrailerPrefix+k, v)
			}
		}
	}
}

// copyBody sends the answer's body, flushing each piece at once when its
// length is unknown or it is an event stream.
func (p *proxy) copyBody(w http.ResponseWriter, resp *http.Response) error {
	flush := resp.ContentLength == -1 || eventStream(resp.Header.Get("Content-Type"))
	var flusher *http.ResponseController
	if flush {
		flusher = http.NewResponseController(w)
	}
	buf := p.e.buffers.Get()
	defer p.e.buffers.Put(buf)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush {
				if err := flusher.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func eventStream(contentType string) bool {
	base, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// informational passes on a 1xx answer, leaving the header that the
// final answer will be sent with as it was.
func informational(w http.ResponseWriter, code int, h http.Header) {
	dst := w.Header()
	saved := make(map[string][]string, len(h))
	for k, vv := range h {
		old, had := dst[k]
		if had {
			saved[k] = old
		} else {
			saved[k] = nil
		}
		dst[k] = vv
	}
	w.WriteHeader(code)
	for k, old := range saved {
		if old == nil {
			delete(dst, k)
		} else {
			dst[k] = old
		}
	}
}

// hopHeaders are the hop-by-hop headers of RFC 9110, section 7.6.1 (and
// the older ones that ReverseProxy also drops).
var hopHeaders = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop drops the hop-by-hop headers of h and those its
// Connection header names.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// dropUp reports whether a request header of the visitor's stays behind:
// hop-by-hop, or forwarding information that the edge writes itself.
func dropUp(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Host", UserHeader, EmailHeader:
		return true
	}
	return false
}

// writeHead writes the upstream request for r (see proxy for the rules).
func writeHead(bw *bufio.Writer, r *http.Request) error {
	if err := upstream.WriteRequestLine(bw, r.Method, r.URL.RequestURI(), r.Host); err != nil {
		return err
	}
	var named []string // headers that the visitor's Connection header names
	for _, f := range r.Header["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				named = append(named, textproto.CanonicalMIMEHeaderKey(sf))
			}
		}
	}
	for k, vv := range r.Header {
		if dropUp(k) || slices.Contains(named, k) {
			continue
		}
		for _, v := range vv {
			if err := upstream.WriteField(bw, k, v); err != nil {
				return err
			}
		}
	}
	if headerHasToken(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	client := ""
	if ip, ok := ClientIP(r.Context()); ok {
		client = ip.String()
	} else if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		client = h
	}
	if client != "" {
		if err := upstream.WriteField(bw, "X-Forwarded-For", client); err != nil {
			return err
		}
	}
	if err := upstream.WriteField(bw, "X-Forwarded-Host", r.Host); err != nil {
		return err
	}
	if v, ok := visitorOf(r.Context()); ok {
		if err := upstream.WriteField(bw, UserHeader, v.User); err != nil {
			return err
		}
		if err := upstream.WriteField(bw, EmailHeader, v.Email); err != nil {
			return err
		}
	}
	if r.TLS != nil {
		bw.WriteString("X-Forwarded-Proto: https\r\n\r\n")
	} else {
		bw.WriteString("X-Forwarded-Proto: http\r\n\r\n")
	}
	return nil
}

// headerHasToken reports whether a comma-separated header holds token,
// in any case.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}
