package audit

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"moat/internal/certs"
	"moat/internal/sshd"
)

// check is one thing the audit looks at.
type check struct {
	id       string
	severity Severity
	// applies says whether what the check needs was read.
	applies func(Host) bool
	run     func(Host) []Finding
}

var checks = buildChecks()

func buildChecks() []check {
	out := []check{
		{id: "listen.exposed", severity: High, applies: hasListeners, run: exposedListeners},
		{id: "listen.wildcard", severity: Low, applies: hasListeners, run: wildcardListeners},
		{id: "docker.published", severity: High, applies: hasDocker, run: dockerPublished},
		{id: "docker.privileged", severity: High, applies: hasDocker, run: dockerFlag("privileged")},
		{id: "docker.socket", severity: High, applies: hasDocker, run: dockerFlag("socket")},
		{id: "docker.host-network", severity: Medium, applies: hasDocker, run: dockerFlag("host-network")},
		{id: "docker.root", severity: Low, applies: hasDocker, run: dockerFlag("root")},
		{id: "firewall.off", severity: High, applies: hasFirewall, run: firewallOff},
		{id: "firewall.trial", severity: Medium, applies: hasFirewall, run: firewallTrial},
		{id: "firewall.drift", severity: High, applies: hasFirewall, run: firewallDrift},
		{id: "cert.failing", severity: High, applies: hasCerts, run: certsFailing},
		{id: "cert.expiring", severity: Medium, applies: hasCerts, run: certsExpiring},
		{id: "guard.off", severity: Medium, applies: hasGuard, run: guardOff},
		{id: "updates.off", severity: Medium, applies: hasUpdates, run: updatesOff},
		{id: "reboot.required", severity: Medium, applies: hasUpdates, run: rebootRequired},
		{id: "reboot.kernel", severity: Medium, applies: hasUpdates, run: kernelOld},
		{id: "updates.pending", severity: High, applies: hasUpdates, run: securityPending},
	}
	for _, s := range sshd.Recommended {
		out = append(out, sshCheck(s))
	}
	return append(out, check{id: "ssh.extra", severity: Info, applies: func(h Host) bool { return h.SSHD != nil }, run: sshExtra})
}

// sshStep is a hardening of sshd that moat ssh harden leaves to the
// owner, since it can take away what a server is used for (a tunnel to
// its database, agent forwarding to a git host): Lynis's SSH-7408 list.
type sshStep struct {
	keyword, want string
	ok            func(have string) bool
	why           string
}

func atMost(n int) func(string) bool {
	return func(have string) bool {
		v, err := strconv.Atoi(have)
		return err == nil && v <= n
	}
}

func is(want string) func(string) bool { return func(have string) bool { return have == want } }

var sshSteps = []sshStep{
	{"AllowTcpForwarding", "no", is("no"), "a login can tunnel to any port the server reaches, a database on loopback included; keep it if that is how you reach yours"},
	{"AllowAgentForwarding", "no", is("no"), "root on the server can use a forwarded agent's keys while you are logged in"},
	{"ClientAliveCountMax", "2", atMost(2), "a client that has gone keeps its session longer"},
	{"Compression", "no", is("no"), "compression before authentication has had holes; links are fast"},
	{"GatewayPorts", "no", is("no"), "a forwarded port would listen on every address, not loopback"},
	{"IgnoreRhosts", "yes", is("yes"), ".rhosts files would let hosts in without keys"},
	{"LogLevel", "VERBOSE", is("verbose"), "VERBOSE logs each login's key fingerprint: you can tell which key was used"},
	{"MaxSessions", "2", atMost(2), "fewer sessions per connection for a stolen one to open"},
	{"PermitTunnel", "no", is("no"), "tun devices let a login route whole networks through the server"},
	{"PermitUserEnvironment", "no", is("no"), "a user's environment file can change what sshd runs for them"},
	{"Port", "another port than 22", func(have string) bool { return have != "22" }, "the bots try port 22 all day; elsewhere the log is quieter (the guard bans them either way)"},
	{"PrintLastLog", "yes", is("yes"), "the last login shown at each login is how you notice one that was not yours"},
	{"StrictModes", "yes", is("yes"), "sshd then refuses key files that others may write"},
	{"TCPKeepAlive", "no", is("no"), "its keepalives can be spoofed; ClientAliveInterval's go through the encrypted channel"},
	{"UseDNS", "no", is("no"), "a reverse lookup per login slows it and logs names an attacker controls"},
}

