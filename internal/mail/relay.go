package mail

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"moat/internal/config"
	"moat/internal/secret"
)

// Settings are what the relay enforces, from the desired state.
type Settings struct {
	// Off stops the relay listening.
	Off bool
	// Listen are the addresses to listen on; empty: port 587 on loopback
	// and every private address the server has.
	Listen []netip.AddrPort
	// Domain is the mail domain: an app sends as <app>@<Domain>.
	Domain string
	// Apps are the apps that may send (whose credentials count).
	Apps map[string]bool
	// Hourly, MaxSize and MaxRecipients are the limits per app and
	// message.
	Hourly        int
	MaxSize       int64
	MaxRecipients int
}

// DefaultPort is the submission port the relay listens on.
const DefaultPort = 587

// RelayOptions wire a relay.
type RelayOptions struct {
	Store Store
	Log   *slog.Logger
	// TLS offers STARTTLS with the server's certificate; nil offers none
	// (and then only loopback clients may log in).
	TLS *tls.Config
	// Fail is told of each failed login, for the guard.
	Fail func(ctx context.Context, addr netip.Addr, detail string)
	// Queued is called after a message is queued, to wake delivery.
	Queued  func()
	Metrics *Metrics
	// SpoolDir is where the store keeps the queue, for the free-space
	// check before a message is taken; none when empty.
	SpoolDir string
	// Now is time.Now when nil.
	Now func() time.Time
	// Listen opens a listener; net.Listen when nil (tests listen in a
	// network namespace).
	Listen func(network, addr string) (net.Listener, error)
	// Interfaces lists the server's interfaces, where the relay listens
	// when Settings.Listen is empty; HostInterfaces when nil.
	Interfaces func() ([]Interface, error)
}

// Interface is a network interface as the relay sees it.
type Interface struct {
	Name         string
	Up, Loopback bool
	Addrs        []netip.Prefix
}

// HostInterfaces lists the interfaces of the calling thread's network
// namespace with their addresses.
func HostInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifc := range ifs {
		x := Interface{Name: ifc.Name, Up: ifc.Flags&net.FlagUp != 0, Loopback: ifc.Flags&net.FlagLoopback != 0}
		as, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			p, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			x.Addrs = append(x.Addrs, netip.PrefixFrom(p.Unmap(), ones))
		}
		out = append(out, x)
	}
	return out, nil
}

// Relay is the SMTP server the apps submit mail to.
type Relay struct {
	opts  RelayOptions
	quota *quota
	creds *credentials

	mu        sync.Mutex
	settings  Settings
	listeners map[netip.AddrPort]*relayListener
	bridges   []netip.Prefix // the Docker bridges' networks, whose peers are let in
	rescan    chan struct{}

	// secure requires TLS before AUTH; loopback allows AUTH without it.
	secure, loopback *smtp.Server
}

type relayListener struct {
	ln   net.Listener
	done chan struct{}
}

// NewRelay makes a relay; Run serves it.
func NewRelay(o RelayOptions) *Relay {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Listen == nil {
		o.Listen = net.Listen
	}
	if o.Interfaces == nil {
		o.Interfaces = HostInterfaces
	}
	r := &Relay{
		opts:      o,
		quota:     newQuota(),
		creds:     newCredentials(o.Store),
		listeners: map[netip.AddrPort]*relayListener{},
		rescan:    make(chan struct{}, 1),
	}
	return r
}

func (r *Relay) server(domain string, insecureAuth bool) *smtp.Server {
	s := smtp.NewServer(r)
	s.Domain = domain
	s.TLSConfig = r.opts.TLS
	s.AllowInsecureAuth = insecureAuth
	// The configured limits are enforced by the session, since they can
	// change while connections are open; these are the ceilings.
	s.MaxMessageBytes = 100 << 20
	s.MaxRecipients = 1000
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = time.Minute
	s.ErrorLog = slogLogger{r.opts.Log}
	return s
}

// slogLogger gives go-smtp's unexpected errors to slog.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(format string, v ...any) { s.l.Debug("smtp: " + fmt.Sprintf(format, v...)) }
func (s slogLogger) Println(v ...any)               { s.l.Debug("smtp: " + fmt.Sprint(v...)) }

