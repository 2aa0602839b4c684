package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/mail"
	"moat/internal/testenv"
)

const sinkHost = "smtp.sink.test"

// mailDaemon is what the mail tests of moat serve share: a sink playing
// the smarthost (reached by name through the test's resolver), a data dir
// whose store says so, and the relay's loopback address.
type mailDaemon struct {
	sink    *testenv.SMTPSink
	dataDir string
	socket  string
	relay   string
}

// newMailDaemon writes the store moat serve will start from: the app
// gitea, the relay on a free loopback port, mail handed to the sink.
// Nothing reaches the internet: the ACME directory is a closed loopback
// port and the resolver knows only the sink.
func newMailDaemon(t *testing.T, sinkOpts testenv.SinkOptions) *mailDaemon {
	t.Helper()
	sinkOpts.Username, sinkOpts.Password, sinkOpts.Names = "relay-user", "relay-pass", []string{sinkHost}
	sink := testenv.StartSMTPSink(t, sinkOpts)
	dns := testenv.StartDNS(t)
	dns.Set(sinkHost, netip.MustParseAddr("127.0.0.1"))
	_, port, _ := net.SplitHostPort(sink.Addr)
	var sinkPort int
	fmt.Sscan(port, &sinkPort)

	d := &mailDaemon{sink: sink, dataDir: t.TempDir(), socket: filepath.Join(t.TempDir(), "moat.sock"),
		relay: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
	seedStore(t, d.dataDir, func(s *config.State) {
		s.Server = config.Server{
			Domain: "moat.test", Email: "admin@moat.test",
			Listen:    config.Listen{HTTP: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), HTTPS: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Admin: "127.0.0.1:0"},
			ACME:      config.ACME{Directory: fmt.Sprintf("https://127.0.0.1:%d/directory", testenv.FreePort(t))},
			PublicIPs: []string{"127.0.0.1"},
			Resolver:  dns.Addr(),
		}
		s.Apps = []config.App{{Name: "gitea", Domains: []string{"git.moat.test"}, Upstream: "http://127.0.0.1:3000"}}
		s.Mail.Listen = []string{d.relay}
		s.Mail.Smarthost = config.Smarthost{Host: sinkHost, Port: sinkPort, Username: "relay-user", Password: "relay-pass", CARoots: sink.CAFile}
	})
	return d
}

