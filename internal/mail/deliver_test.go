package mail

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"moat/internal/testenv"
)

// wire keeps every byte the clients of a listener sent it, as they sent
// it: below TLS, so what it holds in the clear crossed the network in the
// clear.
type wire struct {
	net.Listener
	mu   sync.Mutex
	sent bytes.Buffer
}

func (w *wire) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, w: w}, nil
}

func (w *wire) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent.String()
}

type wireConn struct {
	net.Conn
	w *wire
}

func (c *wireConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.w.mu.Lock()
	c.w.sent.Write(b[:n])
	c.w.mu.Unlock()
	return n, err
}

// TestSmarthostTLS: mail and the provider's password go to a smarthost
// over TLS only, STARTTLS or implicit TLS on 465, and a smarthost that
// offers neither gets nothing and the message waits with the reason.
//
// The sink is a real go-smtp server on loopback with a certificate for
// localhost. Implicit TLS is chosen by the port in Smarthost.Addr, so the
// smarthost is named localhost:465 and its Dial connects to wherever the
// sink listens: the port decides as it does in production, and the test
// binds no privileged port.
func TestSmarthostTLS(t *testing.T) {
	const user, pass = "relay-user", "relay-pass-7c1f"
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	for _, tc := range []struct {
		name string
		port string
		// implicit serves TLS from the first byte; startTLS offers
		// STARTTLS. Neither: plain SMTP only.
		implicit, startTLS bool
		// problem is in the message's last error when it must wait; ""
		// when it is delivered.
		problem string
	}{
		{name: "STARTTLS on 587", port: "587", startTLS: true},
		{name: "no STARTTLS on 587", port: "587", problem: "does not offer STARTTLS"},
		{name: "no STARTTLS on 25", port: "25", problem: "does not offer STARTTLS"},
		{name: "implicit TLS on 465", port: "465", implicit: true},
		{name: "plain SMTP on 465", port: "465", problem: "TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			w := &wire{Listener: raw}
			var ln net.Listener = w
			// The sink makes its certificate when it starts, after the
			// listener it is given exists.
			var cert atomic.Pointer[tls.Config]
			if tc.implicit {
				ln = tls.NewListener(w, &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return cert.Load(), nil }})
			}
			sink := testenv.StartSMTPSink(t, testenv.SinkOptions{Username: user, Password: pass, Listener: ln, NoTLS: !tc.startTLS})
			cert.Store(sink.TLS)

			pem, err := os.ReadFile(sink.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(pem)
			var dialed atomic.Value
			h := Smarthost{
				Addr: net.JoinHostPort("localhost", tc.port), Username: user, Password: pass,
				TLS: &tls.Config{RootCAs: roots}, Hostname: "moat.test",
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dialed.Store(addr)
					return (&net.Dialer{}).DialContext(ctx, network, sink.Addr)
				},
			}
			dt := newDeliveryTest(t, h)
			id := dt.queue(t, "owner@example.org")
			dt.d.attempt(context.Background(), Message{ID: id})

			if got := dialed.Load(); got != h.Addr {
				t.Fatalf("dialed %v, want %s", got, h.Addr)
			}
			m := dt.load(t, id)
			got := sink.Messages()
			if tc.problem == "" {
				if m.State != Delivered || len(got) != 1 || !got[0].TLS || got[0].User != user {
					t.Fatalf("state %s (%q); the sink got %+v; want it delivered over TLS as %s", m.State, m.LastError, got, user)
				}
			} else {
				if m.State != Queued || m.Attempts != 1 || !strings.Contains(m.LastError, tc.problem) {
					t.Errorf("state %s after %d attempts, error %q; want it waiting, the error naming %q", m.State, m.Attempts, m.LastError, tc.problem)
				}
				if len(got) != 0 {
					t.Errorf("the sink got %d messages", len(got))
				}
				if sent := w.String(); strings.Contains(sent, "AUTH") || strings.Contains(sent, "MAIL FROM") {
					t.Errorf("moat went on without TLS; it sent:\n%s", sent)
				}
			}
			if sent := w.String(); strings.Contains(sent, pass) || strings.Contains(sent, plain) {
				t.Errorf("the password crossed the wire in the clear:\n%s", sent)
			}
		})
	}
}
