package mail

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"moat/internal/secret"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempts int
		want     time.Duration
	}{
		{0, time.Minute},
		{1, time.Minute},
		{2, 2 * time.Minute},
		{3, 4 * time.Minute},
		{6, 32 * time.Minute},
		{7, time.Hour},
		{50, time.Hour},
	} {
		if got := Backoff(tc.attempts); got != tc.want {
			t.Errorf("Backoff(%d) = %v, want %v", tc.attempts, got, tc.want)
		}
	}
}

func TestQuota(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	q := newQuota()
	// Three recipients held at once by sessions that have not finished:
	// a fourth is refused under a limit of 3, though nothing was sent.
	for range 3 {
		if _, ok := q.hold("gitea", 3, t0); !ok {
			t.Fatal("a hold under the limit was refused")
		}
	}
	if wait, ok := q.hold("gitea", 3, t0); ok || wait != time.Minute {
		t.Errorf("a fourth hold: ok=%v wait=%v, want refused for a minute", ok, wait)
	}
	if _, ok := q.hold("grafana", 3, t0); !ok {
		t.Error("another app's hold counted against gitea's")
	}
	// One session gave up: its recipient is free again.
	q.release("gitea", 1)
	if _, ok := q.hold("gitea", 3, t0); !ok {
		t.Error("a released hold stays taken")
	}
	// Sent at t0 (2) and t0+10m (1): full until the first leaves the window.
	q.commit("gitea", 2, t0)
	q.commit("gitea", 1, t0.Add(10*time.Minute))
	now := t0.Add(20 * time.Minute)
	if wait, ok := q.hold("gitea", 3, now); ok || wait != 40*time.Minute {
		t.Errorf("hold at the limit: ok=%v wait=%v, want refused for 40m", ok, wait)
	}
	// Two more than the limit were sent (as a restart counts them): the
	// wait is until enough have left.
	q.add("gitea", 2, t0.Add(5*time.Minute))
	if wait, ok := q.hold("gitea", 3, now); ok || wait != 45*time.Minute {
		t.Errorf("hold over the limit: ok=%v wait=%v, want refused for 45m", ok, wait)
	}
	if _, ok := q.hold("gitea", 3, t0.Add(70*time.Minute+time.Second)); !ok {
		t.Error("an hour later, the quota is still full")
	}
	if n := len(q.sent["gitea"]); n != 0 {
		t.Errorf("%d stamps older than an hour are kept", n)
	}
	q.release("gitea", 100)
	if q.held["gitea"] != 0 {
		t.Errorf("releasing more than held leaves %d", q.held["gitea"])
	}
}

