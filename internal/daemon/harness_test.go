package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"moat/internal/notify"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/audit"
	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/sshd"
	"moat/internal/store"
	"moat/internal/testenv"
)

// env is one moat daemon with its own Pebble, DNS server, ports and data
// dir, all on loopback.
type env struct {
	t          *testing.T
	dir        string
	dns        *testenv.DNS
	pebble     *testenv.Pebble
	httpPort   int
	httpsPort  int
	mailPort   int // the relay's, on loopback
	socket     string
	client     *api.Client
	stop       context.CancelFunc
	done       chan error
	upstream   string // a plain app on loopback that says hello
	zone       string // this env's own DNS zone
	admin      string // the admin listener's address
	accessLog  testenv.SyncBuffer
	validity   time.Duration
	renewCheck time.Duration
	challenges []string
	firewall   *firewall.Manager
	ssh        *sshd.Manager
	sessions   func(port uint16) []netip.Addr // SSH sessions as the daemon sees them; none by default
	mxPort     int                            // where direct mail goes; none by default
	mailListen func(network, addr string) (net.Listener, error)
	auditEvery time.Duration // never, unless a test asks
	proc       audit.Proc
}

type envOption func(*env)

// envCount gives every env its own DNS zone: certmagic keeps challenges and
// renewal backoff per name for the whole process, so envs running side by
// side must not share names.
var envCount atomic.Int64

// host is a name in this env's zone.
func (e *env) host(label string) string { return label + "." + e.zone }

func withValidity(d time.Duration) envOption     { return func(e *env) { e.validity = d } }
func withChallenges(c ...string) envOption       { return func(e *env) { e.challenges = c } }
func withRenewCheck(d time.Duration) envOption   { return func(e *env) { e.renewCheck = d } }
func withFirewall(m *firewall.Manager) envOption { return func(e *env) { e.firewall = m } }
func withSSH(m *sshd.Manager) envOption          { return func(e *env) { e.ssh = m } }
func withMXPort(p int) envOption                 { return func(e *env) { e.mxPort = p } }
func withAuditEvery(d time.Duration) envOption   { return func(e *env) { e.auditEvery = d } }
func withProc(p audit.Proc) envOption            { return func(e *env) { e.proc = p } }

// withMailListenIn makes the relay listen inside a network namespace.
func withMailListenIn(ns *testenv.Netns) envOption {
	return func(e *env) {
		e.mailListen = func(network, addr string) (ln net.Listener, err error) {
			err = ns.Do(func() error {
				ln, err = net.Listen(network, addr)
				return err
			})
			return ln, err
		}
	}
}

// loopbackOnly is the probe's dialer in tests: the DNS pre-check's HTTP
// probe may reach the test's own addresses and nothing beyond.
func loopbackOnly(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("test dialer: %s is not on loopback", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func startEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), zone: fmt.Sprintf("e%d.test", envCount.Add(1)), renewCheck: time.Second, auditEvery: -1}
	for _, o := range opts {
		o(e)
	}
	if e.sessions == nil {
		e.sessions = func(uint16) []netip.Addr { return nil } // the host's own sessions are no test's business
	}
	ports := testenv.FreePorts(t, 3)
	e.httpPort, e.httpsPort, e.mailPort = ports[0], ports[1], ports[2]
	e.dns = testenv.StartDNS(t)
	e.pebble = testenv.StartPebble(t, testenv.PebbleOptions{
		HTTPPort: e.httpPort, TLSPort: e.httpsPort, DNSServer: e.dns.Addr(), CertValidity: e.validity,
	})
	caFile := filepath.Join(e.dir, "pebble-api.pem")
	if err := os.WriteFile(caFile, e.pebble.APITrustPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s via %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	e.upstream = "http://" + ln.Addr().String()

	// The first settings go straight into the store, as `moat init` with
	// no daemon would.
	st, err := store.OpenSQLite(context.Background(), StorePath(e.dir))
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Update(context.Background(), store.Actor{Who: "test"}, false, func(s *config.State) error {
		s.Server = config.Server{
			Domain: "moat.test", Email: "admin@moat.test",
			Listen:    config.Listen{HTTP: fmt.Sprintf("127.0.0.1:%d", e.httpPort), HTTPS: fmt.Sprintf("127.0.0.1:%d", e.httpsPort), Admin: "127.0.0.1:0"},
			ACME:      config.ACME{Directory: e.pebble.DirectoryURL, CARoots: caFile, Challenges: e.challenges},
			PublicIPs: []string{"127.0.0.1"},
			// The tests' request loops stay far below this.
			RateLimit: config.RateLimit{Requests: 1_000_000, Per: "second"},
			Resolver:  e.dns.Addr(),
		}
		// The HTTPS API's own host is the business of the tests about it.
		s.Server.AdminDomain = "off"
		// The host's own sshd log is no test's business.
		s.Guard.Jails = []config.Jail{{Name: config.JailSSHD, Off: true}}
		// Nor are its private addresses.
		s.Mail.Listen = []string{fmt.Sprintf("127.0.0.1:%d", e.mailPort)}
		return nil
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	return e
}

// start runs the daemon in this process.
func (e *env) start() {
	e.t.Helper()
	e.socket = filepath.Join(e.dir, "moat.sock")
	ctx, cancel := context.WithCancel(context.Background())
	e.stop, e.done = cancel, make(chan error, 1)
	ready := make(chan struct{})
	logger := testLogger(e.t)
	go func() {
		e.done <- Run(ctx, Options{
			DataDir: e.dir, Socket: e.socket, Logger: logger,
			Certs: certs.Options{
				RenewCheckInterval: e.renewCheck,
				Backoff:            func(int) time.Duration { return 200 * time.Millisecond },
				Dial:               loopbackOnly,
				FileCheckInterval:  100 * time.Millisecond,
			},
			AccessLog:   &e.accessLog,
			Firewall:    e.firewall,
			SSH:         e.ssh,
			Sessions:    e.sessions,
			MailMXPort:  e.mxPort,
			MailListen:  e.mailListen,
			BackupCheck: 100 * time.Millisecond,
			AuditEvery:  e.auditEvery,
			Proc:        e.proc,
			Ready: func(info Info) {
				e.admin = info.Admin.String()
				close(ready)
			},
		})
	}()
	select {
	case <-ready:
	case err := <-e.done:
		e.t.Fatalf("daemon did not start: %v", err)
	case <-time.After(20 * time.Second):
		e.t.Fatal("daemon did not start in 20s")
	}
	c, err := api.DialControl(context.Background(), e.socket)
	if err != nil {
		e.t.Fatal(err)
	}
	e.client = c
	e.t.Cleanup(e.shutdown)
}

func (e *env) shutdown() {
	if e.stop == nil {
		return
	}
	e.stop()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("daemon: %v", err)
		}
	case <-time.After(20 * time.Second):
		e.t.Error("daemon did not stop in 20s")
	}
	e.stop = nil
}