// sshExtra: the steps of sshSteps that sshd's effective configuration
// does not take.
func sshExtra(h Host) []Finding {
	var out []Finding
	for _, st := range sshSteps {
		key := strings.ToLower(st.keyword)
		have := ""
		if v := h.SSHD[key]; len(v) > 0 {
			have = v[0]
		}
		if have == "" || st.ok(strings.ToLower(have)) {
			continue
		}
		fix := fmt.Sprintf("put %s %s in a drop-in of your own (/etc/ssh/sshd_config.d/10-local.conf), then reload sshd (systemctl reload ssh)", st.keyword, st.want)
		if st.keyword == "Port" {
			fix = "moat ssh harden --port 2222 (the firewall opens the new port first, and the old one stays until you confirm)"
		}
		out = append(out, Finding{Subject: st.keyword, Finding: fmt.Sprintf("sshd has %s %s; %s is stricter", st.keyword, have, st.want), Why: st.why, Fix: fix})
	}
	return out
}

func hasListeners(h Host) bool { return h.Listeners != nil }
func hasFirewall(h Host) bool  { return h.Firewall != nil }
func hasCerts(h Host) bool     { return h.Certificates != nil }
func hasGuard(h Host) bool     { return h.Guard != nil }
func hasUpdates(h Host) bool   { return h.Updates != nil }
func hasDocker(h Host) bool    { return h.Docker != nil }

// dockerPublished: a container's port published on every address (or a
// public one), which the internet reaches unless moat's firewall holds
// it back; with Docker's userland proxy off no socket listens for it, so
// only Docker tells.
func dockerPublished(h Host) []Finding {
	var out []Finding
	for _, c := range h.Docker {
		for _, p := range c.Published {
			if p.Scope != Wildcard && p.Scope != Public {
				continue
			}
			port := fmt.Sprintf("%d/%s", p.Host.Port(), p.Proto)
			fix := fmt.Sprintf("publish it on loopback only (ports: [\"127.0.0.1:%d:%d\"] in compose.yaml), or, for the app behind moat, limit it: moat app set APP --port %s=internal", p.Host.Port(), p.ContainerPort, port)
			f := Finding{Subject: c.Name + " " + p.Host.String() + "/" + p.Proto, Fix: fix}
			if h.Firewall.Reaches(p.Host.Port(), p.Proto) {
				f.Finding = fmt.Sprintf("port %s is published by container %s on %s and reachable from the internet", port, c.Name, p.Host.Addr())
				f.Why = "Docker publishes around other firewalls; every address on the internet is scanned within minutes"
			} else {
				f.Severity = Low
				f.Finding = fmt.Sprintf("port %s is published by container %s on every address: moat's firewall blocks it today", port, c.Name)
				f.Why = "one firewall rule too many and it is open; published on loopback it never is"
			}
			out = append(out, f)
		}
	}
	return out
}

// dockerFlag is one of the ways a container holds the host.
func dockerFlag(what string) func(Host) []Finding {
	return func(h Host) []Finding {
		var out []Finding
		for _, c := range h.Docker {
			var f Finding
			switch {
			case what == "privileged" && c.Privileged:
				f = Finding{Finding: "container " + c.Name + " runs --privileged", Why: "a privileged container has every device and capability of the host: whoever gets into it owns the server",
					Fix: "remove privileged: true (--privileged) and grant only the capability it needs (cap_add)"}
			case what == "socket" && c.DockerSocket:
				f = Finding{Finding: "container " + c.Name + " has the Docker socket mounted", Why: "with Docker's socket a container starts containers as it likes, a privileged one with the host's disk in it too: root on the server",
					Fix: "remove the /var/run/docker.sock volume, or give it a socket proxy that allows only what it needs"}
			case what == "host-network" && c.HostNetwork:
				f = Finding{Finding: "container " + c.Name + " uses the host's network (network_mode: host)", Why: "every port it opens is the host's, on every address, and it sees the host's traffic",
					Fix: "use a bridge network and publish only the ports it needs, on 127.0.0.1"}
			case what == "root" && c.Root && c.State == "running":
				f = Finding{Finding: "container " + c.Name + " runs as root", Why: "a hole in the app is root in the container, one kernel bug away from root on the host",
					Fix: "run it as a user (user: \"1000:1000\" in compose.yaml), if its image allows"}
			default:
				continue
			}
			f.Subject = c.Name
			out = append(out, f)
		}
		return out
	}
}