// Restore counts the messages accepted in the last hour against each
// app's quota, after a restart.
func (r *Relay) Restore(ctx context.Context) error {
	now := r.opts.Now()
	sent, err := r.opts.Store.Sent(ctx, now.Add(-quotaWindow))
	if err != nil {
		return err
	}
	r.quota.mu.Lock()
	defer r.quota.mu.Unlock()
	for _, m := range sent {
		r.quota.add(m.App, len(m.To), m.Accepted)
	}
	return nil
}

// Configure takes new settings and moves the listeners to match; an
// address that cannot be listened on is an error, and the others serve.
func (r *Relay) Configure(s Settings) error {
	r.mu.Lock()
	r.settings = s
	if r.secure == nil {
		// The greeting's name is the first one; go-smtp reads it
		// unlocked while serving.
		name := s.Domain
		if name == "" {
			name = "localhost"
		}
		r.secure, r.loopback = r.server(name, false), r.server(name, true)
	}
	r.mu.Unlock()
	return r.listen()
}

// Run rescans the server's addresses every interval (a Docker bridge
// that appears later is listened on) until ctx ends, then closes every
// listener and waits for them.
func (r *Relay) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			ls := r.listeners
			r.listeners = map[netip.AddrPort]*relayListener{}
			r.mu.Unlock()
			for _, l := range ls {
				l.ln.Close()
				<-l.done
			}
			r.mu.Lock()
			servers := []*smtp.Server{r.secure, r.loopback}
			r.mu.Unlock()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			for _, srv := range servers {
				if srv != nil {
					srv.Shutdown(sctx)
				}
			}
			cancel()
			return
		case <-t.C:
		case <-r.rescan:
		}
		if err := r.listen(); err != nil {
			r.opts.Log.Warn("mail relay", "err", err)
		}
	}
}

// Addrs lists where the relay listens now.
func (r *Relay) Addrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.listeners {
		out = append(out, l.ln.Addr().String())
	}
	return out
}

// listen binds what the settings ask for and closes the rest.
func (r *Relay) listen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[netip.AddrPort]bool{}
	var errs []error
	if !r.settings.Off {
		addrs := r.settings.Listen
		if len(addrs) == 0 {
			ifs, err := r.opts.Interfaces()
			if err != nil {
				// Keep what listens now rather than close it all.
				return fmt.Errorf("mail relay: %w", err)
			}
			addrs, r.bridges = privateAddrs(ifs, DefaultPort)
		}
		for _, a := range addrs {
			want[a] = true
		}
	}
	for a, l := range r.listeners {
		if !want[a] {
			l.ln.Close()
			<-l.done
			delete(r.listeners, a)
		}
	}
	for a := range want {
		if r.listeners[a] != nil {
			continue
		}
		ln, err := r.opts.Listen("tcp", a.String())
		if err != nil {
			errs = append(errs, fmt.Errorf("mail.listen: %s: %w", a, err))
			continue
		}
		l := &relayListener{ln: &privateOnly{Listener: ln, r: r}, done: make(chan struct{})}
		srv := r.secure
		if a.Addr().IsLoopback() {
			srv = r.loopback
		}
		go func() {
			defer close(l.done)
			srv.Serve(l.ln)
		}()
		r.listeners[a] = l
		r.opts.Log.Info("mail relay listening", "addr", a.String())
	}
	return errors.Join(errs...)
}

// privateAddrs is port on loopback and on every private address of the
// interfaces that are up, and on their Docker bridges (docker0, br-*),
// whose networks are returned too.
func privateAddrs(ifs []Interface, port uint16) (addrs []netip.AddrPort, bridges []netip.Prefix) {
	addrs = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), netip.AddrPortFrom(netip.IPv6Loopback(), port)}
	for _, ifc := range ifs {
		if !ifc.Up || ifc.Loopback {
			continue
		}
		bridge := ifc.Name == "docker0" || strings.HasPrefix(ifc.Name, "br-")
		for _, p := range ifc.Addrs {
			a := p.Addr()
			if a.IsLinkLocalUnicast() {
				continue // needs a zone, and nothing submits mail there
			}
			if bridge {
				bridges = append(bridges, p.Masked())
			}
			if bridge || private(a) {
				addrs = append(addrs, netip.AddrPortFrom(a, port))
			}
		}
	}
	return addrs, bridges
}

// private is loopback, RFC 1918, RFC 6598, fc00::/7 or link-local.
func private(a netip.Addr) bool { return config.PrivateAddr(a) }