func TestCRLF(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"no newline", "no newline"},
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\r\nb\nc", "a\r\nb\r\nc"},
		{"\n", "\r\n"},
		{"bare\rCR\n", "bare\rCR\r\n"},
	} {
		if got := string(crlf([]byte(tc.in))); got != tc.want {
			t.Errorf("crlf(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCheckRecipient(t *testing.T) {
	for _, tc := range []struct {
		addr, problem string
	}{
		{"owner@example.org", ""},
		{"first.last+tag@mail.example.co.uk", ""},
		{"owner@example.org.", "is not an address"},
		{"owner", "is not an address"},
		{"@example.org", "is not an address"},
		{"owner@", "is not an address"},
		{"owner@localhost", "not fully qualified"},
		{"a b@example.org", "characters"},
		{"owner@example.org\r\nRCPT TO:<x@y.z>", "characters"},
		{"<owner@example.org>", "characters"},
		{"a,b@example.org", "characters"},
		{strings.Repeat("a", 250) + "@example.org", "longer than 254"},
		{"owner@@example.org", "is not an address"},
	} {
		got := checkRecipient(tc.addr)
		if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
			t.Errorf("checkRecipient(%q) = %q, want %q", tc.addr, got, tc.problem)
		}
	}
}

func TestHeaderText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"certificate failure", "certificate failure"},
		{"line\r\nBcc: victim@example.org", "line Bcc: victim@example.org"},
		{"tab\tand\x00nul", "tab and nul"},
		{"  spaces   inside  ", "spaces inside"},
		{"Zertifikat für straße", mime.QEncoding.Encode("utf-8", "Zertifikat für straße")},
	} {
		if got := HeaderText(tc.in); got != tc.want {
			t.Errorf("HeaderText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Long text is cut at a character, never inside one.
	long := strings.Repeat("é", 150)
	dec, err := new(mime.WordDecoder).DecodeHeader(HeaderText(long))
	if err != nil || !utf8.ValidString(dec) || len(dec) > 200 || !strings.HasPrefix(long, dec) {
		t.Errorf("HeaderText of 300 bytes of é decodes to %q (%d bytes), %v", dec, len(dec), err)
	}
	if got := printable(strings.Repeat("ü", 40)); !utf8.ValidString(got) || len(got) > 64 {
		t.Errorf("printable cut inside a character: %q", got)
	}
	if got := printable("bob\r\nlevel=ERROR"); got != "bob??level=ERROR" {
		t.Errorf("printable kept a line break: %q", got)
	}
}

// TestCompose: an alert whose subject an attacker chose (a domain name,
// a user name) gets no header of the attacker's.
func TestCompose(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	data := Compose("moat@moat.test", []string{"owner@example.org"}, "cert failed for x.test\r\nBcc: victim@example.org\r\n\r\nforged body", "line one\nline two = \"quoted\"\n", now, "moat.test")
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Header.Get("Bcc"); v != "" {
		t.Errorf("the subject added a Bcc header: %q", v)
	}
	if got, want := m.Header.Get("Subject"), "cert failed for x.test Bcc: victim@example.org forged body"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	for h, want := range map[string]string{"From": "moat@moat.test", "To": "owner@example.org", "Auto-Submitted": "auto-generated", "Date": now.Format(time.RFC1123Z)} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	id := HeaderID(data)
	if !strings.HasPrefix(id, "<20261205100000.") || !strings.HasSuffix(id, "@moat.test>") || id != m.Header.Get("Message-Id") {
		t.Errorf("Message-ID %q (header %q)", id, m.Header.Get("Message-Id"))
	}
	body, _ := io.ReadAll(m.Body)
	if !bytes.Contains(body, []byte("line one\r\nline two =3D \"quoted\"\r\n")) {
		t.Errorf("body is not quoted-printable with CRLF: %q", body)
	}
	if bytes.Contains(data, []byte("\n\n")) || bytes.Count(data, []byte("\n")) != bytes.Count(data, []byte("\r\n")) {
		t.Errorf("a bare LF in %q", data)
	}
}

func TestLoginServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps [][]byte // client responses, the first possibly nil
		want  []string // challenges
	}{
		{"asked for both", [][]byte{nil, []byte("gitea"), []byte("secret")}, []string{"Username:", "Password:", ""}},
		{"initial response", [][]byte{[]byte("gitea"), []byte("secret")}, []string{"Password:", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var user, pass string
			l := &loginServer{done: func(u, p string) error { user, pass = u, p; return nil }}
			for i, resp := range tc.steps {
				ch, done, err := l.Next(resp)
				if err != nil {
					t.Fatal(err)
				}
				if string(ch) != tc.want[i] || done != (i == len(tc.steps)-1) {
					t.Errorf("step %d: challenge %q done %v", i, ch, done)
				}
			}
			if user != "gitea" || pass != "secret" {
				t.Errorf("logged in as %q with %q", user, pass)
			}
			if _, _, err := l.Next([]byte("more")); err == nil {
				t.Error("a response after the password was taken")
			}
		})
	}
	want := errors.New("wrong")
	l := &loginServer{done: func(string, string) error { return want }}
	l.Next([]byte("gitea"))
	if _, _, err := l.Next([]byte("bad")); err != want {
		t.Errorf("a failed login: %v", err)
	}
}

// memStore is a Store in memory.
type memStore struct {
	mu    sync.Mutex
	msgs  map[string]Message
	creds map[string]string
	keys  map[string][]byte
}

func newMemStore() *memStore {
	return &memStore{msgs: map[string]Message{}, creds: map[string]string{}, keys: map[string][]byte{}}
}

func (s *memStore) Enqueue(_ context.Context, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m.To = slices.Clone(m.To)
	s.msgs[m.ID] = m
	return nil
}

func (s *memStore) filter(keep func(Message) bool) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs {
		if keep(m) {
			m.Data = nil
			m.To = slices.Clone(m.To)
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Message) int { return a.Accepted.Compare(b.Accepted) })
	return out
}