// webhookAlerts points the server's webhook at a receiver of the test's
// and returns the alerts it gets.
func (e *env) webhookAlerts() <-chan notify.Alert {
	e.t.Helper()
	alerts := make(chan notify.Alert, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a notify.Alert
		if err := json.NewDecoder(r.Body).Decode(&a); err == nil {
			alerts <- a
		}
	}))
	e.t.Cleanup(hook.Close)
	e.change(func(s *config.State) { s.Server.Notify.Webhook = hook.URL })
	return alerts
}

// waitAlert waits for the first alert of kind, passing over the others.
func waitAlert(t *testing.T, alerts <-chan notify.Alert, kind string, within time.Duration) notify.Alert {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case a := <-alerts:
			if a.Kind == kind {
				return a
			}
		case <-timeout:
			t.Fatalf("no %s alert within %s", kind, within)
		}
	}
}

func (e *env) addApp(name string, domains ...string) {
	e.t.Helper()
	var res api.ChangeResponse
	if err := e.client.Do(context.Background(), "POST", "/v1/apps", config.App{Name: name, Domains: domains, Upstream: e.upstream}, &res); err != nil {
		e.t.Fatalf("add app %s: %v", name, err)
	}
}

// change edits the desired state through the API, as `moat apply` does.
func (e *env) change(fn func(*config.State)) {
	e.t.Helper()
	var cur api.StateResponse
	if err := e.client.Do(context.Background(), "GET", "/v1/state", nil, &cur); err != nil {
		e.t.Fatal(err)
	}
	fn(&cur.State)
	y, err := config.Marshal(cur.State)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.client.Do(context.Background(), "PUT", "/v1/state", y, nil); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) status() api.StatusResponse {
	e.t.Helper()
	var st api.StatusResponse
	if err := e.client.Do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// waitCert waits until the domain's certificate status satisfies ok.
func (e *env) waitCert(domain string, timeout time.Duration, ok func(certs.Status) bool) certs.Status {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last certs.Status
	for time.Now().Before(deadline) {
		for _, c := range e.status().Certificates {
			if c.Domain == domain {
				last = c
				if ok(c) {
					return c
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("%s: certificate status never got there; last: %+v", domain, last)
	return last
}

func isValid(s certs.Status) bool { return s.State == certs.Valid }

// httpsClient trusts only Pebble's roots and sends every request to the
// edge's HTTPS port, whatever the host name.
func (e *env) httpsClient(roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", e.httpsPort))
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (e *env) url(host, path string) string {
	return fmt.Sprintf("https://%s:%d%s", host, e.httpsPort, path)
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// servedCert returns the leaf the edge presents for a server name.
func (e *env) servedCert(name string, roots *x509.CertPool) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", e.httpsPort), &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// moat runs the real CLI against this env's daemon.
func (e *env) moat(args ...string) string {
	e.t.Helper()
	bin := testenv.MoatBinary(e.t)
	out, err := exec.Command(bin, append([]string{"--socket", e.socket, "--data-dir", e.dir}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("moat %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testLogger keeps the daemon's log and shows it when the test fails.
func testLogger(t *testing.T) *slog.Logger {
	var buf testenv.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
