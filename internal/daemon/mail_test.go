package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/smtp"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/guard"
	"moat/internal/mail"
	"moat/internal/maildns"
	"moat/internal/store"
	"moat/internal/testenv"
)

var loopbackAddr = netip.MustParseAddr("127.0.0.1")

// needSwaks fails loudly where swaks, the real SMTP client of these
// tests, is missing.
func needSwaks(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Fatal("MISSING: swaks (Debian package swaks) is needed for the mail relay tests; make test installs it")
	}
}

// swaks runs the swaks SMTP client and returns what it printed.
func swaks(args ...string) (string, error) {
	out, err := exec.Command("swaks", append([]string{"--timeout", "20"}, args...)...).CombinedOutput()
	return string(out), err
}

// mailEnv is a daemon whose relay hands its mail to a sink that plays a
// provider: STARTTLS and AUTH required.
type mailEnv struct {
	*env
	sink *testenv.SMTPSink
}

const sinkHost = "smtp.sink.test"

func startMailEnv(t *testing.T, opts ...envOption) *mailEnv {
	t.Helper()
	needSwaks(t)
	sink := testenv.StartSMTPSink(t, testenv.SinkOptions{Username: "relay-user", Password: "relay-pass", Names: []string{sinkHost},
		RefuseRcpt: func(a string) bool { return strings.HasPrefix(a, "nobody@") }})
	e := startEnv(t, opts...)
	e.dns.Set(sinkHost, loopbackAddr)
	_, port, _ := net.SplitHostPort(sink.Addr)
	var p int
	fmt.Sscan(port, &p)
	e.change(func(s *config.State) {
		s.Mail.Smarthost = config.Smarthost{Host: sinkHost, Port: p, Username: "relay-user", Password: "relay-pass", CARoots: sink.CAFile}
	})
	return &mailEnv{env: e, sink: sink}
}

// appMail is what the sink got from the apps (and their bounces), not
// moat's own alerts.
func (e *mailEnv) appMail() []testenv.SinkMessage {
	var out []testenv.SinkMessage
	for _, m := range e.sink.Messages() {
		if m.From != "moat@moat.test" {
			out = append(out, m)
		}
	}
	return out
}

// alertMail is what the sink got from moat itself.
func (e *mailEnv) alertMail() []testenv.SinkMessage {
	var out []testenv.SinkMessage
	for _, m := range e.sink.Messages() {
		if m.From == "moat@moat.test" {
			out = append(out, m)
		}
	}
	return out
}

// waitAppMail waits until the sink holds n messages of the apps.
func (e *mailEnv) waitAppMail(n int, d time.Duration) []testenv.SinkMessage {
	deadline := time.Now().Add(d)
	for {
		got := e.appMail()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		e.sink.Wait(len(e.sink.Messages())+1, 100*time.Millisecond)
	}
}

func (e *env) relayAddr() string { return fmt.Sprintf("127.0.0.1:%d", e.mailPort) }

// credentials makes an app's SMTP password.
func (e *env) credentials(app string) string {
	e.t.Helper()
	var res api.CredentialsResponse
	if err := e.client.Do(context.Background(), "POST", "/v1/mail/credentials", api.CredentialsRequest{App: app}, &res); err != nil {
		e.t.Fatal(err)
	}
	return res.Password
}

func (e *env) mailQueue() []mail.Message {
	e.t.Helper()
	var q []mail.Message
	if err := e.client.Do(context.Background(), "GET", "/v1/mail/queue", nil, &q); err != nil {
		e.t.Fatal(err)
	}
	return q
}

// send runs swaks as app against the relay, over STARTTLS.
func (e *env) send(app, pass, from, to string, extra ...string) (string, error) {
	_, port, _ := net.SplitHostPort(e.relayAddr())
	args := []string{"--server", "127.0.0.1", "--port", port, "--tls", "--auth", "PLAIN", "--auth-user", app, "--auth-password", pass,
		"--from", from, "--to", to, "--header", "Subject: hello from " + app}
	return swaks(append(args, extra...)...)
}

