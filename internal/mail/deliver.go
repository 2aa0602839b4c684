package mail

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"

	// The client side is the standard library's: go-smtp's client cannot
	// say moat's own name in EHLO before STARTTLS, and receiving servers
	// judge a sender by it.
	"net/smtp"
	"net/textproto"

	"moat/internal/maildns"
)

// Transport hands a message on to the next server.
type Transport interface {
	// Send offers data from from to each of to, and says for each
	// recipient whether it was taken (a nil error), refused for good
	// (Permanent) or is to be tried again.
	Send(ctx context.Context, from string, to []string, data []byte) []Result
	// String names where mail goes, for people.
	String() string
}

// Result is what became of one recipient.
type Result struct {
	Err       error
	Permanent bool
}

// temporary marks every recipient for a retry with err.
func temporary(to []string, err error) []Result {
	out := make([]Result, len(to))
	for i := range out {
		out[i] = Result{Err: err}
	}
	return out
}

// permanent reports whether an SMTP error is a refusal for good (5xx).
func permanent(err error) bool {
	var te *textproto.Error
	return errors.As(err, &te) && te.Code >= 500 && te.Code < 600
}

// Smarthost delivers everything through a provider's submission server,
// over TLS only: STARTTLS on 587 (a server that does not offer it gets no
// mail and no password), implicit TLS on 465.
type Smarthost struct {
	Addr     string // host:port
	Username string
	Password string
	// TLS checks the provider's certificate; the system's roots and the
	// host's name when nil.
	TLS *tls.Config
	// Hostname is said in EHLO.
	Hostname string
	// Resolver is the DNS server the host name is looked up with
	// ("host:port"); the system's resolver when empty.
	Resolver string
	// Dial connects; a net.Dialer when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (h Smarthost) String() string { return "smarthost " + h.Addr }

// Send implements Transport.
func (h Smarthost) Send(ctx context.Context, from string, to []string, data []byte) []Result {
	host, port, _ := net.SplitHostPort(h.Addr)
	cfg := h.TLS
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.MinVersion = tls.VersionTLS12
	addr := h.Addr
	if h.Resolver != "" {
		ips, err := maildns.LookupAddrs(ctx, h.Resolver, host)
		if err != nil || len(ips) == 0 {
			return temporary(to, fmt.Errorf("smarthost %s: no address: %v", h.Addr, err))
		}
		addr = net.JoinHostPort(ips[0].String(), port)
	}
	conn, err := dial(ctx, h.Dial, addr)
	if err != nil {
		return temporary(to, fmt.Errorf("smarthost %s: %w", h.Addr, err))
	}
	defer conn.Close()
	if port == "465" {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return temporary(to, fmt.Errorf("smarthost %s: TLS: %w", h.Addr, err))
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return temporary(to, fmt.Errorf("smarthost %s: %w", h.Addr, err))
	}
	defer c.Close()
	if err := c.Hello(h.Hostname); err != nil {
		return temporary(to, fmt.Errorf("smarthost %s: EHLO: %w", h.Addr, err))
	}
	if _, isTLS := c.TLSConnectionState(); !isTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return temporary(to, fmt.Errorf("smarthost %s does not offer STARTTLS: moat sends neither mail nor password in the clear", h.Addr))
		}
		if err := c.StartTLS(cfg); err != nil {
			return temporary(to, fmt.Errorf("smarthost %s: STARTTLS: %w", h.Addr, err))
		}
	}
	if h.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", h.Username, h.Password, host)); err != nil {
			// A refused login is the owner's to fix; the mail waits.
			return temporary(to, fmt.Errorf("smarthost %s refused the login of %s: %w", h.Addr, h.Username, err))
		}
	}
	return transact(c, h.Addr, from, to, data)
}

