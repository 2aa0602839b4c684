package web

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"moat/internal/api"
	"moat/internal/store"
)

// bansData is the Bans page: the bans in force, the ignore list, and the
// visitor's own address, to ignore-list it.
type bansData struct {
	Running bool
	Bans    []banView
	Ignore  []string
	You     string
}

type banView struct {
	Prefix, Jail, Reason, By string
	Evidence                 []string
	At                       time.Time
	// Until says when it ends, in words.
	Until string
}

// activityData is the Activity page: a page of entries, the filters,
// and the next page's link.
type activityData struct {
	Entries                   []store.Entry
	Who, Action, Since, Until string
	Older                     string
}

// activityPage is how many entries a page shows.
const activityPage = 50

func (d *Dashboard) guardRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /bans", d.signedIn("Bans", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title = "Bans"
		var g api.GuardStatus
		if err := d.call(r, http.MethodGet, "/v1/guard", nil, &g); err != nil {
			p.Error = errText(err)
		}
		data := bansData{Running: g.Running, Ignore: g.Ignore, You: d.client(r).Addr.String()}
		for _, b := range g.Bans {
			v := banView{Prefix: b.Prefix.String(), Jail: b.Jail, Reason: b.Reason, By: b.By, Evidence: b.Evidence, At: b.At, Until: "until lifted"}
			if !b.Expires.IsZero() {
				v.Until = "until " + when(b.Expires)
			}
			data.Bans = append(data.Bans, v)
		}
		p.Data = data
		draw(w, http.StatusOK, "bans", p)
	}))
	mux.HandleFunc("POST /bans/unban", d.signedIn("Bans", func(w http.ResponseWriter, r *http.Request, p page) {
		if err := d.call(r, http.MethodDelete, "/v1/guard/bans?address="+url.QueryEscape(r.PostFormValue("address")), nil, nil); err != nil {
			d.refused(w, r, p, draw, "/bans", errText(err))
			return
		}
		done(w, r, "/bans", "unbanned")
	}))
	mux.HandleFunc("POST /bans/ignore", d.signedIn("Bans", func(w http.ResponseWriter, r *http.Request, p page) {
		you := d.client(r).Addr.String()
		d.planned(w, r, p, draw, http.MethodPost, "/v1/guard/ignore", api.IgnoreRequest{Address: you}, "/bans",
			"Put your address, "+you+", on the guard's ignore list: it is never banned, however often a login from it fails. Take it off when you leave this network.")
	}))
	mux.HandleFunc("POST /bans/unignore", d.signedIn("Bans", func(w http.ResponseWriter, r *http.Request, p page) {
		a := r.PostFormValue("address")
		d.planned(w, r, p, draw, http.MethodDelete, "/v1/guard/ignore?address="+url.QueryEscape(a), nil, "/bans",
			"Take "+a+" off the guard's ignore list: failed logins from it count again.")
	}))
	mux.HandleFunc("GET /activity", d.signedIn("Activity", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title = "Activity"
		in := r.URL.Query()
		data := activityData{Who: in.Get("who"), Action: in.Get("action"), Since: in.Get("since"), Until: in.Get("until")}
		q := url.Values{"limit": {strconv.Itoa(activityPage)}}
		for _, k := range []string{"who", "action", "since", "until", "before"} {
			if v := in.Get(k); v != "" {
				q.Set(k, v)
			}
		}
		if err := d.call(r, http.MethodGet, "/v1/activity?"+q.Encode(), nil, &data.Entries); err != nil {
			p.Error = errText(err)
		}
		if n := len(data.Entries); n == activityPage {
			next := url.Values{}
			for k, v := range in {
				next[k] = v
			}
			next.Set("before", strconv.FormatInt(data.Entries[n-1].ID, 10))
			data.Older = "/activity?" + next.Encode()
		}
		p.Data = data
		draw(w, http.StatusOK, "activity", p)
	}))
}
