package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"moat/internal/config"
	"moat/internal/mail"
	"moat/internal/maildns"
	"moat/internal/notify"
	"moat/internal/secret"
)

// Mail is the running daemon's mail layer.
type Mail interface {
	// Kick makes delivery look at the queue now.
	Kick()
	// Addrs lists where the relay listens.
	Addrs() []string
}

// MailStatus is GET /v1/mail.
type MailStatus struct {
	Running   bool     `json:"running"`
	Off       bool     `json:"off,omitempty"`
	Listening []string `json:"listening"`
	// Domain is what apps send from, as <app>@<domain>.
	Domain string `json:"domain"`
	// Delivery says where mail goes.
	Delivery string `json:"delivery"`
	Queued   int    `json:"queued"`
	// Credentials lists the apps, each with whether it has SMTP
	// credentials.
	Credentials []AppCredential `json:"credentials"`
	// DKIM lists the selectors of the signing keys.
	DKIM []string `json:"dkim"`
}

// AppCredential says whether an app can log in to the relay.
type AppCredential struct {
	App    string `json:"app"`
	Sender string `json:"sender"`
	Set    bool   `json:"set"`
}

// CredentialsRequest is the body of POST /v1/mail/credentials.
type CredentialsRequest struct {
	App string `json:"app"`
	// Rotate replaces credentials that exist: the old password stops
	// working at once.
	Rotate bool `json:"rotate,omitempty"`
}

// CredentialsResponse carries a new password, shown this once.
type CredentialsResponse struct {
	App      string `json:"app"`
	Username string `json:"username"`
	Password string `json:"password"`
	Sender   string `json:"sender"`
	// Relay lists where the relay listens, for the app's settings.
	Relay []string `json:"relay,omitempty"`
}

// RetryRequest is the body of POST /v1/mail/queue/retry.
type RetryRequest struct {
	ID  string `json:"id,omitempty"`
	All bool   `json:"all,omitempty"`
}

// SetupResponse is what POST /v1/mail/setup did and what to publish.
type SetupResponse struct {
	// Created is true when the DKIM keys were made by this call.
	Created bool             `json:"created"`
	Records []maildns.Record `json:"records"`
}

