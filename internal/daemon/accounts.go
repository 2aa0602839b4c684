package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/edge"
	"moat/internal/gate"
	"moat/internal/mail"
	"moat/internal/store"
	"moat/internal/web"
)

// SealerPath is the file of the key that encrypts the authenticator
// secrets, outside the store so that a copy of the database alone does
// not give them away.
func SealerPath(dataDir string) string { return filepath.Join(dataDir, "keys", "totp.key") }

// openAccounts makes the accounts service: failed sign-ins go to the
// guard's moat jail, email codes through the mail queue, every event to
// the activity log.
func (d *Daemon) openAccounts(host string) (*auth.Service, error) {
	sealer, err := auth.OpenSealer(SealerPath(d.opts.DataDir))
	if err != nil {
		return nil, err
	}
	return auth.New(auth.Options{
		Store:  d.store,
		Sealer: sealer,
		Mail:   d.mailAccount,
		Fail: func(ctx context.Context, addr netip.Addr, detail string) {
			d.warden.Fail(ctx, config.JailMoat, addr, detail)
		},
		Record: func(ctx context.Context, e auth.Event) error {
			return d.store.Record(ctx, store.Entry{Who: e.Who, From: e.From, Action: e.Action, Target: e.Target, Detail: e.Detail})
		},
		Settings: func() config.Auth {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.authSettings
		},
		RelyingParty: func() auth.RelyingParty {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.passkeySite
		},
		Issuer: strings.TrimSpace("moat " + host),
		Params: d.opts.AuthParams,
		Logger: d.log,
	})
}

// remoteAPI is the API over HTTPS on the admin host, behind sign-in,
// with the dashboard beside it.
func (d *Daemon) remoteAPI(srv *api.Server) http.Handler {
	dash := &web.Dashboard{Auth: srv.Auth, Client: clientIP, Log: d.log, Origin: d.adminOrigin, PrivateApp: d.privateApp}
	rm := &api.Remote{API: srv, Auth: srv.Auth, Client: clientIP, Pages: dash.Handler()}
	h := rm.Handler()
	dash.API = h // the pages ask the API, as the browser
	return h
}

// clientIP is a request's real address, as the edge found it.
func clientIP(r *http.Request) netip.Addr {
	a, _ := edge.ClientIP(r.Context())
	return a
}

// adminOrigin is where people sign in, for links and the private apps'
// redirects: the admin host, with the edge's port when it is not 443.
func (d *Daemon) adminOrigin() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if o := d.passkeySite.Origins; len(o) > 0 {
		return o[len(o)-1]
	}
	return ""
}

// privateApp is the private app that serves host, if one does.
func (d *Daemon) privateApp(host string) (config.App, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.private[host]
	return a, ok
}

// gate puts the private apps behind the admin host's sign-in.
func (d *Daemon) gate(accounts *auth.Service) edge.Private {
	g := &gate.Gate{Auth: accounts, Admin: d.adminOrigin, Client: clientIP, Log: d.log}
	return g.Wrap
}

// moatPages serves the hosts that are no app's: the admin host's API,
// and the demo's status page.
func (d *Daemon) moatPages() http.Handler {
	demo := d.fallback()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		admin, remote := d.adminHost, d.remote
		d.mu.Unlock()
		switch {
		case admin != "" && remote != nil && hostOf(r) == admin:
			remote.ServeHTTP(w, r)
		case demo != nil:
			demo.ServeHTTP(w, r)
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintln(w, "404 Not Found: no app is configured for this address.")
		}
	})
}

// passkeySite is where passkeys are made and used: the admin host, at
// the edge's HTTPS port (and at 443, for a forwarder in front).
func passkeySite(s config.Server) auth.RelyingParty {
	host := s.AdminHost()
	if host == "" {
		return auth.RelyingParty{}
	}
	rp := auth.RelyingParty{ID: host, Origins: []string{"https://" + host}}
	if _, port, err := net.SplitHostPort(s.HTTPSAddr()); err == nil && port != "443" && port != "" && port != "0" {
		rp.Origins = append(rp.Origins, "https://"+net.JoinHostPort(host, port))
	}
	return rp
}

func hostOf(r *http.Request) string {
	h := r.Host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

// mailAccount mails an account (its sign-in code, a sign-in from a new
// place) through the queue, from moat@<mail domain>.
func (d *Daemon) mailAccount(ctx context.Context, to, subject, body string) error {
	m := d.mail
	m.mu.Lock()
	from, host := m.from, m.host
	m.mu.Unlock()
	if from == "moat@" {
		return fmt.Errorf("moat has no mail domain to send from: set server.domain or mail.domain")
	}
	return d.submitOwn(ctx, from, []string{to}, fmt.Sprintf("[moat %s] %s", host, subject), body)
}

// submitOwn queues a message of moat's own.
func (d *Daemon) submitOwn(ctx context.Context, from string, to []string, subject, body string) error {
	now := time.Now()
	_, domain, _ := strings.Cut(from, "@")
	data := mail.Compose(from, to, subject, body, now, domain)
	msg := mail.Message{ID: mail.NewID(), App: "moat", From: from, Size: int64(len(data)), Accepted: now.UTC(), State: mail.Queued, NextAttempt: now.UTC(), Data: data, MessageID: mail.HeaderID(data)}
	for _, r := range to {
		msg.To = append(msg.To, mail.Recipient{Addr: r})
	}
	return d.mail.delivery.Submit(ctx, msg)
}