// peerAllowed reports whether a client may talk to the relay: only from
// a private address or a Docker bridge, whatever address it reached.
func (r *Relay) peerAllowed(a netip.Addr) bool {
	if private(a) {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bridges {
		if b.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// privateOnly refuses connections from public addresses before SMTP
// starts: a firewall mistake must not make the relay an open one.
type privateOnly struct {
	net.Listener
	r *Relay
}

func (p *privateOnly) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if p.r.peerAllowed(ap.Addr()) {
			return c, nil
		}
		p.r.opts.Metrics.reject("public_peer")
		p.r.opts.Log.Warn("mail relay refused a client from a public address", "client", ap.Addr().String())
		c.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c, "554 5.7.1 this relay serves the apps on this server only\r\n")
		c.Close()
	}
}

// NewSession implements smtp.Backend.
func (r *Relay) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ap, _ := netip.ParseAddrPort(c.Conn().RemoteAddr().String())
	r.mu.Lock()
	s := r.settings
	r.mu.Unlock()
	return &session{r: r, peer: ap.Addr().Unmap(), settings: s}, nil
}

// session is one SMTP connection.
type session struct {
	r        *Relay
	peer     netip.Addr
	settings Settings
	app      string // once logged in
	from     string
	rcpts    []string
	held     int // recipients held in the quota
}

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required: log in with the app's credentials (moat mail credentials APP)"}
	errOff          = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "The relay is turned off (mail.off)"}
)

// AuthMechanisms implements smtp.AuthSession.
func (s *session) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	login := func(identity, user, pass string) error {
		if identity != "" && identity != user {
			return s.authFailed(user, "an authorization identity other than the user")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ok, err := s.r.creds.check(ctx, user, pass, s.settings.Apps[user])
		if err != nil {
			s.r.opts.Log.Error("mail relay: checking credentials", "app", user, "err", err)
			return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
		}
		if !ok {
			return s.authFailed(user, "a wrong password or an unknown app")
		}
		s.app = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(login), nil
	case sasl.Login:
		return &loginServer{done: func(u, p string) error { return login("", u, p) }}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) authFailed(user, why string) error {
	s.r.opts.Metrics.reject("auth")
	detail := fmt.Sprintf("mail relay: failed login as %q from %s: %s", printable(user), s.peer, why)
	s.r.opts.Log.Warn("mail relay: failed login", "user", printable(user), "client", s.peer.String())
	if s.r.opts.Fail != nil {
		s.r.opts.Fail(context.Background(), s.peer, detail)
	}
	return smtp.ErrAuthFailed
}

// printable keeps a client's words from forging log lines.
func printable(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, truncate(v, 64))
}

// truncate cuts v to at most n bytes, at a character's start.
func truncate(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n]
}

// sender is the one address the logged-in app may send as.
func (s *session) sender() string { return s.app + "@" + s.settings.Domain }

// Mail implements smtp.Session: the envelope sender must be the app's.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	switch {
	case s.settings.Off:
		return errOff
	case s.app == "":
		s.r.opts.Metrics.reject("no_auth")
		return errAuthRequired
	case s.settings.Domain == "":
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 5}, Message: "No mail domain is set: set server.domain or mail.domain"}
	case !strings.EqualFold(from, s.sender()):
		s.r.opts.Metrics.reject("sender")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: fmt.Sprintf("%s may send only as <%s>, not <%s>", s.app, s.sender(), printable(from))}
	case opts != nil && opts.Size > s.settings.MaxSize:
		s.r.opts.Metrics.reject("size")
		return tooLarge(s.settings.MaxSize)
	}
	s.from = s.sender()
	return nil
}

func tooLarge(max int64) error {
	return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: fmt.Sprintf("Message too large: the limit is %d bytes (mail.max_size)", max)}
}

// Rcpt implements smtp.Session: a valid address, within the limits.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.from == "" {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL FROM first"}
	}
	if p := checkRecipient(to); p != "" {
		s.r.opts.Metrics.reject("recipient")
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: fmt.Sprintf("<%s> %s", printable(to), p)}
	}
	if len(s.rcpts) >= s.settings.MaxRecipients {
		s.r.opts.Metrics.reject("recipients")
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: fmt.Sprintf("Too many recipients: at most %d a message (mail.max_recipients); send the rest in another message", s.settings.MaxRecipients)}
	}
	wait, ok := s.r.quota.hold(s.app, s.settings.Hourly, s.r.opts.Now())
	if !ok {
		s.r.opts.Metrics.reject("quota")
		mins := int((wait + time.Minute - 1) / time.Minute)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: fmt.Sprintf("%s has sent %d messages in the last hour, its limit (mail.per_app_hourly): try again in %d minutes", s.app, s.settings.Hourly, mins)}
	}
	s.held++
	s.rcpts = append(s.rcpts, to)
	return nil
}

