package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/localca"
	"moat/internal/store"
	"moat/internal/web"
)

// Demo runs moat on a fresh machine with nothing to configure: a local CA
// instead of ACME, loopback ports that need no root, and a built-in app.
type Demo struct {
	// HTTPSAddr and HTTPAddr are where the demo listens.
	HTTPSAddr, HTTPAddr string

	ca *localca.CA
}

// DemoDomain is the demo app's domain; *.localhost resolves to loopback.
const DemoDomain = "demo.localhost"

func (dm *Demo) setup(ctx context.Context, d *Daemon) (certSource, error) {
	ca, err := localca.Open(filepath.Join(d.opts.DataDir, "local-ca"))
	if err != nil {
		return nil, err
	}
	dm.ca = ca
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo app: %w", err)
	}
	app := &http.Server{Handler: http.HandlerFunc(demoApp), ReadHeaderTimeout: 10 * time.Second}
	go app.Serve(ln)
	go func() {
		<-ctx.Done()
		app.Close()
	}()
	_, err = d.store.Update(ctx, store.Actor{Who: "moat demo", From: "local"}, false, func(s *config.State) error {
		s.Server.Listen = config.Listen{HTTP: dm.HTTPAddr, HTTPS: dm.HTTPSAddr, Admin: "127.0.0.1:0"}
		up := "http://" + ln.Addr().String()
		if a, ok := s.App("demo"); ok {
			a.Upstream = up
			return nil
		}
		s.Apps = append(s.Apps, config.App{Name: "demo", Domains: []string{DemoDomain}, Upstream: up})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return &demoCerts{ca: ca}, nil
}

// Banner says what to open and how to trust the local CA.
func (dm *Demo) Banner(info Info) string {
	_, port, _ := net.SplitHostPort(info.HTTPS.String())
	var b strings.Builder
	fmt.Fprintf(&b, "moat demo is running.\n\n")
	fmt.Fprintf(&b, "  status page: https://localhost:%s/\n", port)
	fmt.Fprintf(&b, "  demo app:    https://%s:%s/  (an app behind moat's edge, with its security headers)\n\n", DemoDomain, port)
	fmt.Fprintf(&b, "Certificates come from a local CA that moat created for this demo.\n%s\n", dm.ca.TrustHelp())
	fmt.Fprintf(&b, "\nTry: curl --cacert %s -i https://%s:%s/\n", dm.ca.RootPath(), DemoDomain, port)
	fmt.Fprintf(&b, "Add an app: moat --socket %s app add NAME --domain NAME.localhost --upstream http://127.0.0.1:PORT\n", info.Socket)
	return b.String()
}

// statusView is the demo's status page content.
func (d *Daemon) fallback() http.Handler {
	if d.opts.Demo == nil {
		return nil
	}
	return web.Status(d.log, func() web.View {
		st, _, _ := d.store.State(context.Background())
		_, port, _ := net.SplitHostPort(d.opts.Demo.HTTPSAddr)
		return web.View{
			Title:        "moat demo",
			Apps:         st.Apps,
			Certificates: d.certs.Status(),
			Links:        []string{fmt.Sprintf("https://%s:%s/", DemoDomain, port)},
		}
	})
}

// demoCerts serves certificates from the local CA for localhost and the
// configured domains the CA may issue for (*.localhost). Any other name
// gets the localhost certificate, so clients refuse it by name.
type demoCerts struct {
	ca      *localca.CA
	mu      sync.Mutex
	domains []string
}

func (c *demoCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(hello.ServerName)
	c.mu.Lock()
	ok := slices.Contains(c.domains, name)
	c.mu.Unlock()
	if ok && localca.CheckName(name) == nil {
		return c.ca.Leaf(name)
	}
	return c.ca.Leaf("localhost", "127.0.0.1", "::1")
}

func (c *demoCerts) HTTPHandler(next http.Handler) http.Handler { return next }

func (c *demoCerts) Sync(_ context.Context, _ config.Server, domains []string, _ []config.CertFile) error {
	c.mu.Lock()
	c.domains = slices.Clone(domains)
	c.mu.Unlock()
	return nil
}

func (c *demoCerts) Status() []certs.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []certs.Status
	for _, d := range c.domains {
		s := certs.Status{Domain: d, State: certs.Valid, Message: "local demo CA"}
		if err := localca.CheckName(d); err != nil {
			s.State = certs.Failed
			s.Message = "the demo's local CA only issues for localhost names: use a domain like NAME.localhost"
		} else if leaf, err := c.ca.Leaf(d); err == nil {
			s.NotAfter = leaf.Leaf.NotAfter
		}
		out = append(out, s)
	}
	return out
}

func (c *demoCerts) Close() {}

// demoApp is the built-in app: it shows what reached it through the edge.
func demoApp(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	demoPage.Execute(w, r)
}

var demoPage = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>demo app behind moat</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}td{padding:.2rem .6rem;vertical-align:top}</style></head>
<body><h1>Hello from the demo app</h1>
<p>This page comes from a plain HTTP app on loopback. moat terminated HTTPS in front of it, added the security headers
(look at the response headers in your browser's developer tools) and told the app who the visitor is:</p>
<table>
<tr><td>X-Forwarded-For</td><td>{{.Header.Get "X-Forwarded-For"}}</td></tr>
<tr><td>X-Forwarded-Proto</td><td>{{.Header.Get "X-Forwarded-Proto"}}</td></tr>
<tr><td>X-Forwarded-Host</td><td>{{.Header.Get "X-Forwarded-Host"}}</td></tr>
<tr><td>Host</td><td>{{.Host}}</td></tr>
</table></body></html>
`))
