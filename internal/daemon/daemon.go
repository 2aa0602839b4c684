// Package daemon is `moat serve`: it opens the store, starts the edge and
// the certificate manager on the stored desired state, and serves the
// control API on the root-only Unix socket. Each change that comes through
// the API is checked against what the running daemon can do before it is
// stored, and applied right after, without a restart.
package daemon

import (
	"encoding/json"
	"errors"
	"io"
	"os"

	"context"
	"fmt"
	"log/slog"
	"moat/internal/cache"
	"moat/internal/firewall"
	"moat/internal/guard"
	"moat/internal/ratelimit"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"moat/internal/api"
	"moat/internal/apps"
	"moat/internal/audit"
	"moat/internal/auth"
	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/edge"
	"moat/internal/notify"
	"moat/internal/secret"
	"moat/internal/sshd"
	"moat/internal/store"
)

// Options configure a daemon. Only DataDir and Socket are required.
type Options struct {
	DataDir string
	Socket  string
	Logger  *slog.Logger
	// Certs tunes the certificate manager (intervals, dialer); its Dir,
	// Logger and OnEvent are set by the daemon.
	Certs certs.Options
	// Demo, when set, replaces ACME with a local CA and adds the demo app.
	Demo *Demo
	// AccessLog receives the JSON access log; standard output by default.
	AccessLog io.Writer
	// Ready is called once the listeners are bound.
	Ready func(Info)
	// Firewall, when set, is the kernel firewall the daemon manages: the
	// stored rules are put in force when it starts, and the API's
	// firewall commands act on it. nil leaves the host's firewall alone
	// (the demo, most tests).
	Firewall *firewall.Manager
	// SSHDConfig is sshd's configuration, for the ports whose open
	// sessions the first firewall apply must not cut;
	// /etc/ssh/sshd_config when empty.
	SSHDConfig string
	// Sessions lists the peers of the connections open to a local port;
	// firewall.EstablishedPeers when nil (tests replace it).
	Sessions func(port uint16) []netip.Addr
	// Journal is how the guard reads the systemd journal, for jails whose
	// log is "journal"; journalctl on the whole journal when nil.
	Journal *guard.Journal
	// SSH, when set, puts the keys of moat ssh keys where sshd reads
	// them. nil leaves sshd alone (the demo, most tests).
	SSH *sshd.Manager
	// MailMXPort is the port direct delivery connects to on a
	// recipient's MX; 25 when zero (tests run their own MX elsewhere).
	MailMXPort int
	// MailDial connects the mail delivery to the next server; a
	// net.Dialer when nil.
	MailDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MailListen opens the relay's listeners; net.Listen when nil.
	MailListen func(network, addr string) (net.Listener, error)
	// AuthParams are the argon2id costs of new password hashes;
	// secret.Default when zero.
	AuthParams secret.Params
	// Proc is where the audit reads the listening sockets; moat's own
	// when zero.
	Proc audit.Proc
	// AuditEvery is how often the daemon audits the host; hourly when
	// zero, never when negative.
	AuditEvery time.Duration
	// BackupCheck is how often the backup schedule is looked at;
	// DefaultBackupCheck when zero.
	BackupCheck time.Duration
}

// Info tells where a started daemon listens.
type Info struct {
	HTTP, HTTPS, Admin net.Addr
	Socket             string
}

// Daemon is a running moat.
type Daemon struct {
	opts  Options
	log   *slog.Logger
	store *store.SQLite
	certs certSource
	edge  *edge.Edge
	// warden is the brute-force guard.
	warden *guard.Warden
	// mail is the SMTP relay and the delivery of its queue.
	mail *mailer

	life    context.Context // the daemon's lifetime
	metrics http.Handler    // Prometheus, on the admin listener only

	mu        sync.Mutex
	listening listenState
	notifier  notify.Notifier
	// adminHost is where the HTTPS API answers, and remote that API.
	adminHost    string
	remote       http.Handler
	authSettings config.Auth
	// passkeySite is the admin host as passkeys know it.
	passkeySite auth.RelyingParty
	// private are the private apps by domain.
	private map[string]config.App
	// inhibitor holds logind's shutdown lock while the host is protected.
	inhibitor apps.Inhibitor
}

