package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"moat/internal/api"
	"moat/internal/config"
)

// securityData is the Security tab: the server's firewall and SSH keys,
// the chosen app's rate limiter and cache, and the effective
// configuration.
type securityData struct {
	Apps []string
	// App is the chosen app; nil for the server's sections only.
	App *config.App
	// The rate limiter's and the cache's form values.
	RateOn         bool
	RateRequests   string
	RatePer        string
	ServerLimit    string
	CacheOn        bool
	CacheSeconds   string
	Firewall       api.FirewallStatus
	FirewallWords  string
	Keys           []api.SSHKey
	Config         api.EffectiveConfig
	ConfirmSeconds int
	// HostProtected is the server's termination protection.
	HostProtected bool
}

// planData is the page that shows a change's plan before it is made.
type planData struct {
	Summary string
	Plan    string
	// Action is where the form posts again, with Fields and confirm=yes.
	Action string
	Fields []field
	Back   string
}

type field struct{ Name, Value string }

// defaultConfirm is how long the dashboard's firewall apply waits for
// the owner's confirmation before it rolls back.
const defaultConfirm = 60

func (d *Dashboard) securityRoutes(mux *http.ServeMux, draw render) {
	mux.HandleFunc("GET /security", d.signedIn("Security", func(w http.ResponseWriter, r *http.Request, p page) {
		p.Title = "Security"
		data, err := d.security(r, r.URL.Query().Get("app"))
		if err != nil {
			p.Error = errText(err)
		}
		p.Data = data
		draw(w, http.StatusOK, "security", p)
	}))
	post := func(path string, h func(w http.ResponseWriter, r *http.Request, p page)) {
		mux.HandleFunc("POST "+path, d.signedIn("Security", h))
	}
	post("/security/app", func(w http.ResponseWriter, r *http.Request, p page) {
		name := r.PostFormValue("app")
		back := "/security?app=" + url.QueryEscape(name)
		patch, summary, err := appPatch(r)
		if err != nil {
			d.refused(w, r, p, draw, back, err.Error())
			return
		}
		d.planned(w, r, p, draw, http.MethodPatch, "/v1/apps/"+url.PathEscape(name), patch, back, summary)
	})
	post("/security/host", func(w http.ResponseWriter, r *http.Request, p page) {
		on := r.PostFormValue("protect") == "on"
		summary := "Protect the server against termination: moat refuses to reboot or power it off until the protection is off."
		if !on {
			summary = "Turn the server's termination protection off: it can be rebooted and powered off again. The owner is mailed."
		}
		d.planned(w, r, p, draw, http.MethodPatch, "/v1/server", api.ServerPatch{Protect: &on}, "/security#protection", summary)
	})
	post("/security/rules", func(w http.ResponseWriter, r *http.Request, p page) {
		rule := config.FirewallRule{Port: strings.TrimSpace(r.PostFormValue("port")), From: sources(r.PostFormValue("from")), Comment: strings.TrimSpace(r.PostFormValue("comment"))}
		if proto := r.PostFormValue("proto"); rule.Port != "" && !strings.Contains(rule.Port, "/") {
			rule.Port += "/" + proto
		}
		d.planned(w, r, p, draw, http.MethodPost, "/v1/firewall/rules", rule, "/security#firewall",
			"Add a firewall rule that lets "+who(rule.From)+" reach "+rule.Port+". It is stored now and in force once you apply the rules.")
	})
	post("/security/rules/remove", func(w http.ResponseWriter, r *http.Request, p page) {
		rule := config.FirewallRule{Port: r.PostFormValue("port"), From: sources(r.PostFormValue("from"))}
		d.planned(w, r, p, draw, http.MethodDelete, "/v1/firewall/rules", rule, "/security#firewall",
			"Remove the rule that lets "+who(rule.From)+" reach "+rule.Port+". It stays in force until you apply the rules.")
	})
	post("/security/firewall/apply", func(w http.ResponseWriter, r *http.Request, p page) {
		secs, err := strconv.Atoi(r.PostFormValue("confirm_within"))
		if err != nil {
			d.refused(w, r, p, draw, "/security#firewall", fmt.Sprintf("confirm within %q: give the seconds as a whole number, like %d", r.PostFormValue("confirm_within"), defaultConfirm))
			return
		}
		if err := d.call(r, http.MethodPost, "/v1/firewall/apply", api.ApplyRequest{ConfirmWithin: fmt.Sprintf("%ds", secs)}, nil); err != nil {
			d.refused(w, r, p, draw, "/security#firewall", errText(err))
			return
		}
		// The confirmation must come over a new connection: one that the
		// new rules let through.
		w.Header().Set("Connection", "close")
		done(w, r, "/security#firewall", "trial")
	})
	post("/security/firewall/confirm", func(w http.ResponseWriter, r *http.Request, p page) {
		if err := d.call(r, http.MethodPost, "/v1/firewall/confirm", nil, nil); err != nil {
			d.refused(w, r, p, draw, "/security#firewall", errText(err))
			return
		}
		done(w, r, "/security#firewall", "confirmed")
	})
	post("/security/keys", func(w http.ResponseWriter, r *http.Request, p page) {
		req := api.AddKeyRequest{Title: strings.TrimSpace(r.PostFormValue("title")), User: strings.TrimSpace(r.PostFormValue("user")), Key: strings.TrimSpace(r.PostFormValue("key"))}
		d.planned(w, r, p, draw, http.MethodPost, "/v1/ssh/keys", req, "/security#ssh",
			"Add the SSH key "+strconv.Quote(req.Title)+": it logs in as "+orRoot(req.User)+" once sshd's key files are written, right after.")
	})
	post("/security/keys/remove", func(w http.ResponseWriter, r *http.Request, p page) {
		title := r.PostFormValue("title")
		if r.PostFormValue("typed") != title {
			d.refused(w, r, p, draw, "/security#ssh", fmt.Sprintf("to remove the key %q, type its title, %s, into the box: removing a key can cut off whoever logs in with it, maybe you", title, title))
			return
		}
		d.planned(w, r, p, draw, http.MethodDelete, "/v1/ssh/keys?confirm=true&key="+url.QueryEscape(title), nil, "/security#ssh",
			"Remove the SSH key "+strconv.Quote(title)+": whoever logs in with it can no longer.")
	})
}

