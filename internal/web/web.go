// Package web serves moat's own pages: the demo's status page (the apps,
// their domains and where each certificate stands), and the dashboard on
// the admin host, beginning with its sign-in. Pages are rendered on the
// server with a strict Content-Security-Policy, and every form works
// without script.
package web

import (
	"html/template"
	"log/slog"
	"net/http"

	"moat/internal/certs"
	"moat/internal/config"
)

// View is what the status page shows.
type View struct {
	Title        string
	Apps         []config.App
	Certificates []certs.Status
	// Links are extra places to open, like the demo app.
	Links []string
}

// CSP is the Content-Security-Policy of moat's own pages.
const CSP = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Status serves the status page from the view that view returns.
func Status(log *slog.Logger, view func() View) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		if err := statusPage.Execute(w, view()); err != nil {
			log.Warn("status page", "err", err)
		}
	})
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd}
.valid{color:#176f2c}.bad{color:#a4262c}code{background:#f3f3f3;padding:0 .2rem}</style></head>
<body><h1>{{.Title}}</h1>
{{with .Links}}<p>Open: {{range .}}<a href="{{.}}">{{.}}</a> {{end}}</p>{{end}}
<h2>Apps</h2>
{{if .Apps}}<table><tr><th>app</th><th>domains</th><th>upstream</th></tr>
{{range .Apps}}<tr><td>{{.Name}}</td><td>{{range .Domains}}{{.}} {{end}}</td><td><code>{{.Upstream}}</code></td></tr>{{end}}
</table>{{else}}<p>No apps yet: <code>moat app add NAME --domain app.example.com --upstream http://127.0.0.1:3000</code></p>{{end}}
<h2>Certificates</h2>
{{if .Certificates}}<table><tr><th>domain</th><th>status</th></tr>
{{range .Certificates}}<tr><td>{{.Domain}}</td><td class="{{if eq .State "valid"}}valid{{else}}bad{{end}}">{{.String}}</td></tr>{{end}}
</table>{{else}}<p>No certificates yet.</p>{{end}}
</body></html>
`))