// TestMailRelay: a real client (swaks) sends through moat's relay; what
// the sender rule, the credentials, the quota and the limits allow
// arrives at a real SMTP server playing the smarthost, over STARTTLS
// with AUTH, and what they refuse gets its reply code.
func TestMailRelay(t *testing.T) {
	t.Parallel()
	e := startMailEnv(t)
	e.dns.Set(e.host("git"), loopbackAddr)
	e.dns.Set(e.host("wiki"), loopbackAddr)
	e.addApp("gitea", e.host("git"))
	e.addApp("wiki", e.host("wiki"))
	gitea, wiki := e.credentials("gitea"), e.credentials("wiki")
	var conflict api.Error
	if err := e.client.Do(context.Background(), "POST", "/v1/mail/credentials", api.CredentialsRequest{App: "gitea"}, &conflict); err == nil || !strings.Contains(err.Error(), "--rotate") {
		t.Errorf("second credentials without --rotate: %v; want a refusal that names --rotate", err)
	}

	t.Run("permitted sender arrives", func(t *testing.T) {
		out, err := e.send("gitea", gitea, "gitea@moat.test", "bob@example.org", "--body", "the body")
		if err != nil || !strings.Contains(out, "250 2.0.0 Queued as") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		got := e.waitAppMail(1, 20*time.Second)
		if len(got) != 1 {
			t.Fatalf("the sink got %d messages, want 1", len(got))
		}
		m := got[0]
		if m.From != "gitea@moat.test" || len(m.To) != 1 || m.To[0] != "bob@example.org" || !m.TLS || m.User != "relay-user" {
			t.Errorf("at the smarthost: from %q to %v, TLS %v, user %q", m.From, m.To, m.TLS, m.User)
		}
		if d := string(m.Data); !strings.Contains(d, "Subject: hello from gitea") || !strings.Contains(d, "the body") || !strings.Contains(d, "Message-Id:") && !strings.Contains(d, "Message-ID:") {
			t.Errorf("message at the smarthost:\n%s", d)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			run  func() (string, error)
			want []string
		}{
			{"another sender", func() (string, error) { return e.send("gitea", gitea, "ceo@moat.test", "bob@example.org") }, []string{"550 5.7.1", "<gitea@moat.test>"}},
			{"another app's sender", func() (string, error) { return e.send("gitea", gitea, "wiki@moat.test", "bob@example.org") }, []string{"550 5.7.1"}},
			{"another From header", func() (string, error) {
				return e.send("gitea", gitea, "gitea@moat.test", "bob@example.org", "--header", "From: Bank <ceo@bank.example>")
			}, []string{"550 5.7.1", "From header"}},
			{"wrong password", func() (string, error) { return e.send("gitea", wiki, "gitea@moat.test", "bob@example.org") }, []string{"535"}},
			{"unknown app", func() (string, error) { return e.send("nosuch", gitea, "nosuch@moat.test", "bob@example.org") }, []string{"535"}},
			{"no login", func() (string, error) {
				_, port, _ := net.SplitHostPort(e.relayAddr())
				return swaks("--server", "127.0.0.1", "--port", port, "--tls", "--from", "gitea@moat.test", "--to", "bob@example.org")
			}, []string{"530 5.7.0"}},
		} {
			out, err := tc.run()
			if err == nil {
				t.Errorf("%s: swaks succeeded:\n%s", tc.name, out)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s: swaks said, without %q:\n%s", tc.name, w, out)
				}
			}
		}
		if n := len(e.appMail()); n != 1 {
			t.Errorf("the sink holds %d messages after the refusals, want the 1 permitted", n)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		c := e.smtpClient(t, "gitea", gitea)
		defer c.Close()
		if err := c.Mail("gitea@moat.test"); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"bob@", "@example.org", "bob", "bob@localhost", "bob smith@example.org"} {
			if err := c.Rcpt(bad); err == nil || !strings.HasPrefix(err.Error(), "501") {
				t.Errorf("RCPT TO:<%s>: %v; want 501", bad, err)
			}
		}
		// Pipelining abuse: a bot sends its whole script at once. Nothing
		// of it is queued, and the relay hangs up after a few errors.
		conn, err := net.Dial("tcp", e.relayAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		auth := base64.StdEncoding.EncodeToString([]byte("\x00gitea\x00" + gitea))
		io.WriteString(conn, "EHLO bot\r\nAUTH PLAIN "+auth+"\r\nMAIL FROM:<ceo@moat.test>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nFrom: ceo@moat.test\r\nSubject: x\r\n\r\nbody\r\n.\r\nRSET\r\nRSET\r\n")
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		reply, _ := io.ReadAll(conn)
		for _, w := range []string{"235", "550 5.7.1", "Missing MAIL FROM", "Too many errors"} {
			if !strings.Contains(string(reply), w) {
				t.Errorf("pipelined script: no %q in the replies:\n%s", w, reply)
			}
		}
		if strings.Contains(string(reply), "Queued as") {
			t.Errorf("the pipelined script queued a message:\n%s", reply)
		}
	})

	t.Run("the 301st in an hour waits", func(t *testing.T) {
		// 299 more recipients: 100 messages to three each, less the first.
		c := e.smtpClient(t, "gitea", gitea)
		defer c.Close()
		for i := range 100 {
			to := []string{fmt.Sprintf("a%d@example.org", i), fmt.Sprintf("b%d@example.org", i), fmt.Sprintf("c%d@example.org", i)}
			if i == 99 {
				to = to[:2]
			}
			if err := sendOn(c, "gitea@moat.test", to, fmt.Sprintf("quota %d", i)); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		out, err := e.send("gitea", gitea, "gitea@moat.test", "last@example.org")
		if err == nil || !strings.Contains(out, "451 4.7.1") || !strings.Contains(out, "try again in") {
			t.Errorf("the 301st recipient in an hour: %v\n%s", err, out)
		}
		if out, err := e.send("wiki", wiki, "wiki@moat.test", "bob@example.org"); err != nil {
			t.Errorf("another app was held back too: %v\n%s", err, out)
		}
		got := e.waitAppMail(102, 60*time.Second)
		if len(got) != 102 {
			t.Fatalf("the sink got %d messages, want 102", len(got))
		}
		e.waitQueueEmpty(t)
	})

	t.Run("limits", func(t *testing.T) {
		e.change(func(s *config.State) { s.Mail.MaxSize = 20000; s.Mail.MaxRecipients = 2 })
		defer e.change(func(s *config.State) { s.Mail.MaxSize = 0; s.Mail.MaxRecipients = 0 })
		out, err := e.send("wiki", wiki, "wiki@moat.test", "bob@example.org", "--body", strings.Repeat("0123456789\n", 3000))
		if err == nil || !strings.Contains(out, "552 5.3.4") {
			t.Errorf("an oversized message: %v\n%s", err, out)
		}
		// The first two recipients are taken, the third refused.
		out, err = e.send("wiki", wiki, "wiki@moat.test", "a@example.org,b@example.org,c@example.org")
		if !strings.Contains(out, "452 4.5.3") {
			t.Errorf("a third recipient: %v\n%s", err, out)
		}
		e.waitQueueEmpty(t)
	})

	t.Run("a smarthost that drops the connection", func(t *testing.T) {
		before := len(e.appMail())
		e.sink.DropAfterData(1)
		if out, err := e.send("wiki", wiki, "wiki@moat.test", "carol@example.org", "--body", "dropped once"); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		waiting := e.waitDeferred(t)
		if out := e.moat("mail", "queue"); !strings.Contains(out, waiting.ID) || !strings.Contains(out, "carol@example.org") {
			t.Errorf("moat mail queue:\n%s", out)
		}
		e.moat("mail", "retry", "--all")
		got := e.waitAppMail(before+1, 20*time.Second)
		if len(got) != before+1 || !strings.Contains(string(got[before].Data), "dropped once") {
			t.Fatalf("after the retry the sink got %d new messages, want the one", len(got)-before)
		}
	})

	t.Run("a refused recipient bounces", func(t *testing.T) {
		before := len(e.appMail())
		if out, err := e.send("wiki", wiki, "wiki@moat.test", "nobody@example.org,dave@example.org"); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		got := e.waitAppMail(before+2, 20*time.Second)
		if len(got) != before+2 {
			t.Fatalf("the sink got %d new messages, want the message to dave and the bounce", len(got)-before)
		}
		var bounce *testenv.SinkMessage
		for i := range got[before:] {
			if m := &got[before+i]; m.From == "" {
				bounce = m
			}
		}
		if bounce == nil || bounce.To[0] != "wiki@moat.test" || !strings.Contains(string(bounce.Data), "nobody@example.org") {
			t.Fatalf("no bounce to wiki@moat.test naming nobody@example.org: %+v", got[before:])
		}
		var log []store.Entry
		if err := e.client.Do(context.Background(), "GET", "/v1/activity?target=wiki", nil, &log); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, en := range log {
			found = found || en.Action == "mail.bounce" && strings.Contains(en.Detail, "nobody@example.org") && strings.Contains(en.Detail, "550")
		}
		if !found {
			t.Errorf("no mail.bounce in the activity log of wiki: %+v", log)
		}
	})

	t.Run("notify test", func(t *testing.T) {
		n := len(e.sink.Messages())
		if out := e.moat("notify", "test"); !strings.Contains(out, "queued for admin@moat.test") {
			t.Errorf("moat notify test:\n%s", out)
		}
		got := e.sink.Wait(n+1, 20*time.Second)
		if len(got) != n+1 || got[n].From != "moat@moat.test" || !strings.Contains(string(got[n].Data), "This is a test alert") {
			t.Fatalf("no test alert at the sink: %d messages", len(got)-n)
		}
	})

	t.Run("metrics and activity", func(t *testing.T) {
		e.waitQueueEmpty(t) // the test alert may be at the sink, not yet marked
		resp, err := http.Get("http://" + e.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range []string{`moat_mail_accepted_total{app="gitea"} 101`, `moat_mail_rejected_total{reason="sender"} 4`, `moat_mail_rejected_total{reason="auth"} 2`,
			`moat_mail_rejected_total{reason="quota"} 1`, `moat_mail_rejected_total{reason="size"} 1`, "moat_mail_delivered_total", "moat_mail_bounced_total 1", "moat_mail_deferred_total 1", "moat_mail_queued 0", "moat_mail_queue_oldest_age_seconds"} {
			if !strings.Contains(string(b), w) {
				t.Errorf("metrics lack %q:\n%s", w, grepLines(string(b), "moat_mail"))
			}
		}
		var log []store.Entry
		if err := e.client.Do(context.Background(), "GET", "/v1/activity?target=gitea", nil, &log); err != nil {
			t.Fatal(err)
		}
		if len(log) == 0 || !contains(actionsOf(log), "mail.credentials") {
			t.Errorf("no mail.credentials in the activity log: %+v", log)
		}
		for _, en := range log {
			if strings.Contains(en.Detail, gitea) {
				t.Errorf("the activity log holds the password: %+v", en)
			}
		}
	})

	// After the metrics, whose counts these would change.
	t.Run("a waiting message is dropped only when confirmed", func(t *testing.T) {
		before := len(e.appMail())
		e.sink.Refuse(true)
		out, err := e.send("wiki", wiki, "wiki@moat.test", "erin@example.org", "--body", "to be dropped")
		if err != nil {
			e.sink.Refuse(false)
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		waiting := e.waitDeferred(t)
		e.sink.Refuse(false)

		err = e.client.Do(context.Background(), "DELETE", "/v1/mail/queue/"+waiting.ID, nil, nil)
		var refusal *api.APIError
		if !errors.As(err, &refusal) || refusal.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "confirm=true") || !strings.Contains(err.Error(), "--yes") {
			t.Errorf("DELETE /v1/mail/queue/%s without confirm=true: %v; want 400 naming confirm=true and --yes", waiting.ID, err)
		}
		// No at the prompt, and no answer at all (a script without --yes).
		for _, answer := range []string{"n\n", ""} {
			out, err := e.moatIn(answer, "mail", "drop", waiting.ID)
			if err == nil || !strings.Contains(out, "Drop message "+waiting.ID+"? It will never be delivered. [y/N]") || !strings.Contains(out, "not dropped") {
				t.Errorf("moat mail drop answered %q: %v\n%s", answer, err, out)
			}
		}
		if q := e.mailQueue(); len(q) != 1 || q[0].ID != waiting.ID {
			t.Fatalf("after the refused drops the queue holds %+v; want the message still waiting", q)
		}

		if out, err := e.moatIn("y\n", "mail", "drop", waiting.ID); err != nil || !strings.Contains(out, "Dropped "+waiting.ID) || !strings.Contains(out, "erin@example.org") {
			t.Fatalf("moat mail drop answered y: %v\n%s", err, out)
		}
		if out := e.moat("mail", "queue"); !strings.Contains(out, "The queue is empty.") {
			t.Errorf("moat mail queue after the drop:\n%s", out)
		}
		err = e.client.Do(context.Background(), "DELETE", "/v1/mail/queue/"+waiting.ID+"?confirm=true", nil, nil)
		if !errors.As(err, &refusal) || refusal.Status != http.StatusNotFound || !strings.Contains(err.Error(), "moat mail queue") {
			t.Errorf("dropping it again: %v; want 404 naming moat mail queue", err)
		}

		// Never delivered: the queue tried again, and a later message
		// arrives alone.
		e.moat("mail", "retry", "--all")
		if out, err := e.send("wiki", wiki, "wiki@moat.test", "frank@example.org", "--body", "after the drop"); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		e.waitAppMail(before+1, 20*time.Second)
		time.Sleep(200 * time.Millisecond) // time for another message, were there one
		got := e.appMail()
		if len(got) != before+1 || !strings.Contains(string(got[before].Data), "after the drop") {
			t.Errorf("after the drop the sink got %d new messages, want only the later one", len(got)-before)
		}
		for _, m := range got[before:] {
			if strings.Contains(string(m.Data), "to be dropped") {
				t.Errorf("the dropped message was delivered to %v", m.To)
			}
		}

		var log []store.Entry
		if err := e.client.Do(context.Background(), "GET", "/v1/activity?target=wiki", nil, &log); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, en := range log {
			found = found || en.Action == "mail.drop" && strings.Contains(en.Detail, waiting.ID) && strings.Contains(en.Detail, "erin@example.org")
		}
		if !found {
			t.Errorf("no mail.drop of %s in the activity log of wiki: %+v", waiting.ID, log)
		}
	})

	t.Run("rotated credentials", func(t *testing.T) {
		out := e.moat("mail", "credentials", "wiki", "--rotate")
		m := regexp.MustCompile(`(?m)^  password: (\S+)$`).FindStringSubmatch(out)
		if m == nil || m[1] == wiki || !strings.Contains(out, "shown once") {
			t.Fatalf("moat mail credentials wiki --rotate printed no new password:\n%s", out)
		}
		rotated := m[1]
		if out, err := e.send("wiki", rotated, "wiki@moat.test", "grace@example.org"); err != nil || !strings.Contains(out, "250 2.0.0 Queued as") {
			t.Errorf("the new password: %v\n%s", err, out)
		}
		if out, err := e.send("wiki", wiki, "wiki@moat.test", "grace@example.org"); err == nil || !strings.Contains(out, "535") {
			t.Errorf("the old password after the rotation: %v\n%s", err, out)
		}
		// Shown once: asked again without --rotate, it is refused and
		// prints no password.
		if out, err := e.moatIn("", "mail", "credentials", "wiki"); err == nil || !strings.Contains(out, "--rotate") || strings.Contains(out, "password:") {
			t.Errorf("moat mail credentials wiki a second time: %v\n%s", err, out)
		}
		var log []store.Entry
		if err := e.client.Do(context.Background(), "GET", "/v1/activity?target=wiki", nil, &log); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, en := range log {
			found = found || en.Action == "mail.credentials" && strings.Contains(en.Detail, "rotated")
			if strings.Contains(en.Detail, rotated) {
				t.Errorf("the activity log holds the new password: %+v", en)
			}
		}
		if !found {
			t.Errorf("no rotation in the activity log of wiki: %+v", log)
		}
	})
}

// waitDeferred waits until the queue holds one message, tried and
// deferred with its reason, and returns it.
func (e *mailEnv) waitDeferred(t *testing.T) mail.Message {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if q := e.mailQueue(); len(q) == 1 && q[0].Attempts > 0 && q[0].State == mail.Queued {
			if m := q[0]; m.LastError == "" || !m.NextAttempt.After(time.Now().Add(30*time.Second)) {
				t.Fatalf("the queue holds %+v; want the message deferred a minute, with the reason", m)
			}
			return q[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("after 20s the queue holds %+v; want the one message, tried and deferred", e.mailQueue())
	return mail.Message{}
}

// moatIn runs the moat CLI with stdin and returns what it printed and
// how it ended, refusals included.
func (e *env) moatIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command(testenv.MoatBinary(e.t), append([]string{"--socket", e.socket, "--data-dir", e.dir}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitQueueEmpty waits until everything queued is delivered.
func (e *mailEnv) waitQueueEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(e.mailQueue()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the queue does not empty: %+v", e.mailQueue())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func actionsOf(log []store.Entry) []string {
	var out []string
	for _, e := range log {
		out = append(out, e.Action)
	}
	return out
}

// smtpClient logs in to the relay on loopback (no TLS needed there).
func (e *env) smtpClient(t *testing.T, app, pass string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(e.relayAddr())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", app, pass, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	return c
}

func sendOn(c *smtp.Client, from string, to []string, subject string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n", from, strings.Join(to, ", "), subject, subject)
	return w.Close()
}

// readReply reads one SMTP reply, all its lines.
func readReply(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if len(line) < 4 || line[3] != '-' {
			return b.String(), nil
		}
	}
}

// TestMailRelayFromTheNetwork: the relay serves the private side only.
// A client on a public address that reaches it anyway is refused before
// SMTP starts; a client on a private network must use STARTTLS before it
// may log in; and five failed logins ban it in the guard's mail jail.
func TestMailRelayFromTheNetwork(t *testing.T) {
	l := newGuardLab(t)
	l.other.Route(t, netip.MustParsePrefix(labHost+"/24"), netip.MustParseAddr(labHost2))
	e := startMailEnv(t, withMailListenIn(l.host))
	e.dns.Set(e.host("git"), loopbackAddr)
	e.addApp("gitea", e.host("git"))
	pass := e.credentials("gitea")
	e.change(func(s *config.State) { s.Mail.Listen = []string{labHost + ":587"} })
	send := func(ns *testenv.Netns, pass string) (string, error) {
		return ns.RunErr("swaks", "--timeout", "10", "--server", labHost, "--port", "587", "--tls", "--auth", "PLAIN", "--auth-user", "gitea", "--auth-password", pass,
			"--from", "gitea@moat.test", "--to", "bob@example.org")
	}

	out, err := send(l.other, pass)
	if err == nil || !strings.Contains(out, "554 5.7.1") || strings.Contains(out, "Queued as") {
		t.Errorf("a client on a public address (%s): %v\n%s", labOther, err, out)
	}

	// No login before TLS off loopback: the password would cross the
	// network in the clear.
	err = l.attacker.Do(func() error {
		c, err := net.DialTimeout("tcp", labHost+":587", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		readReply(r)
		io.WriteString(c, "EHLO client\r\n")
		ehlo, _ := readReply(r)
		io.WriteString(c, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00gitea\x00"+pass))+"\r\n")
		reply, _ := readReply(r)
		if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") || !strings.HasPrefix(reply, "523") {
			return fmt.Errorf("before STARTTLS: EHLO said\n%sand AUTH got %q; want STARTTLS offered, AUTH neither offered nor taken (523)", ehlo, reply)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	if out, err := send(l.attacker, pass); err != nil || !strings.Contains(out, "Queued as") {
		t.Errorf("a client on the private network with the app's credentials: %v\n%s", err, out)
	}
	for i := range 5 {
		if _, ok := e.banOf(labAttacker + "/32"); ok {
			t.Fatalf("banned after %d failed logins, want 5", i)
		}
		if out, err := send(l.attacker, "wrong-"+pass); err == nil || !strings.Contains(out, "535") {
			t.Fatalf("a wrong password: %v\n%s", err, out)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, ok := e.banOf(labAttacker + "/32")
		if ok {
			if b.Jail != config.JailMail {
				t.Errorf("ban %+v: want the mail jail", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("five failed logins to the relay did not ban the client")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectDeliveryDKIM: without a smarthost, moat mail setup makes the
// DKIM keys and says which records to publish; once they are in DNS,
// moat mail check finds them, and a message to a domain whose MX is a
// real SMTP server on loopback (found through the test's own DNS server)
// arrives there with Ed25519 and RSA signatures that go-msgauth's
// verifier accepts with the published keys.
func TestDirectDeliveryDKIM(t *testing.T) {
	t.Parallel()
	needSwaks(t)
	mxPort := testenv.FreePort(t)
	mx := testenv.StartSMTPSink(t, testenv.SinkOptions{Addr: fmt.Sprintf("127.0.0.1:%d", mxPort)})
	e := startEnv(t, withMXPort(mxPort))
	e.dns.SetMX("example.org", "mx.example.org")
	e.dns.Set("mx.example.org", loopbackAddr)
	e.dns.Set(e.host("git"), loopbackAddr)
	e.addApp("gitea", e.host("git"))
	pass := e.credentials("gitea")

	var setup api.SetupResponse
	if err := e.client.Do(context.Background(), "POST", "/v1/mail/setup", nil, &setup); err != nil {
		t.Fatal(err)
	}
	if !setup.Created || len(setup.Records) != 4 {
		t.Fatalf("setup: %+v; want new keys and 4 records (2 DKIM, SPF, DMARC)", setup)
	}
	var again api.SetupResponse
	if err := e.client.Do(context.Background(), "POST", "/v1/mail/setup", nil, &again); err != nil || again.Created || len(again.Records) != 4 || again.Records[0].Value != setup.Records[0].Value {
		t.Fatalf("a second setup: %+v, %v; want the same keys", again, err)
	}
	out := e.moat("mail", "setup")
	for _, r := range setup.Records {
		if !strings.Contains(out, r.Name+". IN TXT") {
			t.Errorf("moat mail setup does not print %s:\n%s", r.Name, out)
		}
	}
	for _, r := range setup.Records {
		e.dns.SetTXT(r.Name, r.Value)
	}
	if out := e.moat("mail", "check"); !strings.Contains(out, "Every record is published") {
		t.Errorf("moat mail check with every record published:\n%s", out)
	}
	e.dns.SetTXT("_dmarc.moat.test")
	var fs []maildns.Finding
	if err := e.client.Do(context.Background(), "GET", "/v1/mail/check", nil, &fs); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.OK == (f.Record.Name == "_dmarc.moat.test") || (!f.OK && (f.Problem == "" || !strings.Contains(f.Fix, "v=DMARC1"))) {
			t.Errorf("with DMARC missing: %+v", f)
		}
	}

	if out, err := e.send("gitea", pass, "gitea@moat.test", "bob@example.org", "--body", "signed"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	got := mx.Wait(1, 20*time.Second)
	if len(got) != 1 || got[0].From != "gitea@moat.test" || got[0].To[0] != "bob@example.org" {
		t.Fatalf("the MX got %+v", got)
	}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, e.dns.Addr())
	}}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(got[0].Data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return resolver.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d DKIM signatures, want 2 (Ed25519 and RSA):\n%s", len(vs), got[0].Data)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "moat.test" {
			t.Errorf("signature of %s: %v", v.Domain, v.Err)
		}
	}
}

// TestCertificateFailureEmail: with Pebble stopped, every issuance
// attempt fails; the owner gets exactly one email about it, with the
// domain and the reason, however often moat retries within the hour.
func TestCertificateFailureEmail(t *testing.T) {
	t.Parallel()
	e := startMailEnv(t)
	e.pebble.Stop()
	e.dns.Set(e.host("app"), loopbackAddr)
	e.addApp("app", e.host("app"))
	var log []store.Entry
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := e.client.Do(context.Background(), "GET", "/v1/activity?target="+e.host("app"), nil, &log); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, en := range log {
			if en.Action == "cert.issue-failed" {
				n++
			}
		}
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 failed issuances in 30s: %+v", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.sink.Wait(1, 10*time.Second)
	time.Sleep(2 * time.Second) // time for a second mail, were there one
	alerts := e.alertMail()
	if len(alerts) != 1 {
		t.Fatalf("%d alert emails, want exactly 1", len(alerts))
	}
	a := alerts[0]
	body := string(a.Data)
	if a.To[0] != "admin@moat.test" || !strings.Contains(body, "Subject: [moat moat.test] cert.issue-failed: "+e.host("app")) || !strings.Contains(body, "connect") {
		t.Errorf("alert email to %v:\n%s", a.To, body)
	}
}

// TestBanStormEmail: twenty bans within a minute are one email to the
// owner, saying how many and from which jails; the bans after them in
// the same minute add no second one.
func TestBanStormEmail(t *testing.T) {
	t.Parallel()
	e := startMailEnv(t)
	ctx := context.Background()
	for i := range 30 {
		var ban guard.Ban
		addr := fmt.Sprintf("198.51.100.%d", 10+i)
		if err := e.client.Do(ctx, "POST", "/v1/guard/bans", api.BanRequest{Address: addr, For: "1h", Reason: "scanner"}, &ban); err != nil {
			t.Fatalf("ban %s: %v", addr, err)
		}
	}
	e.sink.Wait(1, 10*time.Second)
	time.Sleep(2 * time.Second) // time for a second mail, were there one
	alerts := e.alertMail()
	if len(alerts) != 1 {
		t.Fatalf("%d alert emails, want exactly 1", len(alerts))
	}
	body := string(alerts[0].Data)
	if alerts[0].To[0] != "admin@moat.test" || !strings.Contains(body, "Subject: [moat moat.test] guard.storm: bans") ||
		!strings.Contains(body, "20 addresses were banned") || !strings.Contains(body, "moat guard list") {
		t.Errorf("storm email to %v:\n%s", alerts[0].To, body)
	}
}
