// Package daemon is `moat serve`: it opens the store, starts the edge and
// the certificate manager on the stored desired state, and serves the
// control API on the root-only Unix socket. Each change that comes through
// the API is checked against what the running daemon can do before it is
// stored, and applied right after, without a restart.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"moat/internal/api"
	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/edge"
	"moat/internal/notify"
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
	// Ready is called once the listeners are bound.
	Ready func(Info)
}

// Info tells where a started daemon listens.
type Info struct {
	HTTP, HTTPS net.Addr
	Socket      string
}

// Daemon is a running moat.
type Daemon struct {
	opts  Options
	log   *slog.Logger
	store *store.SQLite
	certs certSource
	edge  *edge.Edge

	mu        sync.Mutex
	listening listenState
	notifier  notify.Notifier
}

// certSource is what the daemon needs of its certificates: the edge's
// side plus management.
type certSource interface {
	edge.CertSource
	Sync(ctx context.Context, s config.Server, domains []string) error
	Status() []certs.Status
	Close()
}

type listenState struct {
	httpAddr, httpsAddr string
	http, https         net.Listener
	stop                context.CancelFunc
	done                chan struct{}
}

// StorePath is the store's file in a data dir.
func StorePath(dataDir string) string { return filepath.Join(dataDir, "moat.db") }

// Run serves until ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := &Daemon{opts: opts, log: opts.Logger}
	st, err := store.OpenSQLite(ctx, StorePath(opts.DataDir))
	if err != nil {
		return err
	}
	defer st.Close()
	d.store = st

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

	state, _, err := st.State(ctx)
	if err != nil {
		return err
	}
	d.edge = edge.New(opts.Logger, d.certs, d.fallback())
	if err := d.Apply(ctx, state); err != nil {
		return err
	}
	defer d.stopListening()

	ctl, err := api.ListenControl(opts.Socket, opts.Logger)
	if err != nil {
		return err
	}
	apiSrv := &api.Server{Store: st, Runtime: d, Log: opts.Logger}
	ctlSrv := &http.Server{Handler: apiSrv.Handler(), ConnContext: api.ControlContext, ReadHeaderTimeout: 10 * time.Second}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- ctlSrv.Serve(ctl) }()

	if opts.Ready != nil {
		d.mu.Lock()
		info := Info{HTTP: addrOf(d.listening.http), HTTPS: addrOf(d.listening.https), Socket: opts.Socket}
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

func addrOf(l net.Listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.Addr()
}

// Check implements api.Runtime: a new listen address must be bindable and
// the certificate settings loadable.
func (d *Daemon) Check(ctx context.Context, s config.State) error {
	if d.opts.Demo == nil {
		if err := certs.Check(s.Server); err != nil {
			return err
		}
	}
	d.mu.Lock()
	cur := d.listening
	d.mu.Unlock()
	for _, a := range []struct{ field, now, cur string }{
		{"server.listen.http", s.Server.HTTPAddr(), cur.httpAddr},
		{"server.listen.https", s.Server.HTTPSAddr(), cur.httpsAddr},
	} {
		if a.now == a.cur || a.now == cur.httpAddr || a.now == cur.httpsAddr {
			continue
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
	if err := d.edge.Load(s); err != nil {
		return err
	}
	if err := d.listen(ctx, s.Server); err != nil {
		return err
	}
	d.mu.Lock()
	d.notifier = notifierFor(s.Server, d.log)
	d.mu.Unlock()
	return d.certs.Sync(ctx, s.Server, s.Domains())
}

func notifierFor(s config.Server, log *slog.Logger) notify.Notifier {
	n := notify.Multi{notify.Log{Logger: log}}
	if s.Notify.Webhook != "" {
		n = append(n, notify.Webhook{URL: s.Notify.Webhook})
	}
	return n
}

// Certificates implements api.Runtime.
func (d *Daemon) Certificates() []certs.Status { return d.certs.Status() }

// listen binds the edge's addresses, replacing the listeners whose address
// changed: the new ones are bound before the old ones close.
func (d *Daemon) listen(ctx context.Context, s config.Server) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.listening
	if cur.https != nil && cur.httpAddr == s.HTTPAddr() && cur.httpsAddr == s.HTTPSAddr() {
		return nil
	}
	next := listenState{httpAddr: s.HTTPAddr(), httpsAddr: s.HTTPSAddr(), done: make(chan struct{})}
	var err error
	if next.https, err = net.Listen("tcp", next.httpsAddr); err != nil {
		return fmt.Errorf("server.listen.https: %w", err)
	}
	if next.http, err = net.Listen("tcp", next.httpAddr); err != nil {
		next.https.Close()
		return fmt.Errorf("server.listen.http: %w", err)
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	next.stop = stop
	go func() {
		defer close(next.done)
		if err := d.edge.Serve(sctx, next.http, next.https); err != nil {
			d.log.Error("edge stopped", "err", err)
		}
	}()
	d.listening = next
	if cur.stop != nil {
		cur.stop()
		<-cur.done
	}
	return nil
}

func (d *Daemon) stopListening() {
	d.mu.Lock()
	cur := d.listening
	d.mu.Unlock()
	if cur.stop != nil {
		cur.stop()
		<-cur.done
	}
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