// checkRecipient says what is wrong with a recipient address.
func checkRecipient(to string) string {
	local, domain, ok := strings.Cut(to, "@")
	switch {
	case !ok || local == "" || domain == "":
		return "is not an address: write local@domain"
	case strings.ContainsAny(to, " \t\r\n\x00<>,;\\\""):
		return "holds characters an address may not"
	case len(to) > 254:
		return "is longer than 254 characters"
	}
	if _, err := mail.ParseAddress(to); err != nil {
		return "is not an address: write local@domain"
	}
	labels := strings.Split(strings.TrimSuffix(domain, "."), ".")
	if len(labels) < 2 {
		return "has a domain that is not fully qualified"
	}
	return ""
}

// Data implements smtp.Session: the message is checked, then kept and
// synced, and only then answered 250.
func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(io.LimitReader(r, s.settings.MaxSize+1))
	if err != nil {
		return err
	}
	if int64(len(data)) > s.settings.MaxSize {
		s.r.opts.Metrics.reject("size")
		return tooLarge(s.settings.MaxSize)
	}
	data = crlf(data)
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(data))).ReadMIMEHeader()
	if err != nil {
		s.r.opts.Metrics.reject("header")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "The message's header cannot be read: " + err.Error()}
	}
	if p := s.checkFrom(hdr.Values("From")); p != "" {
		s.r.opts.Metrics.reject("sender")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: p}
	}
	now := s.r.opts.Now().UTC()
	id := NewID()
	var extra bytes.Buffer
	msgID := strings.TrimSpace(hdr.Get("Message-Id"))
	if msgID == "" {
		msgID = fmt.Sprintf("<%s.%s@%s>", now.Format("20060102150405"), id, s.settings.Domain)
		fmt.Fprintf(&extra, "Message-ID: %s\r\n", msgID)
	}
	if hdr.Get("Date") == "" {
		fmt.Fprintf(&extra, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if extra.Len() > 0 {
		data = append(extra.Bytes(), data...)
	}
	if p := s.r.spaceProblem(int64(len(data))); p != "" {
		s.r.opts.Metrics.reject("disk_full")
		s.r.opts.Log.Error("mail relay: refusing a message: " + p)
		return errNoSpace
	}
	m := Message{
		ID: id, App: s.app, From: s.from, Size: int64(len(data)), MessageID: printable(msgID),
		Accepted: now, State: Queued, NextAttempt: now, Data: data,
	}
	for _, to := range s.rcpts {
		m.To = append(m.To, Recipient{Addr: to})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.r.opts.Store.Enqueue(ctx, m); err != nil {
		s.r.opts.Log.Error("mail relay: the message was not queued", "app", s.app, "err", err)
		if errors.Is(err, ErrNoSpace) {
			s.r.opts.Metrics.reject("disk_full")
			return errNoSpace
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "The message could not be queued; try again later"}
	}
	s.r.quota.commit(s.app, s.held, now)
	s.held = 0
	s.r.opts.Metrics.accept(s.app)
	if s.r.opts.Queued != nil {
		s.r.opts.Queued()
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Queued as " + id}
}

var errNoSpace = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage: the message was not taken; try again later"}

// checkFrom says what is wrong with the From header: it must be one
// address, the app's.
func (s *session) checkFrom(from []string) string {
	want := fmt.Sprintf("the From header must be <%s>", s.sender())
	if len(from) != 1 {
		return fmt.Sprintf("The message has %d From headers: %s", len(from), want)
	}
	addrs, err := mail.ParseAddressList(from[0])
	if err != nil || len(addrs) != 1 {
		return "The From header is not one address: " + want
	}
	if !strings.EqualFold(addrs[0].Address, s.sender()) {
		return fmt.Sprintf("The From header is <%s>: %s", printable(addrs[0].Address), want)
	}
	return ""
}

// spaceProblem says why a message of size should not be taken now: the
// disk that keeps the queue is (nearly) full. Twice its size is kept free
// for the store's journal, and a margin for everything else.
func (r *Relay) spaceProblem(size int64) string {
	if r.opts.SpoolDir == "" {
		return ""
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(r.opts.SpoolDir, &st); err != nil {
		return ""
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if need := 2*size + 1<<20; free < need {
		return fmt.Sprintf("%s has %d bytes free, %d needed", r.opts.SpoolDir, free, need)
	}
	return ""
}

// crlf makes every line end in CRLF: apps often write bare LFs, and
// DKIM and SMTP want CRLF.
func crlf(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) || bytes.Count(b, []byte("\r\n")) == bytes.Count(b, []byte("\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// Reset implements smtp.Session.
func (s *session) Reset() {
	s.r.quota.release(s.app, s.held)
	s.held = 0
	s.from = ""
	s.rcpts = nil
}

// Logout implements smtp.Session.
func (s *session) Logout() error {
	s.Reset()
	return nil
}

// loginServer is the server side of SASL LOGIN, which many apps' mail
// libraries still use: username and password, each asked for.
type loginServer struct {
	user string
	step int
	done func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step++
		if len(resp) > 0 { // the username as an initial response
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.done(l.user, string(resp))
	}
	return nil, false, errors.New("unexpected client response")
}

// credentials checks apps' passwords against their argon2id hashes. A
// password verified once is remembered as a keyed hash (with the stored
// hash it matched, so a rotation forgets it), so that an app that logs in
// for every message costs one argon2id check, not one per message.
type credentials struct {
	store Credentials
	key   []byte
	slow  chan struct{} // argon2id checks at once
	// verify is secret.Verify.
	verify  func(hash, password string) (bool, error)
	mu      sync.Mutex
	known   map[string][]byte // app → tag of its password verified
	pending map[string]*check // app and tag → the check under way
}

func newCredentials(st Credentials) *credentials {
	key := make([]byte, 32)
	rand.Read(key)
	return &credentials{store: st, key: key, slow: make(chan struct{}, 2), verify: secret.Verify, known: map[string][]byte{}, pending: map[string]*check{}}
}

func (c *credentials) check(ctx context.Context, app, password string, exists bool) (bool, error) {
	hash := ""
	if exists {
		var err error
		if hash, err = c.store.Credential(ctx, app); err != nil {
			return false, err
		}
	}
	if hash == "" {
		// Still pay for a hash, so that a guesser cannot tell apps that
		// exist from those that do not by the time an answer takes.
		if err := c.slowly(ctx, func() { c.verify(dummyHash(), password) }); err != nil {
			return false, err
		}
		return false, nil
	}
	mac := hmac.New(sha256.New, c.key)
	io.WriteString(mac, hash+"\x00"+password)
	tag := mac.Sum(nil)
	// A burst of logins with the same password (an app's workers after
	// a restart) shares one check.
	key := app + "\x00" + string(tag)
	c.mu.Lock()
	if known := c.known[app]; known != nil && hmac.Equal(known, tag) {
		c.mu.Unlock()
		return true, nil
	}
	if cl := c.pending[key]; cl != nil {
		c.mu.Unlock()
		select {
		case <-cl.done:
			return cl.ok, cl.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	cl := &check{done: make(chan struct{})}
	c.pending[key] = cl
	c.mu.Unlock()
	if err := c.slowly(ctx, func() { cl.ok, cl.err = c.verify(hash, password) }); err != nil {
		cl.err = err
	} else if cl.err != nil {
		cl.err = fmt.Errorf("credentials of %s: %w", app, cl.err)
	}
	c.mu.Lock()
	delete(c.pending, key)
	if cl.ok && cl.err == nil {
		c.known[app] = tag
	}
	c.mu.Unlock()
	close(cl.done)
	return cl.ok, cl.err
}

// check is one argon2id check under way, which others wait for.
type check struct {
	done chan struct{}
	ok   bool
	err  error
}

// slowly runs an argon2id check when few others run: each takes 19 MiB
// and a core's time.
func (c *credentials) slowly(ctx context.Context, f func()) error {
	select {
	case c.slow <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.slow }()
	f()
	return nil
}

// dummyHash is checked against when there is no real one; made once,
// when first needed.
var dummyHash = sync.OnceValue(func() string {
	h, _ := secret.Hash("no such app")
	return h
})

var _ smtp.Backend = (*Relay)(nil)
var _ smtp.AuthSession = (*session)(nil)