func updatesOff(h Host) []Finding {
	u := h.Updates
	why := "security fixes reach the server only when someone installs them; bots try the known holes within days of a fix"
	switch {
	case !u.Installed:
		return []Finding{{Finding: "unattended-upgrades is not installed: security updates wait for you", Why: why, Fix: "moat updates enable --install"}}
	case !u.Periodic:
		return []Finding{{Finding: "unattended-upgrades is installed but apt does not run it (APT::Periodic::Unattended-Upgrade is not 1)", Why: why, Fix: "moat updates enable"}}
	case !u.Security:
		return []Finding{{Finding: "unattended-upgrades runs, but no security archive is among its origins", Why: why, Fix: "moat updates enable (it adds Debian's and Ubuntu's security archives)"}}
	}
	return nil
}

func rebootRequired(h Host) []Finding {
	u := h.Updates
	if !u.RebootRequired {
		return nil
	}
	what := "an update"
	if len(u.RebootPackages) > 0 {
		what = strings.Join(u.RebootPackages, ", ")
	}
	fix := "reboot in a quiet hour: moat host reboot (moat updates enable --reboot-window 02:00 does it by night)"
	if u.Reboot {
		fix = "nothing: unattended-upgrades reboots at " + u.RebootTime + "; to do it now, moat host reboot"
	}
	return []Finding{{Finding: "a reboot is pending: " + what + " asked for it, and the fix is not in force until then",
		Why: "a patched kernel or library does not protect a running server until it restarts", Fix: fix}}
}

func securityPending(h Host) []Finding {
	p := h.Updates.SecurityPending
	if len(p) == 0 {
		return nil
	}
	names := make([]string, 0, len(p))
	for _, x := range p {
		name, _, _ := strings.Cut(x, " ")
		names = append(names, name)
	}
	list := strings.Join(names, ", ")
	if len(names) > 8 {
		list = strings.Join(names[:8], ", ") + fmt.Sprintf(" and %d more", len(names)-8)
	}
	fix := "apt-get update && apt-get upgrade; then moat updates enable, so that they come by themselves"
	if h.Updates.Periodic {
		fix = "apt-get update && apt-get upgrade now; unattended-upgrades installs them at its next daily run"
	}
	return []Finding{{Finding: fmt.Sprintf("%d security updates are not installed: %s", len(names), list),
		Why: "each is a hole that is public now, with the fix a command away", Fix: fix}}
}

func kernelOld(h Host) []Finding {
	u := h.Updates
	if u.KernelRunning == "" || u.KernelInstalled == "" || u.KernelRunning == u.KernelInstalled || u.RebootRequired {
		return nil // nothing known, the newest runs, or reboot.required says it already
	}
	return []Finding{{Finding: "kernel " + u.KernelRunning + " runs, but " + u.KernelInstalled + " is installed",
		Why: "the fixes of the newer kernel do not protect the server until it boots it", Fix: "reboot in a quiet hour: moat host reboot"}}
}

// ExpiryWarning is how long before its end a certificate is a finding.
const ExpiryWarning = 14 * 24 * time.Hour

func certsFailing(h Host) []Finding {
	var out []Finding
	for _, c := range h.Certificates {
		if c.State != certs.Failed && c.State != certs.RenewalFailed {
			continue
		}
		what := "has no certificate: issuing it failed"
		if c.State == certs.RenewalFailed {
			what = "cannot renew its certificate (valid until " + c.NotAfter.UTC().Format("2 Jan 2006") + ")"
		}
		out = append(out, Finding{Subject: c.Domain, Finding: c.Domain + " " + what + ": " + c.Message,
			Why: "without a valid certificate browsers refuse the site, and apps and their users are told it may be an impostor",
			Fix: "mend what the message names (DNS, port 80 or 443 reachable from the internet); moat retries by itself, and moat status shows the next try"})
	}
	return out
}

