package web

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"moat/internal/api"
	"moat/internal/certs"
)

// overviewData is what the Overview shows: each app with its domains'
// certificates, and the state of every layer, in plain words.
type overviewData struct {
	Daemon bool
	Apps   []appView
	// Firewall, Guard are each layer's state in a sentence; Bad marks
	// those that need the owner.
	Firewall, Guard, Edge string
	FirewallBad, GuardBad bool
	// RollbackAt is when rules on trial roll back.
	RollbackAt *time.Time
	Problems   []string
}

type appView struct {
	Name, Upstream string
	Domains        []domainView
}

type domainView struct {
	Name, Cert string
	// Class is the certificate's state for the style: good, wait, bad.
	Class string
}

func (d *Dashboard) overview(r *http.Request) overviewData {
	var out overviewData
	var st api.StatusResponse
	if err := d.call(r, http.MethodGet, "/v1/status", nil, &st); err != nil {
		out.Problems = append(out.Problems, errText(err))
	}
	out.Daemon = st.Daemon
	out.Edge = "moat's daemon is not running: nothing is served"
	if st.Daemon {
		out.Edge = "serving " + plural(len(st.Apps), "app") + " over HTTPS, behind the ban check and the rate limiter"
	}
	byDomain := map[string]certs.Status{}
	for _, c := range st.Certificates {
		byDomain[c.Domain] = c
	}
	now := time.Now()
	for _, a := range st.Apps {
		v := appView{Name: a.Name, Upstream: a.Upstream}
		for _, dom := range a.Domains {
			text, class := certWords(byDomain[dom], st.Daemon, now)
			v.Domains = append(v.Domains, domainView{Name: dom, Cert: text, Class: class})
		}
		out.Apps = append(out.Apps, v)
	}

	var fw api.FirewallStatus
	switch err := d.call(r, http.MethodGet, "/v1/firewall", nil, &fw); {
	case err != nil:
		out.Firewall, out.FirewallBad = errText(err), true
	default:
		out.Firewall, out.FirewallBad = firewallWords(fw)
		out.RollbackAt = fw.RollbackAt
	}

	var g api.GuardStatus
	if err := d.call(r, http.MethodGet, "/v1/guard", nil, &g); err != nil {
		out.Guard, out.GuardBad = errText(err), true
		return out
	}
	q := url.Values{"action": {"guard.ban"}, "since": {now.Add(-24 * time.Hour).UTC().Format(time.RFC3339)}, "limit": {"1000"}}
	var day []struct{}
	if err := d.call(r, http.MethodGet, "/v1/activity?"+q.Encode(), nil, &day); err != nil {
		out.Guard, out.GuardBad = errText(err), true
		return out
	}
	switch {
	case g.Off:
		out.Guard, out.GuardBad = "off: nobody is banned for failed logins (turn it on in moat.yaml, guard.off: false)", true
	case !g.Running:
		out.Guard, out.GuardBad = "not running: moat's daemon is not running here, so nothing is read or banned", true
	default:
		out.Guard = fmt.Sprintf("watching %d jails; %s in the last 24 hours, %d in force", running(g), plural(len(day), "ban"), len(g.Bans))
	}
	return out
}

func running(g api.GuardStatus) int {
	n := 0
	for _, j := range g.Jails {
		if !j.Off {
			n++
		}
	}
	return n
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// certWords says a certificate's state for a person, with the fix or the
// next try when it is not valid.
func certWords(c certs.Status, daemon bool, now time.Time) (text, class string) {
	next := ""
	if !c.NextRetry.IsZero() {
		next = "; moat tries again at " + when(c.NextRetry)
	}
	switch c.State {
	case certs.Valid:
		days := int(c.NotAfter.Sub(now).Hours() / 24)
		return fmt.Sprintf("certificate valid until %s (%s left)", when(c.NotAfter), plural(days, "day")), "good"
	case certs.Issuing:
		return "a certificate is being ordered", "wait"
	case certs.WaitingDNS:
		return "waiting for DNS: " + c.Message + next, "wait"
	case certs.Failed:
		return "no certificate yet: " + c.Message + next, "bad"
	case certs.RenewalFailed:
		return fmt.Sprintf("renewal failed: %s; the current certificate is still valid until %s%s", c.Message, when(c.NotAfter), next), "bad"
	}
	if !daemon {
		return "no certificate state: moat's daemon is not running", "wait"
	}
	return "no certificate yet", "wait"
}

// firewallWords says the firewall's state for a person.
func firewallWords(fw api.FirewallStatus) (string, bool) {
	n := len(fw.Rules) + len(fw.AppPorts)
	switch {
	case !fw.Managed:
		return "not managed here: the rules are stored, and moat's daemon puts them in force when it runs", true
	case fw.Problem != "":
		return "cannot be read: " + fw.Problem, true
	case fw.Pending:
		return fmt.Sprintf("on trial: %s, rolled back unless confirmed on the Security tab", plural(n, "rule")), true
	case fw.Off:
		return "off: moat's table is not in the kernel, so nothing moat sets blocks traffic", true
	case !fw.Active:
		return "not in force yet: apply the rules on the Security tab", true
	}
	return fmt.Sprintf("in force: %s, everything else inbound is dropped", plural(n, "rule")), false
}