func (s *memStore) Due(_ context.Context, now time.Time, limit int) ([]Message, error) {
	out := s.filter(func(m Message) bool { return m.State == Queued && !m.NextAttempt.After(now) })
	return out[:min(limit, len(out))], nil
}

func (s *memStore) Load(_ context.Context, id string) (Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[id]
	if !ok {
		return Message{}, ErrNotFound
	}
	m.To = slices.Clone(m.To)
	return m, nil
}

func (s *memStore) Save(_ context.Context, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.msgs[m.ID]
	if !ok {
		return ErrNotFound
	}
	m.Data = old.Data
	if m.State.Final() {
		m.Data = nil
	}
	m.To = slices.Clone(m.To)
	s.msgs[m.ID] = m
	return nil
}

func (s *memStore) Retry(_ context.Context, id string, at time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[id]
	if !ok || m.State != Queued {
		return false, nil
	}
	m.NextAttempt = at
	s.msgs[id] = m
	return true, nil
}

func (s *memStore) List(context.Context) ([]Message, error) {
	return s.filter(func(m Message) bool { return !m.State.Final() }), nil
}

func (s *memStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.msgs[id]; !ok || m.State != Queued {
		return ErrNotFound
	}
	delete(s.msgs, id)
	return nil
}

func (s *memStore) Sent(_ context.Context, since time.Time) ([]Message, error) {
	return s.filter(func(m Message) bool { return !m.Accepted.Before(since) }), nil
}

func (s *memStore) Forget(_ context.Context, before time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, m := range s.msgs {
		if m.State.Final() && m.Accepted.Before(before) {
			delete(s.msgs, id)
		}
	}
	return nil
}

func (s *memStore) Credential(_ context.Context, app string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds[app], nil
}

func (s *memStore) SetCredential(_ context.Context, app, hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds[app] = hash
	return nil
}

func (s *memStore) DeleteCredential(_ context.Context, app string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.creds, app)
	return nil
}

func (s *memStore) DKIMKeys(context.Context) (map[string][]byte, error) { return s.keys, nil }

func (s *memStore) SaveDKIMKeys(_ context.Context, keys map[string][]byte) error {
	for k, v := range keys {
		s.keys[k] = v
	}
	return nil
}

// scripted is a Transport that answers each recipient as told, and
// keeps what it was given.
type scripted struct {
	mu     sync.Mutex
	answer func(to string) Result
	sent   [][]string
	data   [][]byte
}

func (x *scripted) String() string { return "scripted" }

func (x *scripted) Send(_ context.Context, _ string, to []string, data []byte) []Result {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.sent = append(x.sent, slices.Clone(to))
	x.data = append(x.data, data)
	out := make([]Result, len(to))
	for i, a := range to {
		out[i] = x.answer(a)
	}
	return out
}

type recorded struct{ action, target, detail string }

// deliveryTest is a Delivery over a memStore with a clock the test sets.
type deliveryTest struct {
	store   *memStore
	d       *Delivery
	now     time.Time
	records []recorded
	log     bytes.Buffer
}

func newDeliveryTest(t *testing.T, x Transport) *deliveryTest {
	dt := &deliveryTest{store: newMemStore(), now: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)}
	dt.d = NewDelivery(DeliveryOptions{
		Spool: dt.store, Log: slog.New(slog.NewTextHandler(&dt.log, nil)),
		Record: func(_ context.Context, action, target, detail string) {
			dt.records = append(dt.records, recorded{action, target, detail})
		},
		Now: func() time.Time { return dt.now },
	})
	dt.d.Configure(x, "moat.test")
	return dt
}