// transact runs MAIL, RCPT and DATA on a ready client.
func transact(c *smtp.Client, where, from string, to []string, data []byte) []Result {
	if err := c.Mail(from); err != nil {
		out := temporary(to, fmt.Errorf("%s: MAIL FROM: %w", where, err))
		for i := range out {
			out[i].Permanent = permanent(err)
		}
		return out
	}
	out := make([]Result, len(to))
	var taken []int
	for i, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			out[i] = Result{Err: fmt.Errorf("%s: RCPT TO <%s>: %w", where, rcpt, err), Permanent: permanent(err)}
			continue
		}
		taken = append(taken, i)
	}
	if len(taken) == 0 {
		return out
	}
	fail := func(err error) []Result {
		for _, i := range taken {
			out[i] = Result{Err: fmt.Errorf("%s: DATA: %w", where, err), Permanent: permanent(err)}
		}
		return out
	}
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	if _, err := w.Write(data); err != nil {
		return fail(err)
	}
	if err := w.Close(); err != nil {
		return fail(err)
	}
	c.Quit()
	return out
}

func dial(ctx context.Context, d func(context.Context, string, string) (net.Conn, error), addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if d == nil {
		d = (&net.Dialer{}).DialContext
	}
	c, err := d(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	return c, nil
}

// DeliveryOptions wire the delivery.
type DeliveryOptions struct {
	Spool   Spool
	Log     *slog.Logger
	Metrics *Metrics
	// Workers is how many messages are sent at once; 4 when zero.
	Workers int
	// Record writes an event (a bounce) to the activity log.
	Record func(ctx context.Context, action, target, detail string)
	// Now is time.Now when nil.
	Now func() time.Time
	// Poll is how often the queue is looked at without a kick; 1s when
	// zero.
	Poll time.Duration
}

// Delivery sends what the queue holds, retries what could not be sent and
// bounces what cannot be.
type Delivery struct {
	opts DeliveryOptions
	kick chan struct{}

	mu        sync.Mutex
	transport Transport
	domain    string
	inflight  map[string]bool
}

// NewDelivery makes a delivery; Run runs it.
func NewDelivery(o DeliveryOptions) *Delivery {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.Poll == 0 {
		o.Poll = time.Second
	}
	return &Delivery{opts: o, kick: make(chan struct{}, 1), inflight: map[string]bool{}}
}

// Configure sets where mail goes (nil holds it in the queue) and the mail
// domain that bounces come from.
func (d *Delivery) Configure(t Transport, domain string) {
	d.mu.Lock()
	d.transport, d.domain = t, domain
	d.mu.Unlock()
	d.Kick()
}

// Kick makes delivery look at the queue now.
func (d *Delivery) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Submit queues a message of moat's own (an alert) and wakes delivery.
func (d *Delivery) Submit(ctx context.Context, m Message) error {
	if err := d.opts.Spool.Enqueue(ctx, m); err != nil {
		return err
	}
	d.Kick()
	return nil
}

// Run delivers until ctx ends. It first puts back in the queue the
// messages a crash left in the middle of a delivery: the server on the
// other side may have taken them, so they may arrive twice, and the log
// says which.
func (d *Delivery) Run(ctx context.Context) {
	d.recover(ctx)
	jobs := make(chan Message)
	var wg sync.WaitGroup
	for range d.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				d.attempt(ctx, m)
				d.mu.Lock()
				delete(d.inflight, m.ID)
				d.mu.Unlock()
				// A worker is free: a backlog longer than one batch
				// is taken on now, not at the next poll.
				d.Kick()
			}
		}()
	}
	defer wg.Wait()
	defer close(jobs)
	t := time.NewTicker(d.opts.Poll)
	defer t.Stop()
	lastForget := time.Time{}
	for {
		now := d.opts.Now()
		if now.Sub(lastForget) > time.Hour {
			if err := d.opts.Spool.Forget(ctx, now.Add(-KeepFinal)); err != nil {
				d.opts.Log.Warn("mail queue", "err", err)
			}
			lastForget = now
		}
		d.mu.Lock()
		ready := d.transport != nil
		d.mu.Unlock()
		if ready {
			due, err := d.opts.Spool.Due(ctx, now, 4*d.opts.Workers)
			if err != nil && ctx.Err() == nil {
				d.opts.Log.Warn("mail queue", "err", err)
			}
			for _, m := range due {
				d.mu.Lock()
				busy := d.inflight[m.ID]
				d.inflight[m.ID] = true
				d.mu.Unlock()
				if busy {
					continue
				}
				select {
				case jobs <- m:
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
	}
}

func (d *Delivery) recover(ctx context.Context) {
	msgs, err := d.opts.Spool.List(ctx)
	if err != nil {
		d.opts.Log.Error("mail queue: reading it at start", "err", err)
		return
	}
	for _, m := range msgs {
		if m.State != Sending {
			continue
		}
		d.opts.Log.Warn("mail queue: moat stopped while this message was being delivered; it is sent again and may arrive twice", "id", m.ID, "message_id", m.MessageID, "to", strings.Join(m.Pending(), ", "))
		m.State = Queued
		if err := d.opts.Spool.Save(ctx, m); err != nil {
			d.opts.Log.Error("mail queue", "id", m.ID, "err", err)
		}
	}
}

// attempt delivers one message once.
func (d *Delivery) attempt(ctx context.Context, m Message) {
	m, err := d.opts.Spool.Load(ctx, m.ID)
	if err != nil || m.State != Queued {
		return // dropped, or changed, meanwhile
	}
	d.mu.Lock()
	t, domain := d.transport, d.domain
	d.mu.Unlock()
	if t == nil {
		return
	}
	if len(m.Data) == 0 {
		// Only a final message has no text; sending this one would send
		// an empty message in its name.
		// It is bounced, so that the sender and the activity log know.
		d.opts.Log.Error("mail queue: a waiting message has lost its text; it is bounced, not sent", "id", m.ID, "message_id", m.MessageID)
		var failed []Recipient
		for j := range m.To {
			if !m.To[j].Done {
				m.To[j].Done, m.To[j].Error = true, "moat's queue lost the message's text; it was not sent"
				failed = append(failed, m.To[j])
			}
		}
		m.State, m.LastError = Bounced, ""
		if err := d.opts.Spool.Save(ctx, m); err != nil {
			d.opts.Log.Error("mail queue", "id", m.ID, "err", err)
			return
		}
		d.bounce(ctx, m, failed, domain, d.opts.Now())
		return
	}
	// Marked before the attempt, so that a crash during it is known.
	m.State = Sending
	m.Attempts++
	if err := d.opts.Spool.Save(ctx, m); err != nil {
		if !errors.Is(err, ErrNotFound) { // not dropped meanwhile
			d.opts.Log.Error("mail queue", "id", m.ID, "err", err)
		}
		return
	}
	pending := m.Pending()
	results := t.Send(ctx, m.From, pending, m.Data)
	now := d.opts.Now()
	giveUp := now.Sub(m.Accepted) >= GiveUp
	var delivered, retry int
	var failed []Recipient
	var lastErr []string
	for i, addr := range pending {
		r := results[i]
		for j := range m.To {
			if m.To[j].Addr != addr || m.To[j].Done {
				continue
			}
			switch {
			case r.Err == nil:
				m.To[j].Done = true
				delivered++
			case r.Permanent || giveUp:
				msg := r.Err.Error()
				if !r.Permanent {
					msg = "gave up after 5 days in the queue: " + msg
				}
				m.To[j].Done, m.To[j].Error = true, msg
				failed = append(failed, m.To[j])
			default:
				retry++
				lastErr = append(lastErr, r.Err.Error())
			}
			break
		}
	}
	switch {
	case retry > 0:
		m.State = Queued
		m.NextAttempt = now.Add(Backoff(m.Attempts))
		m.LastError = strings.Join(dedupe(lastErr), "; ")
	case len(m.Failed()) > 0:
		m.State = Bounced
		m.LastError = ""
	default:
		m.State = Delivered
		m.LastError = ""
	}
	if ctx.Err() != nil && delivered == 0 {
		// moat is stopping: the attempt was cut short, not refused.
		m.State, m.Attempts = Queued, m.Attempts-1
	}
	// The mark that it was delivered, before anything else.
	if err := d.opts.Spool.Save(context.WithoutCancel(ctx), m); err != nil && !errors.Is(err, ErrNotFound) {
		d.opts.Log.Error("mail queue: a delivery could not be marked; it may be sent again", "id", m.ID, "err", err)
	}
	d.opts.Metrics.outcome(delivered, retry, len(failed))
	if retry > 0 {
		d.opts.Log.Info("mail deferred", "id", m.ID, "via", t.String(), "retry_at", m.NextAttempt.UTC().Format(time.RFC3339), "err", m.LastError)
	}
	if len(failed) > 0 {
		d.bounce(context.WithoutCancel(ctx), m, failed, domain, now)
	}
}

func dedupe(v []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range v {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// bounce tells the activity log, and the sender, which recipients will
// never get the message. A bounce itself (no sender) is not bounced.
func (d *Delivery) bounce(ctx context.Context, m Message, failed []Recipient, domain string, now time.Time) {
	var lines []string
	for _, r := range failed {
		lines = append(lines, fmt.Sprintf("<%s>: %s", r.Addr, r.Error))
	}
	detail := fmt.Sprintf("message %s %s from %s not delivered to %s", m.ID, m.MessageID, orNull(m.From), strings.Join(lines, "; "))
	d.opts.Log.Warn("mail bounced", "id", m.ID, "app", m.App, "detail", detail)
	if d.opts.Record != nil {
		d.opts.Record(ctx, "mail.bounce", m.App, detail)
	}
	if m.From == "" || domain == "" {
		return
	}
	body := fmt.Sprintf("moat could not deliver your message %s to these recipients:\r\n\r\n%s\r\n\r\nmoat will not try again.\r\n", m.MessageID, strings.Join(lines, "\r\n"))
	data := Compose("MAILER-DAEMON@"+domain, []string{m.From}, "Undelivered mail: "+m.MessageID, body, now, domain)
	b := Message{ID: NewID(), App: m.App, From: "", To: []Recipient{{Addr: m.From}}, Size: int64(len(data)), Accepted: now.UTC(), State: Queued, NextAttempt: now.UTC(), Data: data, MessageID: HeaderID(data)}
	if err := d.Submit(ctx, b); err != nil {
		d.opts.Log.Error("mail: the bounce was not queued", "id", m.ID, "err", err)
	}
}

func orNull(from string) string {
	if from == "" {
		return "<>"
	}
	return "<" + from + ">"
}

// Compose writes a plain-text message of moat's own. The subject is made
// safe for a header (line breaks and control characters become spaces,
// other scripts are MIME-encoded), so that an alert about a name an
// attacker chose cannot add headers.
func Compose(from string, to []string, subject, body string, now time.Time, domain string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: %s\r\n", HeaderText(subject))
	fmt.Fprintf(&b, "Date: %s\r\n", now.UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.%s@%s>\r\n", now.UTC().Format("20060102150405"), NewID(), domain)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\nAuto-Submitted: auto-generated\r\n\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")))
	qp.Close()
	b.WriteString("\r\n")
	return b.Bytes()
}

// HeaderText makes v safe as one header's text.
func HeaderText(v string) string {
	v = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, v)
	v = truncate(strings.Join(strings.Fields(v), " "), 200)
	for _, r := range v {
		if r >= 0x80 {
			return mime.QEncoding.Encode("utf-8", v)
		}
	}
	return v
}

// HeaderID reads the Message-ID of a message Compose wrote.
func HeaderID(data []byte) string {
	for _, line := range strings.Split(string(data), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Message-ID: "); ok {
			return v
		}
		if line == "" {
			break
		}
	}
	return ""
}