// control dials the daemon's control socket.
func (d *mailDaemon) control(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.DialControl(context.Background(), d.socket)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// credentials makes gitea's SMTP password.
func (d *mailDaemon) credentials(t *testing.T) string {
	t.Helper()
	var res api.CredentialsResponse
	if err := d.control(t).Do(context.Background(), "POST", "/v1/mail/credentials", api.CredentialsRequest{App: "gitea"}, &res); err != nil {
		t.Fatal(err)
	}
	return res.Password
}

// waitRelay waits until the relay takes connections.
func (d *mailDaemon) waitRelay(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.relay, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay does not listen on %s: %v", d.relay, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queue is what the daemon has not delivered yet.
func (d *mailDaemon) queue(t *testing.T) []mail.Message {
	t.Helper()
	var q []mail.Message
	if err := d.control(t).Do(context.Background(), "GET", "/v1/mail/queue", nil, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

func (d *mailDaemon) waitQueueEmpty(t *testing.T, p *daemonProc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		q := d.queue(t)
		if len(q) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s %d messages are still queued, the first: %+v\n%s", len(q), q[0], p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendOne sends one message as gitea over its own connection and says
// whether the relay answered 250 to it.
func sendOne(relay, pass, msgID string, body []byte) error {
	c, err := smtp.Dial(relay)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(smtp.PlainAuth("", "gitea", pass, "127.0.0.1")); err != nil {
		return err
	}
	if err := c.Mail("gitea@moat.test"); err != nil {
		return err
	}
	if err := c.Rcpt("owner@example.org"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: gitea@moat.test\r\nTo: owner@example.org\r\nSubject: %s\r\nMessage-ID: <%s@moat.test>\r\n\r\n", msgID, msgID)
	w.Write(body)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// messageID is the local part of a message's Message-ID header.
func messageID(data []byte) string {
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(data))).ReadMIMEHeader()
	if err != nil {
		return ""
	}
	id, _, _ := strings.Cut(strings.Trim(hdr.Get("Message-Id"), "<>"), "@")
	return id
}

// arrived counts, by Message-ID, what the sink got from gitea (not
// moat's own alerts).
func arrived(sink *testenv.SMTPSink) (map[string]int, map[string][]byte) {
	count, data := map[string]int{}, map[string][]byte{}
	for _, m := range sink.Messages() {
		if m.From != "gitea@moat.test" {
			continue
		}
		id := messageID(m.Data)
		count[id]++
		data[id] = m.Data
	}
	return count, data
}

// isReply says whether err is the SMTP reply code with its enhanced code.
func isReply(err error, code int, enhanced string) bool {
	var te *textproto.Error
	return errors.As(err, &te) && te.Code == code && strings.HasPrefix(te.Msg, enhanced+" ")
}

var mayArriveTwice = regexp.MustCompile(`may arrive twice.*message_id="?<([^@"]+)@`)

// TestMailKill9 sends 200 messages over many connections at once through
// the relay of a real moat serve, kills it with SIGKILL while it both
// takes and delivers them (some at the smarthost, more answered 250 than
// arrived, some being sent), and starts it again: every message answered 250 reaches the smarthost, and exactly
// once, but for those the restarted daemon names in its log as caught in
// the middle of their delivery (the smarthost may have taken them before
// the kill: SMTP cannot know).
func TestMailKill9(t *testing.T) {
	bin := testenv.MoatBinary(t)
	// A slow smarthost, so that the queue fills faster than it drains and
	// the kill finds messages both delivered and waiting.
	d := newMailDaemon(t, testenv.SinkOptions{Delay: 20 * time.Millisecond})
	p := startDaemon(t, bin, d.dataDir, d.socket)
	d.waitRelay(t)
	pass := d.credentials(t)

	const n = 200
	var (
		acked   sync.Map // message ID → true, answered 250
		nAcked  atomic.Int32
		killed  atomic.Bool
		wg      sync.WaitGroup
		refused atomic.Value
	)
	// The clients start a few milliseconds apart, many connections at
	// once still, so that deliveries begin while the relay takes mail.
	const stagger = 5 * time.Millisecond
	start := make(chan struct{})
	for i := range n {
		id := fmt.Sprintf("crash-%03d", i)
		wg.Go(func() {
			<-start
			time.Sleep(time.Duration(i) * stagger)
			err := sendOne(d.relay, pass, id, fmt.Appendf(nil, "message %s\r\n", id))
			if err == nil {
				acked.Store(id, true)
				nAcked.Add(1)
				return
			}
			var te *textproto.Error
			if errors.As(err, &te) && !killed.Load() {
				refused.Store(fmt.Sprintf("%s: %v", id, err))
			}
		})
	}
	sent := make(chan struct{})
	go func() { wg.Wait(); close(sent) }()
	close(start)

	// The kill comes once half the messages are answered and the
	// smarthost holds a few: the daemon is then delivering some, has
	// others waiting and is still taking more.
	const first = 3
	deadline := time.Now().Add(30 * time.Second)
	for got, _ := arrived(d.sink); len(got) < first || nAcked.Load() < n/2; got, _ = arrived(d.sink) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s %d messages were answered 250 and %d had reached the smarthost\n%s", nAcked.Load(), len(got), p.out.String())
		}
		time.Sleep(time.Millisecond)
	}
	killed.Store(true)
	p.kill()
	before, _ := arrived(d.sink)
	atSink := len(before)
	<-sent
	ackedAtKill := int(nAcked.Load())
	if r := refused.Load(); r != nil {
		t.Fatalf("the relay refused a message before the kill: %v", r)
	}
	t.Logf("at the kill: %d messages answered 250, %d at the smarthost", ackedAtKill, atSink)
	if atSink == 0 || atSink >= ackedAtKill {
		t.Fatalf("at the kill %d messages were at the smarthost and %d answered 250; want some, and fewer than answered: the kill must come in the middle of the deliveries", atSink, ackedAtKill)
	}

	p = startDaemon(t, bin, d.dataDir, d.socket)
	d.waitQueueEmpty(t, p)
	twice := map[string]bool{}
	for _, m := range mayArriveTwice.FindAllStringSubmatch(p.out.String(), -1) {
		twice[m[1]] = true
	}
	if len(twice) == 0 {
		t.Errorf("the restarted daemon names no message caught in the middle of its delivery; the kill was meant to come during some\n%s", p.out.String())
	}
	count, _ := arrived(d.sink)
	missing, dup := 0, 0
	acked.Range(func(k, _ any) bool {
		id := k.(string)
		switch c := count[id]; {
		case c == 0:
			missing++
			t.Errorf("%s was answered 250 but never reached the smarthost", id)
		case c == 2 && twice[id]:
			dup++
		case c > 1:
			t.Errorf("%s reached the smarthost %d times; the log names it as maybe twice: %v", id, c, twice[id])
		}
		return true
	})
	for id, c := range count {
		if _, ok := acked.Load(id); !ok && c > 1 && !twice[id] {
			t.Errorf("%s (not answered before the kill) reached the smarthost %d times", id, c)
		}
		if !strings.HasPrefix(id, "crash-") {
			t.Errorf("the smarthost got a message the test did not send: %q", id)
		}
	}
	t.Logf("after the restart: %d distinct messages arrived, %d of them twice as the log said they might (%d named)", len(count), dup, len(twice))
}

// TestMailDiskFull runs moat serve on a data dir that is a 8 MiB tmpfs of
// its own (a private mount namespace, so nothing of the machine changes)
// with the smarthost refusing for a while: once the queue has filled the
// disk, the relay answers 452 and takes nothing half; space freed, it takes
// mail again; the smarthost back, exactly the messages answered 250
// arrive, each byte for byte.
func TestMailDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("SKIPPED: needs root, to mount a small tmpfs in a mount namespace of its own; running as uid %d", os.Geteuid())
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("SKIPPED: needs unshare (Debian package util-linux)")
	}
	bin := testenv.MoatBinary(t)
	d := newMailDaemon(t, testenv.SinkOptions{})
	d.sink.Refuse(true)
	// The store written above is copied onto the tmpfs mounted over it.
	seed := t.TempDir()
	if err := os.CopyFS(seed, os.DirFS(d.dataDir)); err != nil {
		t.Fatal(err)
	}
	wrap := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=8m,mode=0700 moat-test "$0" && cp -a "$MOAT_SEED"/. "$0" && exec "$@"`, d.dataDir}
	t.Setenv("MOAT_SEED", seed)
	p := startDaemonUnder(t, wrap, bin, d.dataDir, d.socket)
	d.waitRelay(t)
	pass := d.credentials(t)
	// The daemon's view of its data dir, through its own mount namespace.
	inside := filepath.Join("/proc", fmt.Sprint(p.cmd.Process.Pid), "root", d.dataDir)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(inside, &fs); err != nil || fs.Blocks*uint64(fs.Bsize) > 16<<20 {
		t.Fatalf("the daemon's data dir is not the small tmpfs: %v, %d bytes", err, fs.Blocks*uint64(fs.Bsize))
	}

	// Most of the disk taken by something else (the owner's files, say),
	// leaving room for a few messages.
	free := func() int64 { syscall.Statfs(inside, &fs); return int64(fs.Bavail) * int64(fs.Bsize) }
	filler := filepath.Join(inside, "filler")
	if err := os.WriteFile(filler, make([]byte, free()-3<<20), 0o600); err != nil {
		t.Fatal(err)
	}

	sums := map[string][32]byte{}
	send := func(id string) error {
		body := bytes.Repeat(fmt.Appendf(nil, "%s: a line of a large attachment, to fill the disk\r\n", id), 1800)
		err := sendOne(d.relay, pass, id, body)
		if err == nil {
			sums[id] = sha256.Sum256(body)
		}
		return err
	}
	var full error
	for i := 0; i < 100 && full == nil; i++ {
		switch err := send(fmt.Sprintf("full-%03d", i)); {
		case err == nil:
		case isReply(err, 452, "4.3.1"):
			full = err
		default:
			t.Fatalf("message %d: %v\n%s", i, err, p.out.String())
		}
	}
	if full == nil || len(sums) < 3 {
		t.Fatalf("%d messages of 100 KB were taken and the disk was never full (the last answer: %v)", len(sums), full)
	}
	t.Logf("%d messages taken with %d bytes free, then: %v", len(sums), free(), full)
	if err := send("full-again"); !isReply(err, 452, "4.3.1") {
		t.Errorf("another message on the full disk: %v, want 452", err)
	}

	// Space freed: mail is taken again, with no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := send("full-freed"); err != nil {
		t.Errorf("a message once the disk has room again: %v", err)
	}

	// The smarthost back: exactly what was answered 250 arrives, whole.
	d.sink.Refuse(false)
	if err := d.control(t).Do(context.Background(), "POST", "/v1/mail/queue/retry", api.RetryRequest{All: true}, nil); err != nil {
		t.Fatal(err)
	}
	d.waitQueueEmpty(t, p)
	count, data := arrived(d.sink)
	for id, sum := range sums {
		_, body, _ := bytes.Cut(data[id], []byte("\r\n\r\n"))
		switch {
		case count[id] != 1:
			t.Errorf("%s was answered 250 and reached the smarthost %d times", id, count[id])
		case sha256.Sum256(body) != sum:
			t.Errorf("%s did not arrive whole: %d bytes of body", id, len(body))
		}
	}
	for id := range count {
		if _, ok := sums[id]; !ok {
			t.Errorf("%q was refused with 452, yet it reached the smarthost (%d bytes)", id, len(data[id]))
		}
	}
}