func (dt *deliveryTest) queue(t *testing.T, to ...string) string {
	t.Helper()
	m := Message{ID: NewID(), App: "gitea", From: "gitea@moat.test", MessageID: "<m1@moat.test>", Accepted: dt.now, State: Queued, NextAttempt: dt.now, Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
	for _, a := range to {
		m.To = append(m.To, Recipient{Addr: a})
	}
	if err := dt.store.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func (dt *deliveryTest) load(t *testing.T, id string) Message {
	t.Helper()
	m, err := dt.store.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDeliveryOutcomes: what a delivery attempt makes of each answer.
func TestDeliveryOutcomes(t *testing.T) {
	temp := Result{Err: errors.New("451 4.3.0 try later")}
	perm := Result{Err: errors.New("550 5.1.1 no such user"), Permanent: true}
	answers := func(m map[string]Result) func(string) Result { return func(a string) Result { return m[a] } }
	ctx := context.Background()

	t.Run("delivered", func(t *testing.T) {
		x := &scripted{answer: answers(nil)}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org", "b@example.org")
		dt.d.attempt(ctx, Message{ID: id})
		m := dt.load(t, id)
		if m.State != Delivered || m.Attempts != 1 || m.Data != nil || m.LastError != "" {
			t.Errorf("state %s, %d attempts, %d bytes kept, error %q", m.State, m.Attempts, len(m.Data), m.LastError)
		}
		if len(dt.records) != 0 {
			t.Errorf("a delivery was recorded: %v", dt.records)
		}
	})

	t.Run("deferred, then only the rest is retried", func(t *testing.T) {
		x := &scripted{answer: answers(map[string]Result{"b@example.org": temp})}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org", "b@example.org")
		dt.d.attempt(ctx, Message{ID: id})
		m := dt.load(t, id)
		if m.State != Queued || !m.NextAttempt.Equal(dt.now.Add(time.Minute)) || !strings.Contains(m.LastError, "try later") {
			t.Errorf("state %s, next %v, error %q", m.State, m.NextAttempt, m.LastError)
		}
		if due, _ := dt.store.Due(ctx, dt.now, 10); len(due) != 0 {
			t.Error("a deferred message is due at once")
		}
		dt.now = dt.now.Add(time.Minute)
		dt.d.attempt(ctx, Message{ID: id})
		if got := x.sent[1]; !slices.Equal(got, []string{"b@example.org"}) {
			t.Errorf("the retry went to %v, want only the deferred recipient", got)
		}
		if m := dt.load(t, id); m.State != Queued || !m.NextAttempt.Equal(dt.now.Add(2*time.Minute)) || m.Attempts != 2 {
			t.Errorf("after the second failure: %s, next %v, %d attempts", m.State, m.NextAttempt, m.Attempts)
		}
	})

	t.Run("refused for good: bounced to the sender and recorded", func(t *testing.T) {
		x := &scripted{answer: answers(map[string]Result{"nobody@example.org": perm})}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org", "nobody@example.org")
		dt.d.attempt(ctx, Message{ID: id})
		if m := dt.load(t, id); m.State != Bounced || len(m.Failed()) != 1 || m.Failed()[0].Addr != "nobody@example.org" {
			t.Errorf("state %s, failed %v", m.State, m.Failed())
		}
		if len(dt.records) != 1 || dt.records[0].action != "mail.bounce" || dt.records[0].target != "gitea" || !strings.Contains(dt.records[0].detail, "no such user") {
			t.Errorf("activity: %+v", dt.records)
		}
		q, _ := dt.store.List(ctx)
		if len(q) != 1 || q[0].From != "" || q[0].To[0].Addr != "gitea@moat.test" {
			t.Fatalf("the bounce queued: %+v", q)
		}
		// The bounce itself cannot be delivered: it is not bounced again.
		x.answer = answers(map[string]Result{"gitea@moat.test": perm})
		dt.d.attempt(ctx, q[0])
		if q, _ := dt.store.List(ctx); len(q) != 0 || len(dt.records) != 2 {
			t.Errorf("a bounce of a bounce: queue %+v, %d records", q, len(dt.records))
		}
	})

	t.Run("a waiting message without its text: bounced, never sent empty", func(t *testing.T) {
		x := &scripted{answer: answers(nil)}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org")
		dt.store.mu.Lock()
		m := dt.store.msgs[id]
		m.Data = nil
		dt.store.msgs[id] = m
		dt.store.mu.Unlock()
		dt.d.attempt(ctx, Message{ID: id})
		if len(x.sent) != 0 {
			t.Errorf("sent to %v", x.sent)
		}
		if m := dt.load(t, id); m.State != Bounced || len(m.Failed()) != 1 {
			t.Errorf("state %s, failed %v", m.State, m.Failed())
		}
		if len(dt.records) != 1 || !strings.Contains(dt.records[0].detail, "lost the message's text") {
			t.Errorf("activity: %+v", dt.records)
		}
	})

	t.Run("given up after five days", func(t *testing.T) {
		x := &scripted{answer: answers(map[string]Result{"a@example.org": temp})}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org")
		dt.now = dt.now.Add(GiveUp - time.Minute)
		dt.d.attempt(ctx, Message{ID: id})
		if m := dt.load(t, id); m.State != Queued {
			t.Fatalf("before five days: %s", m.State)
		}
		dt.now = dt.now.Add(time.Minute)
		dt.d.attempt(ctx, Message{ID: id})
		m := dt.load(t, id)
		if m.State != Bounced || !strings.Contains(m.To[0].Error, "gave up after 5 days") {
			t.Errorf("after five days: %s, %q", m.State, m.To[0].Error)
		}
	})

	t.Run("stopping cuts the attempt short, not counted", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		x := &scripted{answer: func(string) Result { cancel(); return Result{Err: context.Canceled} }}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org")
		dt.d.attempt(cctx, Message{ID: id})
		if m := dt.load(t, id); m.State != Queued || m.Attempts != 0 {
			t.Errorf("after a stop: %s, %d attempts", m.State, m.Attempts)
		}
	})

	t.Run("dropped meanwhile", func(t *testing.T) {
		x := &scripted{answer: answers(nil)}
		dt := newDeliveryTest(t, x)
		id := dt.queue(t, "a@example.org")
		dt.store.Delete(ctx, id)
		dt.d.attempt(ctx, Message{ID: id})
		if len(x.sent) != 0 {
			t.Error("a dropped message was sent")
		}
	})
}

// TestDeliveryRecover: a message left Sending by a crash is sent again,
// and the log names it as one that may arrive twice.
func TestDeliveryRecover(t *testing.T) {
	x := &scripted{answer: func(string) Result { return Result{} }}
	dt := newDeliveryTest(t, x)
	id := dt.queue(t, "a@example.org")
	m := dt.load(t, id)
	m.State = Sending
	dt.store.Save(context.Background(), m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { dt.d.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, _ := dt.store.Load(context.Background(), id); m.State == Delivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recovered message was not delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if log := dt.log.String(); !strings.Contains(log, "may arrive twice") || !strings.Contains(log, id) || !strings.Contains(log, "m1@moat.test") {
		t.Errorf("the log does not name the message:\n%s", log)
	}
}

// TestCredentials: the right password, and only it, logs in; a rotation
// forgets the one remembered; many logins at once cost one argon2id
// check.
func TestCredentials(t *testing.T) {
	st := newMemStore()
	ctx := context.Background()
	h, err := secret.Hash("right")
	if err != nil {
		t.Fatal(err)
	}
	st.SetCredential(ctx, "gitea", h)
	c := newCredentials(st)
	for _, tc := range []struct {
		app, pass string
		exists    bool
		want      bool
	}{
		{"gitea", "right", true, true},
		{"gitea", "right", true, true}, // remembered
		{"gitea", "wrong", true, false},
		{"gitea", "right", false, false}, // the app was removed
		{"grafana", "right", true, false},
		{"gitea", "", true, false},
	} {
		if ok, err := c.check(ctx, tc.app, tc.pass, tc.exists); err != nil || ok != tc.want {
			t.Errorf("check(%s, %q, exists=%v) = %v, %v; want %v", tc.app, tc.pass, tc.exists, ok, err, tc.want)
		}
	}
	h2, _ := secret.Hash("new")
	st.SetCredential(ctx, "gitea", h2)
	if ok, _ := c.check(ctx, "gitea", "right", true); ok {
		t.Error("the old password still works after a rotation")
	}

	// 20 logins at once with a password not checked yet: one argon2id
	// check, the others wait for it and find the password known.
	c = newCredentials(st)
	var checks atomic.Int32
	c.verify = func(hash, password string) (bool, error) {
		checks.Add(1)
		return secret.Verify(hash, password)
	}
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 20 {
		wg.Go(func() {
			if good, err := c.check(ctx, "gitea", "new", true); good && err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 20 || checks.Load() != 1 {
		t.Errorf("20 logins at once: %d logged in, %d argon2id checks; want 20 and 1", ok.Load(), checks.Load())
	}
}
