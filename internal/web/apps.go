package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"moat/internal/api"
	"moat/internal/apps"
	"moat/internal/config"
	"moat/internal/store"
)

// appsData is the Apps page: each app with what moat can do to it (its
// lifecycle commands, a backup, its removal), and the removed apps that
// can still be brought back.
type appsData struct {
	Apps    []appItem
	Removed []store.Removed
}

type appItem struct {
	Name      string
	Domains   []string
	Protected bool
	// Actions are the lifecycle actions the app has commands for.
	Actions  []string
	Data     []string
	Schedule string
	Hook     bool
}

// ranData is the page that shows what a command or a backup did.
type ranData struct {
	Summary string
	Result  *apps.Result
	Runs    []api.BackupRun
	Back    string
}

func (d *Dashboard) appsRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /apps", d.signedIn("Apps", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title = "Apps"
		var list []config.App
		var data appsData
		err := d.call(r, http.MethodGet, "/v1/apps?limit=1000", nil, &list)
		if err == nil {
			err = d.call(r, http.MethodGet, "/v1/removed-apps", nil, &data.Removed)
		}
		if err != nil {
			p.Error = errText(err)
		}
		for _, a := range list {
			v := appItem{Name: a.Name, Domains: a.Domains, Protected: a.Protect, Data: a.Data, Schedule: a.Backup.Schedule, Hook: a.Backup.Before != ""}
			for _, action := range config.Actions {
				if action != "remove" && a.Run.Command(action) != "" {
					v.Actions = append(v.Actions, action)
				}
			}
			data.Apps = append(data.Apps, v)
		}
		p.Data = data
		draw(w, http.StatusOK, "apps", p)
	}))
	post := func(path string, h func(w http.ResponseWriter, r *http.Request, p page, name string)) {
		mux.HandleFunc("POST "+path, d.signedIn("Apps", func(w http.ResponseWriter, r *http.Request, p page) {
			h(w, r, p, r.PostFormValue("app"))
		}))
	}
	post("/apps/run", func(w http.ResponseWriter, r *http.Request, p page, name string) {
		action := r.PostFormValue("action")
		if !slices.Contains(config.Actions, action) || action == "remove" {
			d.refused(w, r, p, draw, "/apps", "there is no action "+action+": the actions are start, stop, restart, upgrade and status")
			return
		}
		var res apps.Result
		if err := d.call(r, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/"+action, nil, &res); err != nil {
			d.refused(w, r, p, draw, "/apps#app-"+name, errText(err))
			return
		}
		p.Title = strings.ToUpper(action[:1]) + action[1:] + " " + name
		sum := "The command ran and succeeded."
		if !res.OK() {
			sum = "The command failed: its output says why."
		}
		p.Data = ranData{Summary: sum, Result: &res, Back: "/apps#app-" + name}
		draw(w, http.StatusOK, "ran", p)
	})
	post("/apps/backup", func(w http.ResponseWriter, r *http.Request, p page, name string) {
		var runs []api.BackupRun
		if err := d.call(r, http.MethodPost, "/v1/backup/run", api.BackupRequest{App: name}, &runs); err != nil {
			d.refused(w, r, p, draw, "/apps#app-"+name, errText(err))
			return
		}
		p.Title = "Back up " + name
		p.Data = ranData{Summary: "The backup is made; the retention policy is applied after it.", Runs: runs, Back: "/apps#app-" + name}
		draw(w, http.StatusOK, "ran", p)
	})
	post("/apps/remove", func(w http.ResponseWriter, r *http.Request, p page, name string) {
		back := "/apps#app-" + name
		if r.PostFormValue("typed") != name {
			d.refused(w, r, p, draw, back, "to remove app "+name+", type its name, "+name+", into the box: its data is backed up, then it is stopped, its remove command runs and its routes go")
			return
		}
		path := "/v1/apps/" + url.PathEscape(name) + "?confirm=" + url.QueryEscape(name)
		if r.PostFormValue("no_backup") == "on" {
			if r.PostFormValue("typed_again") != name {
				d.refused(w, r, p, draw, back, "to remove app "+name+" with no backup, type its name a second time: without a backup it cannot be brought back")
				return
			}
			path += "&no_grace_backup=" + url.QueryEscape(name)
		}
		if err := d.call(r, http.MethodDelete, path, nil, nil); err != nil {
			d.refused(w, r, p, draw, back, errText(err))
			return
		}
		done(w, r, "/apps#removed", "removed")
	})
	post("/apps/restore", func(w http.ResponseWriter, r *http.Request, p page, name string) {
		if err := d.call(r, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/restore", nil, nil); err != nil {
			d.refused(w, r, p, draw, "/apps#removed", errText(err))
			return
		}
		done(w, r, "/apps#app-"+name, "restored")
	})
}