// security gathers the tab's sections.
func (d *Dashboard) security(r *http.Request, app string) (securityData, error) {
	out := securityData{ConfirmSeconds: defaultConfirm, RatePer: "minute", CacheOn: true, CacheSeconds: "3"}
	var st api.StatusResponse
	if err := d.call(r, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return out, err
	}
	for i, a := range st.Apps {
		out.Apps = append(out.Apps, a.Name)
		if a.Name == app {
			out.App = &st.Apps[i]
		}
	}
	out.HostProtected = st.Server.Protect
	if srv := st.Server.RateLimit; srv.Off {
		out.ServerLimit = "none: the server's limit is off"
	} else if srv.Requests > 0 {
		out.ServerLimit = fmt.Sprintf("%d per %s", srv.Requests, orMinute(srv.Per))
	} else {
		out.ServerLimit = "moat's default"
	}
	if a := out.App; a != nil {
		out.RateOn = !a.RateLimit.Off
		if a.RateLimit.Requests > 0 {
			out.RateRequests, out.RatePer = strconv.Itoa(a.RateLimit.Requests), orMinute(a.RateLimit.Per)
		}
		ttl := a.CacheTTL()
		out.CacheOn = ttl > 0
		if ttl > 0 {
			out.CacheSeconds = strconv.Itoa(int(ttl.Seconds()))
		}
	}
	if err := d.call(r, http.MethodGet, "/v1/firewall", nil, &out.Firewall); err != nil {
		return out, err
	}
	out.FirewallWords, _ = firewallWords(out.Firewall)
	if err := d.call(r, http.MethodGet, "/v1/ssh/keys", nil, &out.Keys); err != nil {
		return out, err
	}
	if err := d.call(r, http.MethodGet, "/v1/config", nil, &out.Config); err != nil {
		return out, err
	}
	return out, nil
}

