package web

import (
	"fmt"
	"net/http"
	"net/url"

	"moat/internal/api"
	"moat/internal/audit"
	"moat/internal/updates"
)

// auditData is the Audit page: the report, and the scores before it.
type auditData struct {
	Report  audit.Report
	History []api.AuditScore
	// Updates is how unattended updates are set up; nil when apt could
	// not be read.
	Updates *updates.Status
	// ConfirmSeconds is how long a fix from the page waits for its
	// confirmation before it rolls back.
	ConfirmSeconds int
}

func (d *Dashboard) auditRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /audit", d.signedIn("Audit", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title = "Audit"
		data := auditData{ConfirmSeconds: defaultConfirm}
		err := d.call(r, http.MethodGet, "/v1/audit", nil, &data.Report)
		if err == nil {
			err = d.call(r, http.MethodGet, "/v1/audit/history", nil, &data.History)
		}
		// The updates on their own: apt that cannot be read hides the
		// section, not the audit.
		var up updates.Status
		if d.call(r, http.MethodGet, "/v1/updates", nil, &up) == nil {
			data.Updates = &up
		}
		if err != nil {
			p.Error = errText(err)
		}
		if len(data.History) > 0 {
			data.History = data.History[1:] // the first is this very audit
		}
		p.Data = data
		draw(w, http.StatusOK, "audit", p)
	}))
	mux.HandleFunc("POST /audit/fix", d.signedIn("Audit", func(w http.ResponseWriter, r *http.Request, p page) {
		check := r.PostFormValue("check")
		// The firewall's fixes, like the firewall's apply, roll back
		// unless confirmed from the page the new rules let load.
		req := api.ApplyRequest{ConfirmWithin: fmt.Sprintf("%ds", defaultConfirm)}
		if err := d.call(r, http.MethodPost, "/v1/audit/fix/"+url.PathEscape(check), req, nil); err != nil {
			d.refused(w, r, p, draw, "/audit", errText(err))
			return
		}
		w.Header().Set("Connection", "close")
		done(w, r, "/security#firewall", "trial")
	}))
	mux.HandleFunc("POST /audit/updates", d.signedIn("Audit", func(w http.ResponseWriter, r *http.Request, p page) {
		path, req, code := "/v1/updates/disable", any(nil), "updates-off"
		if r.PostFormValue("action") == "enable" {
			path, code = "/v1/updates/enable", "updates-on"
			req = api.UpdatesRequest{RebootWindow: r.PostFormValue("reboot_window"), Install: r.PostFormValue("install") == "on"}
		}
		if err := d.call(r, http.MethodPost, path, req, nil); err != nil {
			d.refused(w, r, p, draw, "/audit#updates", errText(err))
			return
		}
		done(w, r, "/audit#updates", code)
	}))
}