// certSource is what the daemon needs of its certificates: the edge's
// side plus management.
type certSource interface {
	edge.CertSource
	Sync(ctx context.Context, s config.Server, domains []string, files []config.CertFile) error
	Status() []certs.Status
	Close()
}

// listener is one side of the edge (HTTP or HTTPS) being served.
type listener struct {
	addr string
	ln   net.Listener
	stop context.CancelFunc
	done chan struct{}
}

func (l *listener) close() {
	if l != nil && l.stop != nil {
		l.stop()
		<-l.done
	}
}

type listenState struct {
	http, https, admin *listener
}

// StorePath is the store's file in a data dir.
func StorePath(dataDir string) string { return filepath.Join(dataDir, "moat.db") }

// Run serves until ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	unlock, err := lockDataDir(opts.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	d := &Daemon{opts: opts, log: opts.Logger}
	// Listeners live as long as the daemon, not as long as the request
	// that moved them.
	var stopAll context.CancelFunc
	d.life, stopAll = context.WithCancel(context.Background())
	defer stopAll()
	st, err := store.OpenSQLite(ctx, StorePath(opts.DataDir))
	if err != nil {
		return err
	}
	defer st.Close()
	d.store = st
	// An sshd change on trial when moat stopped goes back first, before
	// anything else that could keep moat from starting.
	d.startSSH(ctx, st)
	defer d.stopSSH(st)

	if opts.Demo != nil {
		if d.certs, err = opts.Demo.setup(ctx, d); err != nil {
			return err
		}
	} else {
		co := opts.Certs
		co.Dir = certs.StorageDir(opts.DataDir)
		co.Logger = opts.Logger
		co.OnEvent = d.certEvent
		m, err := certs.New(co)
		if err != nil {
			return err
		}
		d.certs = m
	}
	defer d.certs.Close()

	state, rev, err := st.State(ctx)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), certExpiry{d.certs})
	d.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	limiter := ratelimit.NewMemory(0)
	go limiter.Run(d.life, ratelimit.DefaultSweepEvery)
	accessOut := opts.AccessLog
	if accessOut == nil {
		accessOut = os.Stdout
	}
	d.warden = d.newWarden()
	defer d.warden.Stop()
	// The bans kept from before hold at the edge before it serves, and
	// teach the jails their history before they read a line.
	if err := d.warden.Restore(ctx); err != nil {
		d.log.Error("the bans kept from before were not put back", "err", err)
	}
	d.startMail(reg)
	accounts, err := d.openAccounts(state.Server.Domain)
	if err != nil {
		return err
	}
	apiSrv := &api.Server{Store: st, Runtime: d, Log: opts.Logger, Auth: accounts, DataDir: opts.DataDir, Proc: opts.Proc, OnBackup: newBackupMetrics(reg).observe}
	d.mu.Lock()
	d.remote = d.remoteAPI(apiSrv)
	d.mu.Unlock()
	d.edge = edge.New(edge.Options{
		Bans:      d.warden,
		Failed:    d.appFailed,
		Log:       opts.Logger,
		Certs:     d.certs,
		Fallback:  d.moatPages(),
		AccessLog: slog.New(slog.NewJSONHandler(accessOut, nil)),
		Limiter:   limiter,
		Cache:     cache.New(0),
		Metrics:   edge.NewMetrics(reg),
		Private:   d.gate(accounts),
	})
	if err := d.Apply(ctx, state); err != nil {
		var se sshError
		if !errors.As(err, &se) {
			return err
		}
		d.log.Error("the SSH keys are not in place", "err", err)
	}
	defer d.stopListening()
	defer d.inhibitor.Set(false) // a stopped moat protects nothing; its lock must not outlive it
	mailCtx, stopMail := context.WithCancel(d.life)
	waitMail := d.runMail(mailCtx)
	defer func() { stopMail(); waitMail() }()
	d.startFirewall(ctx, st, state)
	d.warden.Reenforce(ctx)
	expiring, stopExpiring := context.WithCancel(d.life)
	expired := make(chan struct{})
	go func() { defer close(expired); d.expireBans(expiring) }()
	defer func() { stopExpiring(); <-expired }()
	defer d.background("the hourly sweep", func(ctx context.Context) { d.purgeRemoved(ctx, apiSrv) })()
	defer d.background("the backup schedule", func(ctx context.Context) { d.scheduleBackups(ctx, apiSrv) })()
	defer d.background("the hourly audit", func(ctx context.Context) { d.audits(ctx, apiSrv) })()

	ctl, err := api.ListenControl(opts.Socket, opts.Logger)
	if err != nil {
		return err
	}
	apiSrv.MarkApplied(rev)
	ctlSrv := &http.Server{Handler: apiSrv.Handler(), ConnContext: api.ControlContext, ReadHeaderTimeout: 10 * time.Second}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- ctlSrv.Serve(ctl) }()

	if opts.Ready != nil {
		d.mu.Lock()
		info := Info{HTTP: d.listening.http.ln.Addr(), HTTPS: d.listening.https.ln.Addr(), Admin: d.listening.admin.ln.Addr(), Socket: opts.Socket}
		d.mu.Unlock()
		opts.Ready(info)
	}
	d.log.Info("moat is serving", "https", state.Server.HTTPSAddr(), "http", state.Server.HTTPAddr(), "socket", opts.Socket)

	select {
	case <-ctx.Done():
	case err = <-ctlErr:
		err = fmt.Errorf("control socket: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctlSrv.Shutdown(sctx)
	return err
}

// Check implements api.Runtime: a new listen address must be bindable and
// the certificate settings loadable.
func (d *Daemon) Check(ctx context.Context, s config.State) error {
	if d.opts.Demo == nil {
		if err := certs.Check(s.Server); err != nil {
			return err
		}
		if err := certs.CheckFiles(s.CertFiles()); err != nil {
			return err
		}
	}
	if err := d.checkMail(s); err != nil {
		return err
	}
	d.mu.Lock()
	cur := d.listening
	d.mu.Unlock()
	for _, a := range []struct {
		field, now string
		own, other *listener
	}{
		{"server.listen.http", s.Server.HTTPAddr(), cur.http, cur.https},
		{"server.listen.https", s.Server.HTTPSAddr(), cur.https, cur.http},
		{"server.listen.admin", s.Server.AdminAddr(), cur.admin, nil},
	} {
		if a.own != nil && a.own.addr == a.now {
			continue
		}
		if a.other != nil && a.other.addr == a.now {
			return &config.FieldError{Field: a.field, Value: a.now, Problem: "is where the other side listens now", Fix: "swap the HTTP and HTTPS addresses in two steps, through a free port"}
		}
		ln, err := net.Listen("tcp", a.now)
		if err != nil {
			return &config.FieldError{Field: a.field, Value: a.now, Problem: "cannot be listened on (" + err.Error() + ")", Fix: "choose a free port, or stop what listens there"}
		}
		ln.Close()
	}
	return nil
}

// Apply implements api.Runtime: new routes swap in atomically, the
// certificate manager follows the domains, and listeners move only if
// their addresses changed.
func (d *Daemon) Apply(ctx context.Context, s config.State) error {
	// What can fail comes first, so that a failure changes nothing.
	if d.opts.Demo == nil {
		if err := certs.Check(s.Server); err != nil {
			return err
		}
	}
	if err := d.listen(s.Server); err != nil {
		return err
	}
	if err := d.edge.Load(s); err != nil {
		return err
	}
	d.configureMail(ctx, s)
	d.mu.Lock()
	d.notifier = notifierFor(s, d.log, d.mail.alerts)
	d.adminHost, d.authSettings, d.passkeySite = s.Server.AdminHost(), s.Auth, passkeySite(s.Server)
	d.private = map[string]config.App{}
	for _, a := range s.Apps {
		if a.Private() {
			for _, dom := range a.Domains {
				d.private[dom] = a
			}
		}
	}
	d.mu.Unlock()
	d.configureGuard(s)
	d.inhibitor.Log = d.log
	if err := d.inhibitor.Set(s.Server.Protect); err != nil {
		d.log.Error("host protection", "err", err)
	}
	domains := s.Domains()
	if h := s.Server.AdminHost(); h != "" && !slices.Contains(domains, h) {
		domains = append(domains, h)
	}
	if err := d.certs.Sync(ctx, s.Server, domains, s.CertFiles()); err != nil {
		return err
	}
	return d.syncSSH(ctx, s)
}

// purgeRemoved drops, every hour, the backups of removed apps whose
// grace has ended, until ctx ends.
func (d *Daemon) purgeRemoved(ctx context.Context, srv *api.Server) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := srv.PurgeRemoved(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("removed apps: purging the ended grace backups", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// background runs f, as moat from who, until the daemon stops or the
// returned func is called, which waits for f to return.
func (d *Daemon) background(who string, f func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(d.life)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(api.WithActor(ctx, store.Actor{Who: "moat", From: who}))
	}()
	return func() { cancel(); <-done }
}

// audits audits the host every Options.AuditEvery (hourly by default),
// which keeps the history and alerts what got worse, until ctx ends.
func (d *Daemon) audits(ctx context.Context, srv *api.Server) {
	every := d.opts.AuditEvery
	if every < 0 {
		return
	}
	if every == 0 {
		every = time.Hour
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := srv.Audit(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("audit", "err", err)
		}
	}
}

// Mail implements api.Runtime.
func (d *Daemon) Mail() api.Mail { return d.mail }

// Notify implements api.Runtime: an alert to every destination, now.
func (d *Daemon) Notify(ctx context.Context, a notify.Alert) error {
	d.mu.Lock()
	n := d.notifier
	d.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Notify(ctx, a)
}

// SSH implements api.Runtime.
func (d *Daemon) SSH() api.SSH {
	if d.opts.SSH == nil {
		return nil // a nil *sshd.Manager in the interface would not be nil
	}
	return d.opts.SSH
}

// startSSH puts back the sshd settings a hardening replaced, when moat
// stopped before it was confirmed: an unconfirmed change must not stay
// and lock the owner out.
func (d *Daemon) startSSH(ctx context.Context, st *store.SQLite) {
	if d.opts.SSH == nil {
		return
	}
	raw, err := st.InForce(ctx, api.SSHStoreName)
	var trial api.SSHTrial
	if err == nil && raw != nil {
		err = json.Unmarshal(raw, &trial)
	}
	if err != nil {
		d.log.Error("sshd: reading what waits for a confirmation", "err", err)
		return
	}
	if !trial.Pending {
		return
	}
	var previous []byte
	if trial.Previous != nil {
		previous = []byte(*trial.Previous)
	}
	d.sshRolledBack(ctx, st, "moat restarted", d.opts.SSH.Restore(ctx, previous))
}

// sshRolledBack records a rollback of an unconfirmed hardening done when
// moat started or stopped; the stored trial is cleared only when it
// worked, for the next start to try again.
func (d *Daemon) sshRolledBack(ctx context.Context, st *store.SQLite, when string, err error) {
	detail := when + " before the hardening was confirmed: the previous sshd settings are back"
	if err != nil {
		detail = when + " before the hardening was confirmed, and putting the previous sshd settings back failed: " + err.Error()
		d.log.Error("sshd rollback", "err", err)
	} else if err := st.SetInForce(ctx, api.SSHStoreName, []byte(`{"pending":false}`)); err != nil {
		d.log.Error("sshd rollback", "err", err)
	}
	if err := st.Record(ctx, store.Entry{At: time.Now(), Who: "moat", From: "daemon", Action: "ssh.rollback", Target: "sshd", Detail: detail}); err != nil {
		d.log.Error("activity", "err", err)
	}
}

// stopSSH puts back, as moat stops, the sshd settings a hardening on
// trial replaced: nobody would be left to roll it back.
func (d *Daemon) stopSSH(st *store.SQLite) {
	if d.opts.SSH == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if had, err := d.opts.SSH.Stop(ctx); had {
		d.sshRolledBack(ctx, st, "moat stopped", err)
	}
}

// sshError is a failure to put the SSH keys in place: the rest of a
// change is applied, and the daemon starts with it.
type sshError struct{ error }

func (e sshError) Unwrap() error { return e.error }

// syncSSH puts the state's SSH keys where sshd reads them.
func (d *Daemon) syncSSH(ctx context.Context, s config.State) error {
	if d.opts.SSH == nil {
		return nil
	}
	if err := d.opts.SSH.SyncKeys(ctx, s.SSHUserKeys()); err != nil {
		return sshError{err}
	}
	return nil
}

// notifierFor sends alerts to the log, the webhook and, folded to one an
// incident an hour, by email.
func notifierFor(s config.State, log *slog.Logger, email notify.Notifier) notify.Notifier {
	n := notify.Multi{notify.Log{Logger: log}}
	if s.Server.Notify.Webhook != "" {
		n = append(n, notify.Webhook{URL: s.Server.Notify.Webhook})
	}
	if len(s.NotifyEmail()) > 0 && !s.Mail.Off && s.MailDomain() != "" {
		n = append(n, email)
	}
	return n
}

// Firewall implements api.Runtime.
func (d *Daemon) Firewall() api.Firewall {
	if d.opts.Firewall == nil {
		return nil // a nil *firewall.Manager in the interface would not be nil
	}
	return d.opts.Firewall
}

// startFirewall puts back what was in force when moat last stopped: the
// rules last applied (and confirmed), or no table when the firewall was
// turned off. (Not the desired rules: a change that rolled back for want
// of a confirmation is desired, and must not lock the owner out after a
// reboot.) On the first start, with nothing in force yet, it applies the
// desired rules, those moat init wrote; never an empty ruleset, which
// would drop SSH too. A failure is logged and recorded, and the daemon
// serves on.
func (d *Daemon) startFirewall(ctx context.Context, st *store.SQLite, state config.State) {
	fw := d.opts.Firewall
	if fw == nil {
		return
	}
	var was firewall.InForce
	raw, err := st.InForce(ctx, firewall.StoreName)
	if err == nil && raw != nil {
		err = json.Unmarshal(raw, &was)
	}
	if err == nil && raw == nil {
		// The first start: the desired state is all there is, written by
		// moat init or by hand, and never checked against a live session.
		was.Off = state.Firewall.Off
		was.Rules, err = state.FirewallRules()
		if err == nil && !was.Off && len(was.Rules) > 0 {
			err = d.firstGuard(was.Rules)
		}
	}
	action, detail := "firewall.apply", fmt.Sprintf("%d rules, as in force before the start", len(was.Rules))
	switch {
	case err != nil:
	case was.Off:
		action, detail = "firewall.off", "on start: the firewall was turned off"
		err = fw.Off(ctx)
	case len(was.Rules) == 0:
		d.log.Warn("the firewall has no rules yet, so moat leaves the host's firewall as it is; add rules with moat firewall allow, then moat firewall apply")
		return
	default:
		err = fw.Apply(ctx, was.Rules)
	}
	if err == nil && raw == nil {
		if b, merr := json.Marshal(was); merr == nil {
			err = st.SetInForce(ctx, firewall.StoreName, b)
		}
	}
	if err != nil {
		d.log.Error("firewall not in force", "err", err)
		detail = "failed on start: " + err.Error()
	}
	if rerr := st.Record(ctx, store.Entry{At: time.Now(), Who: "moat", From: "daemon", Action: action, Target: "firewall", Detail: detail}); rerr != nil {
		d.log.Error("activity", "err", rerr)
	}
}

// firstGuard refuses first rules that would cut an SSH session open now.
func (d *Daemon) firstGuard(rules []firewall.Rule) error {
	conf := d.opts.SSHDConfig
	if conf == "" {
		conf = "/etc/ssh/sshd_config"
	}
	sessions := d.opts.Sessions
	if sessions == nil {
		sessions = firewall.EstablishedPeers
	}
	ports, _ := firewall.SSHDPorts(conf)
	var a firewall.Access
	for _, p := range ports {
		for _, peer := range sessions(p) {
			a.Sessions = append(a.Sessions, firewall.Session{Peer: peer, Port: p})
		}
	}
	if err := firewall.Guard(rules, a, false); err != nil {
		return fmt.Errorf("the stored rules were not put in force: %w", err)
	}
	return nil
}

// Certificates implements api.Runtime.
func (d *Daemon) Certificates() []certs.Status { return d.certs.Status() }

// listen binds the edge's addresses, replacing each listener whose
// address changed: the new one is bound before the old one closes, and
// the other side is left alone.
func (d *Daemon) listen(s config.Server) error {
	d.mu.Lock()
	cur := d.listening
	next := cur
	var opened []*listener
	serve := map[*listener]func(context.Context, net.Listener) error{}
	for _, side := range []struct {
		field, addr string
		cur         *listener
		next        **listener
		serve       func(context.Context, net.Listener) error
	}{
		{"server.listen.http", s.HTTPAddr(), cur.http, &next.http, func(ctx context.Context, ln net.Listener) error { return d.edge.ServeListener(ctx, ln, false) }},
		{"server.listen.https", s.HTTPSAddr(), cur.https, &next.https, func(ctx context.Context, ln net.Listener) error { return d.edge.ServeListener(ctx, ln, true) }},
		{"server.listen.admin", s.AdminAddr(), cur.admin, &next.admin, d.serveAdmin},
	} {
		if side.cur != nil && side.cur.addr == side.addr {
			continue
		}
		ln, err := net.Listen("tcp", side.addr)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			d.mu.Unlock()
			return fmt.Errorf("%s: %w", side.field, err)
		}
		l := &listener{addr: side.addr, ln: ln, done: make(chan struct{})}
		opened = append(opened, l)
		serve[l] = side.serve
		*side.next = l
	}
	for _, l := range opened {
		sctx, stop := context.WithCancel(d.life)
		l.stop = stop
		go func() {
			defer close(l.done)
			if err := serve[l](sctx, l.ln); err != nil {
				d.log.Error("listener stopped", "addr", l.addr, "err", err)
			}
		}()
	}
	d.listening = next
	d.mu.Unlock()
	// The old side drains its connections without holding up the rest.
	if next.http != cur.http {
		cur.http.close()
	}
	if next.https != cur.https {
		cur.https.close()
	}
	if next.admin != cur.admin {
		cur.admin.close()
	}
	return nil
}

func (d *Daemon) stopListening() {
	d.mu.Lock()
	cur := d.listening
	d.mu.Unlock()
	cur.http.close()
	cur.https.close()
	cur.admin.close()
}

// certEvent keeps certificate outcomes in the activity log and alerts a
// person about failures.
func (d *Daemon) certEvent(ev certs.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := d.store.Record(ctx, store.Entry{
		Who: "moat", From: "certificate manager", Action: "cert." + ev.Kind, Target: ev.Domain, Detail: ev.Message,
	}); err != nil {
		d.log.Error("activity log", "err", err)
	}
	if !ev.Alert {
		return
	}
	d.mu.Lock()
	n := d.notifier
	d.mu.Unlock()
	if n == nil {
		return
	}
	if err := n.Notify(ctx, notify.Alert{At: time.Now().UTC(), Kind: "cert." + ev.Kind, Subject: ev.Domain, Message: ev.Message}); err != nil {
		d.log.Warn("alert not delivered", "err", err)
	}
}

// serveAdmin serves the admin listener: metrics and profiles, never on
// the public ports.
func (d *Daemon) serveAdmin(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics)
	// Profiles, to find where the edge spends its time under load; only
	// on loopback, as they tell a lot about the process.
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && ap.Addr().IsLoopback() {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// certExpiry reports each domain's certificate expiry at scrape time.
type certExpiry struct{ certs certSource }

var certExpiryDesc = prometheus.NewDesc("moat_certificate_expiry_timestamp_seconds",
	"When each domain's current certificate expires (Unix time); absent while none is held.", []string{"domain"}, nil)

func (certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c certExpiry) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.certs.Status() {
		if !st.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(st.NotAfter.Unix()), st.Domain)
		}
	}
}