// appPatch reads the rate limiter's or the cache's form into the change
// it asks for, and says it in a sentence.
func appPatch(r *http.Request) (api.AppPatch, string, error) {
	var p api.AppPatch
	switch r.PostFormValue("part") {
	case "rate":
		rl := config.RateLimit{Off: r.PostFormValue("rate") == "off"}
		summary := "Turn the rate limiter off for this app: a client may send as many requests as it likes."
		if !rl.Off {
			summary = "Limit each client address to the server's limit."
			if v := strings.TrimSpace(r.PostFormValue("requests")); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return p, "", fmt.Errorf("requests %q is not a count: give a whole number like 60", v)
				}
				rl.Requests, rl.Per = n, r.PostFormValue("per")
				summary = fmt.Sprintf("Limit each client address to %d requests per %s; past it, the app answers 429 Too Many Requests.", n, orMinute(rl.Per))
			}
		}
		p.RateLimit = &rl
		return p, summary, nil
	case "protect":
		on := r.PostFormValue("protect") == "on"
		p.Protect = &on
		if on {
			return p, "Protect the app against termination: moat refuses to stop, restart, upgrade or remove it until the protection is off.", nil
		}
		return p, "Turn the app's termination protection off: it can be stopped, restarted, upgraded and removed again. The owner is mailed.", nil
	case "cache":
		c := config.Cache{TTL: "0s"}
		summary := "Turn the output cache off for this app: every request reaches it."
		if r.PostFormValue("cache") != "off" {
			v := strings.TrimSpace(r.PostFormValue("seconds"))
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return p, "", fmt.Errorf("seconds %q is not a count of seconds: give a whole number like 3, or turn the cache off", v)
			}
			c.TTL = fmt.Sprintf("%ds", n)
			summary = fmt.Sprintf("Keep the app's cacheable pages for %d seconds: a repeat within that time does not reach the app.", n)
		}
		p.Cache = &c
		return p, summary, nil
	}
	return p, "", fmt.Errorf("the form sent part %q: reload the page and try again", r.PostFormValue("part"))
}

// planned makes a change the way `moat apply` does: first a dry run,
// whose plan the page shows with a button; the button posts the same
// form again with confirm=yes, and the change is made.
func (d *Dashboard) planned(w http.ResponseWriter, r *http.Request, p page, draw render, method, path string, body any, back, summary string) {
	pd := planData{Summary: summary, Back: back, Action: r.URL.Path}
	p.Title = "Check the change"
	var res api.ChangeResponse
	if r.PostFormValue("confirm") != "yes" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		if err := d.call(r, method, path+sep+"dry_run=true", body, &res); err != nil {
			p.Error = errText(err)
		} else {
			pd.Plan = res.Plan.String()
			for k, vs := range r.PostForm {
				if k != "csrf" && k != "confirm" {
					for _, v := range vs {
						pd.Fields = append(pd.Fields, field{k, v})
					}
				}
			}
			slices.SortFunc(pd.Fields, func(a, b field) int { return strings.Compare(a.Name, b.Name) })
		}
		p.Data = pd
		draw(w, http.StatusOK, "plan", p)
		return
	}
	if err := d.call(r, method, path, body, &res); err != nil {
		p.Error, p.Data = errText(err), pd
		draw(w, http.StatusOK, "plan", p)
		return
	}
	if res.Warning != "" {
		p.Error, p.Data = res.Warning, pd
		draw(w, http.StatusOK, "plan", p)
		return
	}
	done(w, r, back, "saved")
}

// refused shows why a change was not made, with the way back.
func (d *Dashboard) refused(w http.ResponseWriter, r *http.Request, p page, draw render, back, why string) {
	p.Title, p.Error, p.Data = "Not done", why, planData{Back: back}
	draw(w, http.StatusOK, "plan", p)
}

// sources reads a list of addresses and networks, split at commas and
// spaces.
func sources(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

func who(from []string) string {
	if len(from) == 0 {
		return "anyone"
	}
	return strings.Join(from, ", ")
}

func orRoot(user string) string {
	if user == "" {
		return config.DefaultSSHUser
	}
	return user
}

func orMinute(per string) string {
	if per == "" {
		return "minute"
	}
	return per
}