// NotifyTestResponse says where the test alert went.
type NotifyTestResponse struct {
	Email   []string `json:"email,omitempty"`
	Webhook bool     `json:"webhook,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func (s *Server) mailRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/mail", s.mailStatus)
	mux.HandleFunc("POST /v1/mail/credentials", s.mailCredentials)
	mux.HandleFunc("GET /v1/mail/queue", s.mailQueue)
	mux.HandleFunc("POST /v1/mail/queue/retry", s.mailRetry)
	mux.HandleFunc("DELETE /v1/mail/queue/{id}", s.mailDrop)
	mux.HandleFunc("POST /v1/mail/setup", s.mailSetup)
	mux.HandleFunc("GET /v1/mail/check", s.mailCheck)
	mux.HandleFunc("POST /v1/notify/test", s.notifyTest)
}

func (s *Server) mailStore() (mail.Store, error) {
	ms, ok := s.Store.(mail.Store)
	if !ok {
		return nil, errors.New("this store keeps no mail")
	}
	return ms, nil
}

func (s *Server) mailRuntime() Mail {
	if s.Runtime == nil {
		return nil
	}
	return s.Runtime.Mail()
}

func (s *Server) mailStatus(w http.ResponseWriter, r *http.Request) {
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := MailStatus{Off: st.Mail.Off, Domain: st.MailDomain(), Listening: []string{}, Credentials: []AppCredential{}, DKIM: []string{}, Delivery: "direct to each recipient's MX, signed with DKIM"}
	if addr := st.Mail.SmarthostAddr(); addr != "" {
		out.Delivery = "through the smarthost " + addr
	}
	if m := s.mailRuntime(); m != nil {
		out.Running = true
		out.Listening = m.Addrs()
		slices.Sort(out.Listening)
	}
	q, err := ms.List(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	out.Queued = len(q)
	for _, a := range st.Apps {
		h, err := ms.Credential(ctx, a.Name)
		if err != nil {
			s.fail(w, err)
			return
		}
		out.Credentials = append(out.Credentials, AppCredential{App: a.Name, Sender: a.Name + "@" + out.Domain, Set: h != ""})
	}
	keys, err := ms.DKIMKeys(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	for sel := range keys {
		out.DKIM = append(out.DKIM, sel)
	}
	slices.Sort(out.DKIM)
	writeJSON(w, http.StatusOK, out)
}

// mailCredentials makes an app's SMTP password, shown once and kept only
// as its hash.
func (s *Server) mailCredentials(w http.ResponseWriter, r *http.Request) {
	var req CredentialsRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	if _, ok := st.App(req.App); !ok {
		s.fail(w, notFound(fmt.Sprintf("app %q: no such app: add it first (moat app add), or see moat app list", req.App)))
		return
	}
	old, err := ms.Credential(ctx, req.App)
	if err != nil {
		s.fail(w, err)
		return
	}
	if old != "" && !req.Rotate {
		s.fail(w, conflict{fmt.Errorf("app %s has SMTP credentials already, and moat keeps only their hash, so it cannot show them again: make new ones with --rotate (the old password stops working)", req.App)})
		return
	}
	pass, err := secret.Password(20)
	if err != nil {
		s.fail(w, err)
		return
	}
	hash, err := secret.Hash(pass)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := ms.SetCredential(ctx, req.App, hash); err != nil {
		s.fail(w, err)
		return
	}
	action, detail := "mail.credentials", "SMTP credentials made"
	if old != "" {
		detail = "SMTP credentials rotated: the old password no longer works"
	}
	s.record(ctx, action, req.App, detail)
	out := CredentialsResponse{App: req.App, Username: req.App, Password: pass, Sender: req.App + "@" + st.MailDomain()}
	if m := s.mailRuntime(); m != nil {
		out.Relay = m.Addrs()
		slices.Sort(out.Relay)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) mailQueue(w http.ResponseWriter, r *http.Request) {
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	q, err := ms.List(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	if q == nil {
		q = []mail.Message{}
	}
	writeJSON(w, http.StatusOK, q)
}

// mailRetry makes queued messages due now.
func (s *Server) mailRetry(w http.ResponseWriter, r *http.Request) {
	var req RetryRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if (req.ID == "") == !req.All {
		s.fail(w, inputError{errors.New("give a message ID, or all, not both")})
		return
	}
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	q, err := ms.List(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	now := time.Now().UTC()
	var retried []string
	for _, m := range q {
		if (!req.All && m.ID != req.ID) || m.State != mail.Queued {
			continue
		}
		// Only the due time changes, and only while the message still
		// waits: it may be being delivered right now.
		ok, err := ms.Retry(ctx, m.ID, now)
		if err != nil {
			s.fail(w, err)
			return
		}
		if ok {
			retried = append(retried, m.ID)
		}
	}
	if !req.All && len(retried) == 0 {
		s.fail(w, notFound(fmt.Sprintf("message %s: not waiting in the queue (see moat mail queue)", req.ID)))
		return
	}
	if m := s.mailRuntime(); m != nil {
		m.Kick()
	}
	if len(retried) > 0 {
		s.record(ctx, "mail.retry", "queue", "retry now: "+strings.Join(retried, ", "))
	}
	if retried == nil {
		retried = []string{}
	}
	writeJSON(w, http.StatusOK, map[string][]string{"retried": retried})
}

// mailDrop deletes a message from the queue; it needs ?confirm=true, as
// the message is then lost.
func (s *Server) mailDrop(w http.ResponseWriter, r *http.Request) {
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	id := r.PathValue("id")
	m, err := ms.Load(ctx, id)
	if errors.Is(err, mail.ErrNotFound) || (err == nil && m.State.Final()) {
		s.fail(w, notFound(fmt.Sprintf("message %s: not in the queue (see moat mail queue)", id)))
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if m.State == mail.Sending {
		s.fail(w, beingDelivered(id))
		return
	}
	if r.URL.Query().Get("confirm") != "true" {
		s.fail(w, inputError{fmt.Errorf("dropping message %s (%s to %s) loses it for good: confirm it (moat mail drop --yes, or confirm=true)", id, orEmpty(m.From), strings.Join(m.Pending(), ", "))})
		return
	}
	if err := ms.Delete(ctx, id); errors.Is(err, mail.ErrNotFound) {
		// Taken for delivery since it was read.
		s.fail(w, beingDelivered(id))
		return
	} else if err != nil {
		s.fail(w, err)
		return
	}
	s.record(ctx, "mail.drop", m.App, fmt.Sprintf("message %s %s from %s to %s dropped from the queue, after %d attempts", id, m.MessageID, orEmpty(m.From), strings.Join(m.Pending(), ", "), m.Attempts))
	writeJSON(w, http.StatusOK, m)
}

// beingDelivered refuses to drop message id while a delivery attempt
// holds it: the attempt would go on, and the message arrive anyway.
func beingDelivered(id string) error {
	return conflict{fmt.Errorf("message %s is being delivered at this moment, so dropping it would not stop it: wait for the attempt to end (moat mail queue), then drop it if it still waits", id)}
}

func orEmpty(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

// mailSetup makes the DKIM keys, once, and lists the DNS records to
// publish.
func (s *Server) mailSetup(w http.ResponseWriter, r *http.Request) {
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	if st.MailDomain() == "" {
		s.fail(w, inputError{&config.FieldError{Field: "mail.domain", Problem: "is not set, and neither is server.domain", Fix: "set the server's domain first: moat init --domain moat.example.com"}})
		return
	}
	raw, err := ms.DKIMKeys(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := SetupResponse{}
	if len(raw) == 0 {
		keys, err := maildns.GenerateKeys()
		if err != nil {
			s.fail(w, err)
			return
		}
		raw = map[string][]byte{}
		for _, k := range keys {
			if raw[k.Selector], err = k.MarshalPrivate(); err != nil {
				s.fail(w, err)
				return
			}
		}
		if err := ms.SaveDKIMKeys(ctx, raw); err != nil {
			s.fail(w, err)
			return
		}
		out.Created = true
		s.record(ctx, "mail.setup", st.MailDomain(), "DKIM keys made: "+strings.Join(slices.Sorted(maps.Keys(raw)), ", "))
		if s.Runtime != nil {
			// Direct delivery signs with the new keys from now on.
			if err := s.Runtime.Apply(ctx, st); err != nil {
				s.Log.Error("apply", "err", err)
			}
		}
	}
	if out.Records, err = records(st, raw); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// records is what the state's owner publishes for its mail.
func records(st config.State, raw map[string][]byte) ([]maildns.Record, error) {
	var keys []maildns.Key
	for _, sel := range slices.Sorted(maps.Keys(raw)) {
		k, err := maildns.ParseKey(sel, raw[sel])
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, inputError{errors.New("no DKIM keys yet: run moat mail setup first")}
	}
	var ips []netip.Addr
	for _, ip := range st.Server.PublicIPs {
		if a, err := netip.ParseAddr(ip); err == nil && !config.PrivateAddr(a) {
			ips = append(ips, a.Unmap())
		}
	}
	return maildns.Records(st.MailDomain(), keys, ips, st.Mail.Smarthost.Host, st.Server.Email)
}

// mailCheck looks the records up in DNS.
func (s *Server) mailCheck(w http.ResponseWriter, r *http.Request) {
	ms, err := s.mailStore()
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	raw, err := ms.DKIMKeys(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	recs, err := records(st, raw)
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, maildns.Check(ctx, st.Server.Resolver, recs))
}

// notifyTest sends a test alert everywhere alerts go.
func (s *Server) notifyTest(w http.ResponseWriter, r *http.Request) {
	if s.Runtime == nil {
		s.fail(w, inputError{errors.New("no running moat daemon: alerts are sent by moat serve; start it first")})
		return
	}
	ctx := r.Context()
	st, _, err := s.Store.State(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	a := actor(ctx)
	alert := notify.Alert{At: time.Now().UTC(), Kind: "notify.test", Subject: "test " + time.Now().UTC().Format(time.RFC3339Nano),
		Message: fmt.Sprintf("This is a test alert, sent by %s with moat notify test. Alerts reach you here.", a.Who)}
	out := NotifyTestResponse{Webhook: st.Server.Notify.Webhook != ""}
	if !st.Mail.Off {
		out.Email = st.NotifyEmail()
	}
	if err := s.Runtime.Notify(ctx, alert); err != nil {
		out.Error = err.Error()
	}
	s.record(ctx, "notify.test", "notify", fmt.Sprintf("test alert to email %v, webhook %v", out.Email, out.Webhook))
	writeJSON(w, http.StatusOK, out)
}
