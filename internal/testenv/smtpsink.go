package testenv

import (
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SinkOptions configures StartSMTPSink.
type SinkOptions struct {
	// Username and Password, when set, are required (AUTH PLAIN) before
	// MAIL; and then, as a provider does, STARTTLS before AUTH.
	Username, Password string
	// Addr is where to listen; 127.0.0.1:0 when empty.
	Addr string
	// Listener, when set, is listened on instead of Addr (a listener in
	// a test's network namespace).
	Listener net.Listener
	// NoTLS offers no STARTTLS.
	NoTLS bool
	// RefuseRcpt, when it says so, refuses a recipient for good (550),
	// as a server with no such mailbox does.
	RefuseRcpt func(addr string) bool
	// Delay is how long it takes to take each message, as a busy
	// provider does.
	Delay time.Duration
	// Names are host names its certificate is for, besides localhost
	// and 127.0.0.1.
	Names []string
}

// SinkMessage is one message the sink took.
type SinkMessage struct {
	From string
	To   []string
	Data []byte
	// TLS and Auth say how the sender reached the sink.
	TLS  bool
	User string
}

// SMTPSink is a real SMTP server (go-smtp) that keeps what it is sent,
// playing a smarthost or a recipient's MX in tests.
type SMTPSink struct {
	// Addr is where it listens.
	Addr string
	// CAFile is a PEM file of the root that signed its certificate
	// (for localhost and 127.0.0.1).
	CAFile string
	// TLS is its server certificate, for tests that need more names.
	TLS *tls.Config

	opts SinkOptions
	srv  *smtp.Server

	mu       sync.Mutex
	msgs     []SinkMessage
	arrived  chan struct{}
	dropNext int  // connections to drop after DATA, before answering
	refuse   bool // answer 451 to DATA
}

// StartSMTPSink starts a sink; it stops when the test ends.
func StartSMTPSink(t testing.TB, o SinkOptions) *SMTPSink {
	t.Helper()
	cert, _, caDER, err := newAPICert(o.Names...)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "sink-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &SMTPSink{CAFile: ca, opts: o, arrived: make(chan struct{}, 1)}
	k.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	k.srv = smtp.NewServer(k)
	k.srv.Domain = "sink.test"
	if !o.NoTLS {
		k.srv.TLSConfig = k.TLS
	}
	k.srv.MaxMessageBytes = 200 << 20
	k.srv.ReadTimeout = time.Minute
	k.srv.ErrorLog = discardSMTPLog{}
	ln := o.Listener
	if ln == nil {
		addr := o.Addr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatal(err)
		}
	}
	k.Addr = ln.Addr().String()
	go k.srv.Serve(ln)
	t.Cleanup(func() { k.srv.Close() })
	return k
}

type discardSMTPLog struct{}

func (discardSMTPLog) Printf(string, ...any) {}
func (discardSMTPLog) Println(...any)        {}

// Messages returns what the sink has taken so far.
func (k *SMTPSink) Messages() []SinkMessage {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]SinkMessage(nil), k.msgs...)
}

// Wait waits until the sink holds at least n messages, or d passes, and
// returns what it holds.
func (k *SMTPSink) Wait(n int, d time.Duration) []SinkMessage {
	deadline := time.After(d)
	for {
		if m := k.Messages(); len(m) >= n {
			return m
		}
		select {
		case <-k.arrived:
		case <-deadline:
			return k.Messages()
		}
	}
}

// DropAfterData makes the next n connections read a whole message, then
// close without answering, as a provider that accepts and drops does.
func (k *SMTPSink) DropAfterData(n int) {
	k.mu.Lock()
	k.dropNext = n
	k.mu.Unlock()
}

// Refuse makes the sink answer 451 to every message while on.
func (k *SMTPSink) Refuse(on bool) {
	k.mu.Lock()
	k.refuse = on
	k.mu.Unlock()
}

// NewSession implements smtp.Backend.
func (k *SMTPSink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &sinkSession{k: k, c: c}, nil
}

type sinkSession struct {
	k    *SMTPSink
	c    *smtp.Conn
	user string
	from string
	to   []string
}

var errSinkAuth = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "sink: authentication required"}

func (s *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.k.opts.Username || pass != s.k.opts.Password {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.k.opts.Username != "" && s.user == "" {
		return errSinkAuth
	}
	s.from = from
	return nil
}

func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if r := s.k.opts.RefuseRcpt; r != nil && r(to) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "sink: no such mailbox"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	k := s.k
	time.Sleep(k.opts.Delay)
	k.mu.Lock()
	if k.dropNext > 0 {
		k.dropNext--
		k.mu.Unlock()
		s.c.Conn().Close()
		return errors.New("sink: dropped")
	}
	if k.refuse {
		k.mu.Unlock()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "sink: try again later"}
	}
	_, isTLS := s.c.TLSConnectionState()
	k.msgs = append(k.msgs, SinkMessage{From: s.from, To: append([]string(nil), s.to...), Data: b, TLS: isTLS, User: s.user})
	k.mu.Unlock()
	select {
	case k.arrived <- struct{}{}:
	default:
	}
	return nil
}

func (s *sinkSession) Reset()        { s.from, s.to = "", nil }
func (s *sinkSession) Logout() error { return nil }