func certsExpiring(h Host) []Finding {
	var out []Finding
	for _, c := range h.Certificates {
		if c.State != certs.Valid || c.NotAfter.IsZero() || c.NotAfter.Sub(h.At) > ExpiryWarning {
			continue
		}
		out = append(out, Finding{Subject: c.Domain, Finding: fmt.Sprintf("%s's certificate ends on %s, in %s", c.Domain, c.NotAfter.UTC().Format("2 Jan 2006 15:04 UTC"), days(c.NotAfter.Sub(h.At))),
			Why: "a certificate that is not renewed in time takes the site down for every visitor",
			Fix: "moat renews certificates by itself well before the end: check moat status and the activity log for a renewal that fails, and that port 80 or 443 is reachable"})
	}
	return out
}

func days(d time.Duration) string {
	if n := int(d.Hours() / 24); n >= 1 {
		return fmt.Sprintf("%d days", n)
	}
	return "less than a day"
}

func guardOff(h Host) []Finding {
	g := h.Guard
	if g.Off {
		return []Finding{{Finding: "the brute-force guard is off: failed logins are not counted, nobody is banned",
			Why: "bots try passwords against sshd and the apps' login pages all day; the guard bans them after a few tries", Fix: "remove guard.off from moat.yaml, then moat apply -f moat.yaml"}}
	}
	var out []Finding
	for _, j := range g.JailsOff {
		out = append(out, Finding{Subject: j, Severity: Low, Finding: "the guard's " + j + " jail is off",
			Why: "the failed logins it watches are not counted", Fix: "remove off: true from the " + j + " jail in moat.yaml (guard.jails), then moat apply -f moat.yaml"})
	}
	return out
}

// open is a listener reachable from beyond the machine: on every
// address, or a public one.
func open(l Listener) bool { return l.Scope == Wildcard || l.Scope == Public }

// exposedListeners: a service that is not moat's and that the internet
// reaches, through no firewall or a rule that lets everyone in.
func exposedListeners(h Host) []Finding {
	var out []Finding
	for _, l := range h.Listeners {
		if !open(l) || h.Own[l.Port()] != "" || byDocker(h, l) || !h.Firewall.Reaches(l.Addr.Port(), l.Proto) {
			continue
		}
		how := "moat's firewall is not in force"
		if h.Firewall != nil && h.Firewall.Active && !h.Firewall.Off {
			how = "a firewall rule lets everyone reach it"
		}
		out = append(out, Finding{Subject: l.Addr.String() + "/" + l.Proto,
			Finding: fmt.Sprintf("%s listens on %s (%s) and the internet can reach it: %s", l.Who(), l.Addr, l.Proto, how),
			Why:     "every address on the internet is scanned within minutes; a database or admin port open to it is found and tried by bots",
			Fix:     bindFix(l) + "; or, if it must be reached, limit it to your addresses: moat firewall allow " + l.Port() + " --from YOUR-ADDRESS"})
	}
	return out
}

// wildcardListeners: a service on every address that the firewall
// blocks today, one mistake from being open.
func wildcardListeners(h Host) []Finding {
	var out []Finding
	for _, l := range h.Listeners {
		if !open(l) || h.Own[l.Port()] != "" || byDocker(h, l) || h.Firewall.Reaches(l.Addr.Port(), l.Proto) {
			continue
		}
		out = append(out, Finding{Subject: l.Addr.String() + "/" + l.Proto,
			Finding: fmt.Sprintf("%s listens on %s (%s): the firewall blocks it today", l.Who(), l.Addr, l.Proto),
			Why:     "one firewall rule too many, or the firewall turned off, and it is open to the internet; bound to loopback it never is",
			Fix:     bindFix(l)})
	}
	return out
}

// byDocker: the listener is Docker's (its userland proxy's, or the one
// dockerd holds to reserve a port it publishes through nat rules alone),
// and Docker answers, so the docker check judges the port with its
// container's name.
func byDocker(h Host, l Listener) bool {
	return h.Docker != nil && (l.Process == "docker-proxy" || l.Process == "dockerd")
}

// bindFix is how to make a service listen on loopback only, for the
// services self-hosters run most.
func bindFix(l Listener) string {
	lo := "127.0.0.1"
	if l.Addr.Addr().Is6() {
		lo = "::1"
	}
	switch p := strings.ToLower(l.Process); {
	case strings.HasPrefix(p, "postgres"):
		return "bind it to " + lo + " in postgresql.conf (listen_addresses = 'localhost'), then restart PostgreSQL"
	case strings.HasPrefix(p, "redis"):
		return "bind it to " + lo + " in redis.conf (bind 127.0.0.1 ::1), then restart Redis"
	case strings.HasPrefix(p, "mysqld"), strings.HasPrefix(p, "mariadbd"):
		return "bind it to " + lo + " in the server's my.cnf section (bind-address = 127.0.0.1), then restart it"
	case strings.HasPrefix(p, "mongod"):
		return "bind it to " + lo + " in mongod.conf (net.bindIp: 127.0.0.1), then restart MongoDB"
	case strings.HasPrefix(p, "memcached"):
		return "start memcached with -l 127.0.0.1 (/etc/memcached.conf), then restart it"
	case p == "docker-proxy":
		return "publish the container's port on loopback only (127.0.0.1:" + fmt.Sprint(l.Addr.Port()) + ":PORT in compose.yaml)"
	}
	if l.Process == "" {
		return fmt.Sprintf("find what holds it (ss -lnp 'sport = :%d'), then configure it to listen on %s only", l.Addr.Port(), lo)
	}
	return "configure " + l.Who() + " to listen on " + lo + " only (the app behind moat needs no other address)"
}

func firewallOff(h Host) []Finding {
	f := h.Firewall
	switch {
	case f.Off:
		return []Finding{{Finding: "moat's firewall is off", Why: "every port a service opens is reachable from the internet", Fix: "moat firewall on"}}
	case !f.Active:
		return []Finding{{Finding: "moat's firewall is not in the kernel", Why: "every port a service opens is reachable from the internet", Fix: "moat audit fix firewall.off", Fixable: true}}
	}
	return nil
}

func firewallTrial(h Host) []Finding {
	if !h.Firewall.Pending {
		return nil
	}
	return []Finding{{Finding: "the firewall's new rules are on trial: they roll back by themselves unless confirmed",
		Why: "the rules you meant to keep go away at the deadline", Fix: "moat firewall confirm (from a new SSH session, to be sure it still lets you in)"}}
}

func firewallDrift(h Host) []Finding {
	f := h.Firewall
	if len(f.Drift) == 0 || f.Off || !f.Active {
		return nil
	}
	return []Finding{{Finding: "moat's table in the kernel is not what moat applied: " + strings.Join(f.Drift, "; "),
		Why: "a rule added by hand (or by another tool) may open what moat closed, and goes away at moat's next apply anyway",
		Fix: "moat audit fix firewall.drift (puts moat's rules back; add what you need as a moat rule); an address in the ban set that is not the guard's goes with moat guard unban ADDRESS", Fixable: true}}
}

// sshCheck is one of moat ssh harden's settings, judged by what sshd's
// own audit found (sshd -T, for root and for each user a Match block
// sets otherwise).
func sshCheck(s sshd.Setting) check {
	key := strings.ToLower(s.Keyword)
	sev := Low
	switch key {
	case "passwordauthentication", "kbdinteractiveauthentication", "permitrootlogin":
		sev = High
	case "pubkeyauthentication":
		sev = Medium
	}
	return check{id: "ssh." + key, severity: sev,
		applies: func(h Host) bool { return h.SSH != nil },
		run: func(h Host) []Finding {
			var out []Finding
			for _, f := range *h.SSH {
				if !strings.EqualFold(f.Keyword, s.Keyword) {
					continue
				}
				who := ""
				if f.For != "" {
					who = " for " + f.For + " (a Match block)"
				}
				out = append(out, Finding{Subject: f.For, Finding: fmt.Sprintf("sshd has %s %s%s, not %s", s.Keyword, f.Have, who, f.Want), Why: f.Why, Fix: f.Fix})
			}
			return out
		}}
}
